"""A run's step figures pushed to a Prometheus Pushgateway through dagster-prometheus.

A run is a short-lived process: what its metric objects hold (this process's circuit breakers, the
GA's evaluations, the data loads) vanishes with it unless pushed. :class:`StepPusher` pushes
``metrics.REGISTRY`` and ``metrics.RUN_REGISTRY`` with dagster-prometheus's ``PrometheusResource``
(``system_setup.pushgateway_url``; empty: nothing is pushed) under ``job="rof"`` and a bounded
grouping key: ``process="run"``, ``pool`` (the run's ``rof/pool`` tag), ``market`` and ``asset``.
No run id: the series count is bounded by markets x assets, whatever the number of runs.

**PUT, not POST** (``push_to_gateway``, not ``pushadd_to_gateway``): every push carries the complete
state of one step process, so it replaces the whole group. When two runs of the same market and
asset overlap (a rerun beside a nightly run), their pushes alternate and the group always holds one
process's consistent snapshot, never a mix of two; a metric one of them lacks does not linger from
the other. The counters in a group are per process (they restart with every run): read them with
``max_over_time`` or as the last run's count, not with ``rate``.

Every market-day asset's step pushes once when it ends, succeeding or failing (:func:`pushed_step`,
applied by ``market_day_asset``); mid-step pushes (the GA, once per generation, :func:`push_active`)
are throttled to one per ``system_setup.pushgateway_interval`` seconds, so recording stays O(1) per
generation. A run killed with SIGKILL pushes nothing more: what must survive that is in the state
store (``worker_progress``) and the instance, read at scrape time (``ops/collectors.py``).

A push that fails (gateway down, slow) logs a warning at most once a minute, pauses mid-step pushes
for a minute (each could wait ``pushgateway_timeout``), and never fails the run.

**Sensor ticks** run in the code-location process (the daemon's), which neither serves /metrics nor
is a run: the message, inbox and config-reload counters they record (route ``sensor`` of
``adapters/metrics.py``) reach Prometheus because every tick of the queue sensors and of
``config_reload_sensor`` pushes ``metrics.REGISTRY`` when it ends (:func:`pushed_tick`, applied in
``defs/messaging.py: queue_sensor`` and ``defs/ops/sensors.py``) under ``job="rof"``,
``process="sensor"``, ``sensor=<the sensor's name>`` (a fixed set of names). Each sensor's group
holds that one process's whole registry, so the sensors' groups carry the same counters (a copy
each, pushed at different ticks): aggregate with ``max without (sensor)``, not ``sum``; each group's
``push_time_seconds`` tells when that sensor last ticked. A tick waits at most ``pushgateway_timeout`` for its push; after a
failure the sensor's ticks skip pushing for a minute, and a push never fails a tick.

Measured (15 generations x 24 genomes, 1 worker, a real gateway on loopback): recording costs about
2 us per generation; one push about 1.5 ms. Pushing after every generation of that small GA
(30 ms a generation) cost 6 % wall; with the default 10 s throttle the difference was within the
machine's noise (one push mid-run plus the final one).
"""

import functools
import inspect
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from rof_pipelines.adapters import metrics
from rof_pipelines.core.redaction import mask_url, scrub

log = logging.getLogger(__name__)

JOB = "rof"
NO_POOL = "none"
POOL_TAG = "rof/pool"
_WARN_EVERY_S = 60.0
FAILURE_BACKOFF_S = 60.0  # after a failed push, mid-step pushes pause this long (each may wait `timeout`)


class GroupPusher:
    """Pushes ``registries`` (this process's) under one grouping key with a PUT (replacing the group)."""

    def __init__(
        self,
        gateway: str,
        grouping_key: dict[str, str],
        *,
        registries: tuple[Any, ...] = (metrics.REGISTRY,),
        timeout: float = 2.0,
        min_interval: float = 10.0,
    ) -> None:
        from dagster import build_init_resource_context

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PrometheusResource is marked beta
            from dagster_prometheus import PrometheusResource

            self.resource = PrometheusResource(gateway=gateway, timeout=max(1, round(timeout)))
        self.resource.setup_for_execution(build_init_resource_context())
        for registry in registries:
            self.resource.registry.register(registry)
        self.gateway = gateway
        self.timeout = timeout
        self.grouping_key = dict(grouping_key)
        self.min_interval = min_interval
        self.pushes = 0
        self.failures = 0
        self._last_push = float("-inf")
        self._last_warning = float("-inf")
        self._retry_after = float("-inf")
        self._lock = threading.Lock()

    def push(self, *, force: bool = False) -> bool:
        """Push now (``force``) or if ``min_interval`` has passed since the last push and no failure
        paused pushing; True if pushed. Never raises."""
        now = time.monotonic()
        if not force and (now - self._last_push < self.min_interval or now < self._retry_after):
            return False
        with self._lock:
            self._last_push = now
            try:
                self.resource.push_to_gateway(job=JOB, grouping_key=self.grouping_key)
            except Exception as exc:
                self.failures += 1
                self._retry_after = now + FAILURE_BACKOFF_S  # a slow or dead gateway: pause for a while
                if now - self._last_warning >= _WARN_EVERY_S:
                    self._last_warning = now
                    log.warning(
                        "metrics push to %s failed (%s: %s); %s goes on without it",
                        mask_url(self.gateway),
                        type(exc).__name__,
                        scrub(str(exc), self.gateway),
                        "the sensor tick" if self.grouping_key.get("process") == "sensor" else "the run",
                    )
                return False
            self.pushes += 1
            return True

    def delete(self) -> None:
        """Remove this group from the gateway (tests; an operator retiring a market)."""
        self.resource.delete_from_gateway(job=JOB, grouping_key=self.grouping_key)


class StepPusher(GroupPusher):
    """Pushes this process's figures under one grouping key (one step of one market's run):
    ``process="run"``, ``pool``, ``market``, ``asset``; both registries."""

    def __init__(
        self,
        gateway: str,
        *,
        pool: str,
        market: str,
        asset: str,
        timeout: float = 2.0,
        min_interval: float = 10.0,
    ) -> None:
        super().__init__(
            gateway,
            {"process": "run", "pool": pool or NO_POOL, "market": market, "asset": asset},
            registries=(metrics.REGISTRY, metrics.RUN_REGISTRY),
            timeout=timeout,
            min_interval=min_interval,
        )


_pushers: dict[tuple[str, str, str, str], StepPusher] = {}
_pushers_lock = threading.Lock()


def pusher_for(system_setup: Any, *, pool: str, market: str, asset: str) -> StepPusher | None:
    """The process's pusher for a step (None when ``pushgateway_url`` is empty)."""
    url = (system_setup.pushgateway_url or "").strip()
    if not url:
        return None
    key = (url, pool or NO_POOL, market, asset)
    with _pushers_lock:
        found = _pushers.get(key)
        if found is None:
            found = StepPusher(
                url,
                pool=pool,
                market=market,
                asset=asset,
                timeout=system_setup.pushgateway_timeout,
                min_interval=system_setup.pushgateway_interval,
            )
            _pushers[key] = found
        found.min_interval = system_setup.pushgateway_interval
        return found


def step_pusher(context: Any, settings: Any, asset: str | None = None) -> StepPusher | None:
    """The pusher of a market-day asset's step: pool from the run's ``rof/pool`` tag, market from
    the partition, asset from the step's asset key (or ``asset``: an op inside a graph-backed asset
    has no key of its own). None when pushing is off (``settings`` a ``Settings`` or the settings
    resource) or the step has no run or market-day partition. Never raises."""
    try:
        if hasattr(settings, "load"):
            settings = settings.load()
        if not (settings.system_setup.pushgateway_url or "").strip():
            return None
        from rof_pipelines.partitions import market_and_day

        market, _day = market_and_day(context.partition_key)
        pool = context.run.tags.get(POOL_TAG, NO_POOL)
        asset = asset or context.asset_key.path[-1]
        return pusher_for(settings.system_setup, pool=pool, market=market.key, asset=asset)
    except Exception as exc:  # metrics never fail a run
        log.warning("metrics push off for this step (%s: %s)", type(exc).__name__, scrub(str(exc)))
        return None


_active: StepPusher | None = None


def push_active() -> bool:
    """A throttled push by the running step's pusher (the GA calls it every generation). Never raises."""
    pusher = _active
    return pusher.push() if pusher is not None else False


def push_step(context: Any, settings: Any) -> bool:
    """Push a step's figures now. Never raises."""
    pusher = step_pusher(context, settings)
    return pusher.push(force=True) if pusher is not None else False


def _begin(args: tuple[Any, ...], kwargs: dict[str, Any], asset: str | None) -> StepPusher | None:
    global _active
    context = args[0] if args else kwargs.get("context")
    _active = step_pusher(context, kwargs.get("settings"), asset)
    return _active


def _end(pusher: StepPusher | None) -> None:
    global _active
    if pusher is not None:
        pusher.push(force=True)
    _active = None


def pushed_step(fn: Callable[..., Any], asset: str | None = None) -> Callable[..., Any]:
    """``fn`` (a market-day asset body, or an op of one, pushing as ``asset``) pushing its step's
    figures when it ends, whether it succeeds or fails, and allowing throttled pushes while it runs
    (:func:`push_active`). Signature, name, docstring and generator-ness kept, so Dagster sees the
    same parameters. Applied in ``defs/market_day.py: market_day_asset`` and to the island GA's ops."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def step_generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            pusher = _begin(args, kwargs, asset)
            try:
                return (yield from fn(*args, **kwargs))
            finally:
                _end(pusher)

        return step_generator

    @functools.wraps(fn)
    def step(*args: Any, **kwargs: Any) -> Any:
        pusher = _begin(args, kwargs, asset)
        try:
            return fn(*args, **kwargs)
        finally:
            _end(pusher)

    return step


# --- sensor ticks -------------------------------------------------------------------------------------
_sensor_pushers: dict[tuple[str, str], GroupPusher] = {}
_sensor_off_logged_at = float("-inf")


def sensor_grouping_key(sensor_name: str) -> dict[str, str]:
    """A sensor's group: ``process="sensor"``, ``sensor`` its name (a fixed set: the definitions')."""
    return {"process": "sensor", "sensor": sensor_name}


def sensor_pusher(settings: Any, sensor_name: str) -> GroupPusher | None:
    """The code-location process's pusher for ``sensor_name``'s ticks (``settings`` a ``Settings`` or
    the settings resource); None when ``pushgateway_url`` is empty or the settings do not load.
    Never raises."""
    global _sensor_off_logged_at
    if settings is None:
        return None
    try:
        if hasattr(settings, "load"):
            settings = settings.load()
        system_setup = settings.system_setup
        url = (system_setup.pushgateway_url or "").strip()
        if not url:
            return None
        with _pushers_lock:
            found = _sensor_pushers.get((url, sensor_name))
            if found is None:
                found = GroupPusher(
                    url,
                    sensor_grouping_key(sensor_name),
                    registries=(metrics.REGISTRY,),
                    timeout=system_setup.pushgateway_timeout,
                    min_interval=0.0,  # every tick pushes, unless a failure paused pushing
                )
                _sensor_pushers[(url, sensor_name)] = found
            return found
    except Exception as exc:  # metrics never fail a tick (nor flood its log: once a minute)
        now = time.monotonic()
        if now - _sensor_off_logged_at < _WARN_EVERY_S:
            return None
        _sensor_off_logged_at = now
        log.warning(
            "metrics push off for sensor %s (%s: %s)", sensor_name, type(exc).__name__, scrub(str(exc))
        )
        return None


def push_tick(settings: Any, sensor_name: str) -> bool:
    """Push this process's registry (``metrics.REGISTRY``: the message, inbox, config-reload and
    breaker counters a sensor tick records) under the sensor's group; True if pushed. Waits at most
    ``pushgateway_timeout``; after a failed push, the sensor's ticks skip pushing for
    ``FAILURE_BACKOFF_S``. Never raises."""
    try:
        pusher = sensor_pusher(settings, sensor_name)
        return pusher.push() if pusher is not None else False
    except Exception:  # pragma: no cover - push() itself never raises
        return False


def pushed_tick(sensor_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A sensor's evaluation function pushing the process's registry when the tick ends, whatever
    it returns or raises (:func:`push_tick`, with the ``settings`` resource the sensor takes).
    Signature, name and annotations kept, so Dagster sees the same context and resources. Applied
    in ``defs/messaging.py: queue_sensor`` and to ``config_reload_sensor``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def tick_generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
                try:
                    return (yield from fn(*args, **kwargs))
                finally:
                    push_tick(kwargs.get("settings"), sensor_name)

            return tick_generator

        @functools.wraps(fn)
        def tick(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                push_tick(kwargs.get("settings"), sensor_name)

        return tick

    return decorate
