"""``/health``: one probe per dependency, run concurrently, each bounded in time.

Dependencies (the names in the JSON):

=====================  ========  ==============================================================
name                   critical  probe
=====================  ========  ==============================================================
``state_store``        yes       connect (libpq ``connect_timeout``), ``SELECT 1``, close
``dagster_instance``   yes       ``DagsterInstance.get()`` (``$DAGSTER_HOME``), read one run, dispose
``quote_store``        no        PostgreSQL ``SELECT 1`` / ClickHouse HTTP ping / the store's
                                 ``markets()`` for the embedded stores (parquet, chDB, memory)
``rabbitmq``           no        AMQP connect, open a channel, close (the broker's version)
``dagster_daemon``     no        ``instance.get_daemon_heartbeats()``: the age of each required
                                 daemon's last heartbeat; stale after :data:`DAEMON_STALE_S`
=====================  ========  ==============================================================

Why these are critical: without the state store no step can record its result (every such step
fails, ARCHITECTURE.md), and without the Dagster instance nothing runs or is counted. RabbitMQ is
not: the message sensors skip while the broker is away, still serve committed inbox rows and resume
by themselves. The quote store is not either: a run that cannot read fails and is retried, while
the service itself (and every other market's bookkeeping) is fine; a deployment that thinks
otherwise passes ``critical=`` to :func:`check_health` / ``rof ops serve --critical``. The daemon's
staleness is reported, not critical: this service does not need it to answer.

Every probe opens its own connection and closes it (nothing is held between requests) and talks
to the dependency directly, not through the circuit breaker: a health probe must see a server come
back at once, not after the breaker's ``reset_timeout``, and must not open a circuit other calls in
this process share. The breaker's state (of this process) is reported beside each probe. Each probe
runs in its own daemon thread and is awaited at most ``timeout_s`` (the drivers get the same
timeout, so a thread ends soon after), so a hanging server costs one timeout, not the scrape.
"""

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from math import ceil
from typing import Any, TypeVar

from rof_pipelines.adapters.logs import settings_secrets
from rof_pipelines.core.redaction import clip, scrub

T = TypeVar("T")

DEFAULT_CRITICAL = frozenset({"state_store", "dagster_instance"})
DEPENDENCIES = ("state_store", "quote_store", "rabbitmq", "dagster_instance", "dagster_daemon")
TIMEOUT_CAP_S = 3.0  # a probe never waits longer, whatever system_setup.circuit_breaker.call_timeout says
DAEMON_STALE_S = 60.0
ERROR_LIMIT = 300

# The circuit breaker each dependency's calls go through elsewhere in the process (adapters/breakers.py).
_BREAKER_OF_STORE = {"postgres": "postgres", "clickhouse": "clickhouse"}


def check_timeout(settings: Any) -> float:
    """The per-probe timeout: the breaker's call timeout, capped at :data:`TIMEOUT_CAP_S`."""
    return min(settings.system_setup.circuit_breaker.call_timeout.total_seconds(), TIMEOUT_CAP_S)


@dataclass
class Probe:
    """What one probe found: ``detail`` is dependency-specific (versions, daemon ages, targets)."""

    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


ProbeFn = Callable[[Any, float], Probe]
GroupFn = Callable[[Any, float], dict[str, Probe]]


# --- the probes ---------------------------------------------------------------------------------------


def _pg_probe(conninfo: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(
        **conninfo,
        autocommit=True,
        connect_timeout=max(2, ceil(timeout_s)),  # libpq counts whole seconds, at least 2
        application_name="rof_pipelines.health",
        options=f"-c statement_timeout={max(1, int(timeout_s * 1000))}",
    ) as conn:
        version = conn.execute("SELECT current_setting('server_version')").fetchone()
    return {"server_version": version[0] if version else None}


def probe_state_store(settings: Any, timeout_s: float) -> Probe:
    config = settings.state_storage
    conninfo: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "user": config.db_user,
        "dbname": config.db_name,
    }
    password = config.db_password.get_secret_value()
    if password:
        conninfo["password"] = password
    detail = _pg_probe(conninfo, timeout_s)
    return Probe(True, {"target": config.describe(), **detail})


def probe_quote_store(settings: Any, timeout_s: float) -> Probe:
    name = settings.storage.quote_store
    storage = settings.storage
    if name == "postgres":
        detail = _pg_probe(storage.postgres.conninfo_kwargs(), timeout_s)
        return Probe(True, {"store": name, "target": storage.postgres.describe(), **detail})
    if name == "clickhouse" and not storage.clickhouse.dsn:
        import clickhouse_connect

        config = storage.clickhouse
        client = clickhouse_connect.get_client(
            host=config.host,
            port=config.http_port,
            username=config.db_user,
            password=config.db_password.get_secret_value(),
            secure=config.secure,
            connect_timeout=timeout_s,
            send_receive_timeout=timeout_s,
        )
        try:
            version = client.server_version
        finally:
            client.close()
        return Probe(True, {"store": name, "target": config.describe(), "server_version": version})
    # The embedded stores (parquet files, chDB in-process, memory): list what they hold.
    from rof_pipelines.adapters.quote_stores import open_quote_store

    with open_quote_store(settings) as store:
        markets = len(store.markets())
        target = store.describe()
    return Probe(True, {"store": name, "target": target, "markets": markets})


def probe_rabbitmq(settings: Any, timeout_s: float) -> Probe:
    import pika

    config = settings.storage.rabbitmq
    params = pika.URLParameters(config.url.get_secret_value())
    params.socket_timeout = timeout_s
    params.stack_timeout = timeout_s
    params.blocked_connection_timeout = timeout_s
    params.connection_attempts = 1
    params.retry_delay = 0
    params.client_properties = {"connection_name": "rof_pipelines health"}
    connection = pika.BlockingConnection(params)
    try:
        connection.channel()
        props = connection._impl.server_properties or {}
        version = props.get("version", b"?")
        version = version.decode() if isinstance(version, bytes) else str(version)
    finally:
        if connection.is_open:
            connection.close()
    return Probe(True, {"target": config.describe(), "server_version": version})


def _dagster_instance() -> Any:
    from dagster import DagsterInstance

    if not os.environ.get("DAGSTER_HOME"):
        raise RuntimeError("DAGSTER_HOME is not set: no Dagster instance to read")
    return DagsterInstance.get()


def _daemon_probe(instance: Any) -> Probe:
    now = time.time()
    required = list(instance.get_required_daemon_types())
    beats = instance.get_daemon_heartbeats()
    daemons: dict[str, Any] = {}
    for daemon_type in sorted(set(required) | set(beats)):
        beat = beats.get(daemon_type)
        age = None if beat is None else round(max(0.0, now - beat.timestamp), 1)
        daemons[daemon_type] = {
            "heartbeat_age_s": age,
            "ok": age is not None and age <= DAEMON_STALE_S,
            "required": daemon_type in required,
        }
    bad = [name for name, entry in daemons.items() if entry["required"] and not entry["ok"]]
    error = None
    if bad:
        missing = [name for name in bad if daemons[name]["heartbeat_age_s"] is None]
        stale = [name for name in bad if name not in missing]
        parts = ([f"no heartbeat from {', '.join(missing)}"] if missing else []) + (
            [f"heartbeat older than {DAEMON_STALE_S:.0f}s from {', '.join(stale)}"] if stale else []
        )
        error = "; ".join(parts)
    return Probe(not bad, {"stale_after_s": DAEMON_STALE_S, "daemons": daemons}, error)


def probe_dagster(settings: Any, timeout_s: float) -> dict[str, Probe]:
    """The instance and its daemons' heartbeats, from one ``DagsterInstance.get()`` (two instances
    opened at once on a fresh SQLite home would race to create its tables)."""
    with _dagster_instance() as instance:
        instance.get_run_records(limit=1)
        storage = type(instance.run_storage).__name__
        found = {
            "dagster_instance": Probe(
                True, {"dagster_home": os.environ.get("DAGSTER_HOME"), "run_storage": storage}
            )
        }
        try:
            found["dagster_daemon"] = _daemon_probe(instance)
        except Exception as exc:
            found["dagster_daemon"] = Probe(False, error=_exc_text(exc))
    return found


def _exc_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc) or repr(exc)}"


def _single(name: str, fn: ProbeFn) -> GroupFn:
    return lambda settings, timeout_s: {name: fn(settings, timeout_s)}


# Each entry probes the dependencies it names in one go; they run concurrently.
PROBE_GROUPS: dict[tuple[str, ...], GroupFn] = {
    ("state_store",): _single("state_store", probe_state_store),
    ("quote_store",): _single("quote_store", probe_quote_store),
    ("rabbitmq",): _single("rabbitmq", probe_rabbitmq),
    ("dagster_instance", "dagster_daemon"): probe_dagster,
}


def breaker_name(dependency: str, settings: Any) -> str | None:
    """The circuit breaker the project's calls to ``dependency`` go through, if any."""
    if dependency in ("state_store", "rabbitmq"):
        return dependency
    if dependency == "quote_store":
        store = settings.storage.quote_store
        if store == "clickhouse" and settings.storage.clickhouse.dsn:
            return "clickhouse"
        return _BREAKER_OF_STORE.get(store)
    return None


def breaker_state(dependency: str, settings: Any) -> str | None:
    name = breaker_name(dependency, settings)
    if name is None:
        return None
    from rof_pipelines.adapters.breakers import breaker_for

    return str(breaker_for(name, settings.system_setup.circuit_breaker).current_state)


# --- running them ------------------------------------------------------------------------------------


async def _in_thread(fn: Callable[[], T], timeout_s: float) -> T:
    """``fn()`` in a daemon thread of its own, awaited at most ``timeout_s``: a hung driver keeps its
    thread (until the driver's own timeout) but never the caller, nor a shared pool's worker."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: Any, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def target() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (fn(), None)
        except BaseException as exc:  # reported as the probe's error
            outcome = (None, exc)
        # The loop may be gone by now (a hung probe outliving the server): nobody is waiting then.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, *outcome)

    threading.Thread(target=target, name="rof-health-probe", daemon=True).start()
    return await asyncio.wait_for(future, timeout_s)


async def _run_group(
    names: tuple[str, ...], fn: GroupFn, settings: Any, timeout_s: float, secrets: list[str]
) -> dict[str, dict[str, Any]]:
    started = time.perf_counter()
    try:
        probes = await _in_thread(lambda: fn(settings, timeout_s), timeout_s)
    except TimeoutError:
        probes = dict.fromkeys(names, Probe(False, error=f"no answer within {timeout_s:g}s"))
    except Exception as exc:
        probes = dict.fromkeys(names, Probe(False, error=_exc_text(exc)))
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    entries = {}
    for name in names:
        probe = probes.get(name) or Probe(False, error="the probe returned nothing")
        try:
            breaker = breaker_state(name, settings)
        except Exception:  # the breaker's state is a detail, not the probe
            breaker = None
        error = None
        if probe.error is not None:
            error = clip(scrub(" ".join(probe.error.split()), *secrets), ERROR_LIMIT)
        entries[name] = {
            "ok": probe.ok,
            "latency_ms": latency_ms,
            "breaker": breaker,
            "error": error,
            **probe.detail,
        }
    return entries


async def check_health(
    settings: Any,
    *,
    critical: Iterable[str] = DEFAULT_CRITICAL,
    timeout_s: float | None = None,
    only: Iterable[str] | None = None,
    probes: Mapping[str, ProbeFn] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Run the probes concurrently; returns (HTTP status, body). 503 when a critical dependency is
    not ok; ``status`` is ``ok``, ``degraded`` (a non-critical one is not) or ``down``. ``only``
    limits the probes to those dependencies (``/health/ready``); ``probes`` replaces them (tests)."""
    started = time.perf_counter()
    groups = PROBE_GROUPS if probes is None else {(name,): _single(name, fn) for name, fn in probes.items()}
    wanted = None if only is None else set(only)
    selected = {
        tuple(n for n in names if wanted is None or n in wanted): fn
        for names, fn in groups.items()
        if wanted is None or wanted & set(names)
    }
    critical = set(critical)
    timeout = check_timeout(settings) if timeout_s is None else timeout_s
    secrets = settings_secrets(settings)
    results = await asyncio.gather(
        *(_run_group(names, fn, settings, timeout, secrets) for names, fn in selected.items())
    )
    found = {name: entry for result in results for name, entry in result.items()}
    order = [name for name in DEPENDENCIES if name in found] + sorted(set(found) - set(DEPENDENCIES))
    dependencies = {name: {"critical": name in critical, **found[name]} for name in order}
    down = sorted(n for n, r in dependencies.items() if r["critical"] and not r["ok"])
    degraded = sorted(n for n, r in dependencies.items() if not r["critical"] and not r["ok"])
    status = "down" if down else "degraded" if degraded else "ok"
    body = {
        "status": status,
        "failing": down + degraded,
        "checked_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        "timeout_s": timeout,
        "dependencies": dependencies,
    }
    return (503 if down else 200), body


def config_failure(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The answer when the configuration itself does not load (ConfigError texts are scrubbed)."""
    return 503, {
        "status": "down",
        "failing": ["config"],
        "checked_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "error": clip(" ".join(str(exc).split()), ERROR_LIMIT),
        "dependencies": {},
    }
