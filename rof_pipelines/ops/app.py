"""The ops service (``rof ops serve``): one long-running ASGI app on ``system_setup.metrics_port``.

Starlette on uvicorn: both are well kept, widely deployed, and already installed and locked with
dagster-webserver (which is built on them), so the service adds no new dependency; an ASGI app lets
``/health`` await its probes concurrently with a timeout each, which prometheus-client's own
threaded HTTP server could not do without a hand-rolled router.

Routes:

- ``/metrics``: Prometheus text (``prometheus_client.generate_latest``) over one registry built once
  with the app: :data:`rof_pipelines.adapters.metrics.REGISTRY` plus the scrape-time collectors
  (by default ``rof_pipelines.ops.collectors.collectors(load_settings)`` when that module exists;
  its ``process_collector`` re-exposes REGISTRY with ``process="ops"``, and then REGISTRY is not
  forwarded a second time).
  Collection runs in a worker thread, so a slow collector never blocks ``/health``.
- ``/health``: every dependency, concurrently, each within a timeout (ops/health.py); 503 when a
  critical one is down.
- ``/health/live``: 200 while the process serves.
- ``/health/ready``: the critical probes only; 200 when they are all ok, else 503.

Configuration is loaded on every request through ``load_settings`` (hot reload, like the Dagster
resources); nothing holds a connection between requests. The server binds to loopback unless told
otherwise (``--host``).
"""

import contextlib
import importlib
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rof_pipelines.ops.health import DEFAULT_CRITICAL, ProbeFn, check_health, config_failure

COLLECTORS_MODULE = "rof_pipelines.ops.collectors"
DEFAULT_HOST = "127.0.0.1"


class _Forward(Collector):
    """Another registry's metrics, collected afresh at each scrape."""

    def __init__(self, registry: CollectorRegistry):
        self._registry = registry

    def collect(self) -> Iterator[Any]:
        yield from self._registry.collect()


def default_collectors(load_settings: Callable[[], Any]) -> list[Collector]:
    """The scrape-time collectors of ``rof_pipelines.ops.collectors`` when it is installed."""
    try:
        module = importlib.import_module(COLLECTORS_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != COLLECTORS_MODULE:
            raise
        return []
    return list(module.collectors(load_settings))


def _exposes(collector: Any, registry: CollectorRegistry) -> bool:
    """Whether ``collector`` already re-exposes ``registry`` (ops.collectors' ``process_collector``,
    a ``metrics.WithLabels`` adding ``process="ops"``): forwarding it again would repeat families."""
    return (
        getattr(collector, "registry", None) is registry or getattr(collector, "_registry", None) is registry
    )


def build_registry(collectors: Iterable[Collector]) -> CollectorRegistry:
    """The service's registry: the project's :data:`REGISTRY` (unless a collector already re-exposes
    it) plus ``collectors``. ``auto_describe`` is off so registering never runs a scrape-time
    collector (it may need a database)."""
    from rof_pipelines.adapters.metrics import REGISTRY

    collectors = list(collectors)
    registry = CollectorRegistry(auto_describe=False)
    if not any(_exposes(collector, REGISTRY) for collector in collectors):
        registry.register(_Forward(REGISTRY))
    for collector in collectors:
        registry.register(collector)
    return registry


def build_app(
    load_settings: Callable[[], Any],
    *,
    collectors: Sequence[Collector] | None = None,
    critical: Iterable[str] = DEFAULT_CRITICAL,
    timeout_s: float | None = None,
    probes: dict[str, ProbeFn] | None = None,
    extra_routes: Sequence[Route] = (),
) -> Starlette:
    """The ops app. ``collectors=None`` takes :func:`default_collectors`; ``critical`` names the
    dependencies whose failure makes ``/health`` and ``/health/ready`` answer 503; ``timeout_s``
    overrides the per-probe timeout (default: ``call_timeout`` capped at 3 s); ``probes`` replaces
    the probes (tests); ``extra_routes`` are mounted beside them (the ``/debug`` refusals of
    ``ops/profiling.py``)."""
    critical = frozenset(critical)
    registry = build_registry(default_collectors(load_settings) if collectors is None else collectors)
    started = time.time()

    async def health(request: Request) -> Response:
        try:
            settings = await run_in_threadpool(load_settings)
        except Exception as exc:  # a broken config.yaml: the service is not healthy
            status, body = config_failure(exc)
            return JSONResponse(body, status_code=status)
        status, body = await check_health(settings, critical=critical, timeout_s=timeout_s, probes=probes)
        return JSONResponse(body, status_code=status)

    async def ready(request: Request) -> Response:
        try:
            settings = await run_in_threadpool(load_settings)
        except Exception as exc:
            status, body = config_failure(exc)
            return JSONResponse(body, status_code=status)
        status, body = await check_health(
            settings, critical=critical, timeout_s=timeout_s, only=critical, probes=probes
        )
        return JSONResponse(
            {"status": "ready" if status == 200 else "not ready", "failing": body["failing"]},
            status_code=status,
        )

    async def live(request: Request) -> Response:
        return JSONResponse({"status": "alive", "uptime_s": round(time.time() - started, 1)})

    async def metrics(request: Request) -> Response:
        payload = await run_in_threadpool(generate_latest, registry)
        return Response(payload, media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/health", health),
            Route("/health/live", live),
            Route("/health/ready", ready),
            *extra_routes,
        ]
    )
    app.state.registry = registry
    app.state.critical = critical
    return app


def uvicorn_config(app: Any, host: str = DEFAULT_HOST, port: int = 8080, log_level: str = "info") -> Any:
    """uvicorn's config for the service: no logging config of its own (its loggers propagate to the
    root handler of adapters/logs.py), no lifespan, the app's own access lines at ``debug``."""
    import uvicorn

    level = "warning" if log_level == "warn" else log_level
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        log_level=level,
        access_log=level == "debug",
        lifespan="off",
        timeout_graceful_shutdown=5,
    )


def serve(app: Any, host: str = DEFAULT_HOST, port: int = 8080, log_level: str = "info") -> None:
    """Run the service until SIGINT/SIGTERM."""
    import uvicorn

    uvicorn.Server(uvicorn_config(app, host, port, log_level)).run()


@contextlib.contextmanager
def running(app: Any, host: str = DEFAULT_HOST, port: int = 0, log_level: str = "warning") -> Iterator[str]:
    """Serve ``app`` in a background thread on ``host:port`` (0: a free port) and yield its base URL
    (tests, benchmarks); stopped on exit."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, host, bound_port, log_level))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="rof-ops", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the ops service did not start on {host}:{bound_port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
