"""The profiling server of the ops service, on ``system_setup.pprof_port`` (off unless
``system_setup.profiling_enabled``; bound to ``system_setup.pprof_host``, loopback by default).

- ``GET /debug/pprof/profile?seconds=N&format=text|html|speedscope|json&mode=cpu|wall``: a timed
  profile of **every thread** of the service process. pyinstrument's own profiler samples only the
  thread that starts it, so this module samples ``sys._current_frames()`` itself every few
  milliseconds and weights each thread's stack by the CPU time that thread used since the last
  sample (``mode=cpu``, the default; Linux per-thread CPU clocks) or by wall time (``mode=wall``,
  idle threads included). The samples become a pyinstrument ``Session`` (one root frame per thread),
  rendered by pyinstrument's renderers: its text tree, HTML, speedscope JSON or session JSON.
- ``GET /debug/pprof/heap?seconds=N&top=K&format=text|json``: a tracemalloc snapshot diff over N
  seconds, the top K allocations by file:line (net bytes and blocks allocated in the window, still
  alive at its end). tracemalloc is started on demand and stopped after, unless something else had
  started it.

``N`` is bounded to 1..300 seconds; one profile of each kind runs at a time (a second request gets
409). When profiling is disabled the server is not even started (:func:`start_profiling_server`
returns ``None``), and the ops app's own ``/debug/...`` routes (:func:`ops_app_debug_routes`, on
``metrics_port``) answer 403 saying so (or where profiling is served when it is enabled).

Served by Starlette on uvicorn in a daemon thread, like the ops app: a profile request sleeps in
Starlette's thread pool while the event loop keeps answering, and the server stops cleanly with
``should_exit``. This module never imports ``defs``; ``defs/profiling.py`` is the per-run hook.
"""

import os
import socket
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from pyinstrument.renderers import ConsoleRenderer, HTMLRenderer, JSONRenderer, SpeedscopeRenderer
from pyinstrument.session import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from rof_pipelines.errors import ConfigError, InvalidRequest
from rof_pipelines.settings import Settings

MIN_SECONDS, MAX_SECONDS = 1.0, 300.0
MAX_TOP = 200
SAMPLE_INTERVAL = 0.005  # seconds between samples of every thread's stack
DISABLED_REASON = (
    "profiling disabled: set system_setup.profiling_enabled: true to serve /debug/pprof on "
    "system_setup.pprof_port"
)
CPU_FORMATS = ("text", "html", "speedscope", "json")
HEAP_FORMATS = ("text", "json")


# --- CPU: every thread's stack, sampled ---------------------------------------------------------


def _frame_info(frame: FrameType) -> str:
    """pyinstrument's frame-info string: ``function\\0file\\0first line`` + the current line."""
    code = frame.f_code
    return f"{code.co_qualname}\x00{code.co_filename}\x00{code.co_firstlineno}\x01l{frame.f_lineno}"


def _stack(frame: FrameType | None) -> list[str]:
    infos: list[str] = []
    while frame is not None:
        infos.append(_frame_info(frame))
        frame = frame.f_back
    infos.reverse()
    return infos


def _thread_cpu_clock(ident: int) -> Callable[[], float] | None:
    """The thread's CPU clock (Linux), or None where the platform has none."""
    try:
        clock = time.pthread_getcpuclockid(ident)
    except (AttributeError, OSError, OverflowError):
        return None
    return lambda: time.clock_gettime(clock)


def sample_threads(seconds: float, *, mode: str = "cpu", interval: float = SAMPLE_INTERVAL) -> Session:
    """Sample every thread of this process but the caller for ``seconds``; a pyinstrument Session
    whose stacks each start with a ``thread <name>`` frame. ``mode="cpu"`` weights a thread's stack
    by the CPU time it used since the previous sample (a thread blocked in I/O or a lock weighs
    nothing); ``mode="wall"`` by the wall time between samples. The tree's root is the process, its
    children the threads."""
    me = threading.get_ident()
    names = {t.ident: t.name for t in threading.enumerate()}
    clocks: dict[int, Callable[[], float] | None] = {}
    last_cpu: dict[int, float] = {}
    records: list[tuple[list[str], float]] = []
    use_cpu = mode == "cpu"
    process = f"rof ops service (pid {os.getpid()})\x00<process>\x000"
    started_wall, started_cpu = time.time(), time.process_time()
    deadline = time.monotonic() + seconds
    previous = time.monotonic()
    while True:
        time.sleep(interval)
        now = time.monotonic()
        wall_delta, previous = now - previous, now
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            weight = wall_delta
            if use_cpu:
                if ident not in clocks:
                    clocks[ident] = _thread_cpu_clock(ident)
                    names.setdefault(ident, _thread_name(ident))
                clock = clocks[ident]
                if clock is None:
                    continue
                try:
                    cpu = clock()
                except OSError:  # the thread ended between listing and reading its clock
                    continue
                before = last_cpu.get(ident)
                last_cpu[ident] = cpu
                if before is None:
                    continue  # the first reading only sets the baseline
                weight = cpu - before
                if weight <= 0:
                    continue
            name = names.get(ident) or _thread_name(ident)
            records.append(([process, f"thread {name}\x00<thread>\x000", *_stack(frame)], weight))
        if now >= deadline:
            break
    return Session(
        frame_records=records,  # type: ignore[arg-type]
        start_time=started_wall,
        duration=time.time() - started_wall,
        min_interval=interval,
        max_interval=interval,
        sample_count=len(records),
        start_call_stack=[process],
        target_description=f"rof ops service, all threads, {mode} time, {seconds:g} s",
        cpu_time=time.process_time() - started_cpu,
        sys_path=sys.path,
        sys_prefixes=Session.current_sys_prefixes(),
    )


def _thread_name(ident: int) -> str:
    for thread in threading.enumerate():
        if thread.ident == ident:
            return thread.name
    return f"thread-{ident}"


def render_session(session: Session, fmt: str) -> tuple[str, str]:
    """(body, media type) of the session in ``fmt``: text, html, speedscope or json."""
    if fmt == "text":
        return ConsoleRenderer(unicode=True, color=False, show_all=False).render(session), "text/plain"
    if fmt == "html":
        return HTMLRenderer().render(session), "text/html"
    if fmt == "speedscope":
        return SpeedscopeRenderer().render(session), "application/json"
    if fmt == "json":
        return JSONRenderer().render(session), "application/json"
    raise InvalidRequest(f"format must be one of {', '.join(CPU_FORMATS)}, not {fmt!r}")


# --- memory: a tracemalloc diff ------------------------------------------------------------------

_IGNORED = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
)


@dataclass(frozen=True)
class Allocation:
    location: str  # file:line
    size_diff: int  # bytes allocated in the window and still alive at its end (net)
    count_diff: int
    size: int  # bytes held by this line at the end

    def to_dict(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "size_diff": self.size_diff,
            "count_diff": self.count_diff,
            "size": self.size,
        }


def heap_diff(seconds: float, *, top: int = 25, frames: int = 1) -> tuple[list[Allocation], dict[str, Any]]:
    """The top ``top`` allocation sites by net bytes over ``seconds``, and a summary (peak, whether
    tracemalloc was already running). tracemalloc is started here if needed and stopped after."""
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start(frames)
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.take_snapshot().filter_traces(_IGNORED)
        time.sleep(seconds)
        after = tracemalloc.take_snapshot().filter_traces(_IGNORED)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        if started_here:
            tracemalloc.stop()
    stats = [s for s in after.compare_to(before, "lineno") if s.size_diff > 0]
    allocations = [
        Allocation(f"{s.traceback[0].filename}:{s.traceback[0].lineno}", s.size_diff, s.count_diff, s.size)
        for s in stats[:top]
    ]
    summary = {
        "seconds": seconds,
        "traced_bytes": current,
        "peak_bytes": peak,
        "tracemalloc_started_here": started_here,
    }
    return allocations, summary


def heap_text(allocations: list[Allocation], summary: dict[str, Any]) -> str:
    lines = [
        f"tracemalloc diff over {summary['seconds']:g} s: traced {summary['traced_bytes'] / 2**20:.2f} MiB, "
        f"peak {summary['peak_bytes'] / 2**20:.2f} MiB"
        + ("" if summary["tracemalloc_started_here"] else " (tracemalloc was already running)"),
        f"{'net KiB':>12} {'net blocks':>11} {'held KiB':>12}  location",
    ]
    for a in allocations:
        lines.append(f"{a.size_diff / 1024:>12.1f} {a.count_diff:>11d} {a.size / 1024:>12.1f}  {a.location}")
    return "\n".join(lines) + "\n"


# --- the app and its server ----------------------------------------------------------------------


def _seconds(request: Request, max_seconds: float) -> float:
    raw = request.query_params.get("seconds", "30")
    try:
        seconds = float(raw)
    except ValueError:
        raise InvalidRequest(f"seconds must be a number, not {raw!r}") from None
    if not MIN_SECONDS <= seconds <= max_seconds:
        raise InvalidRequest(f"seconds must be between {MIN_SECONDS:g} and {max_seconds:g}, not {raw}")
    return seconds


def _choice(request: Request, name: str, choices: tuple[str, ...], default: str) -> str:
    value = request.query_params.get(name, default)
    if value not in choices:
        raise InvalidRequest(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _refusing(reason: str) -> list[Route]:
    def refuse(request: Request) -> Response:
        return JSONResponse({"error": reason}, status_code=403)

    return [Route("/debug", refuse), Route("/debug/{rest:path}", refuse)]


def ops_app_debug_routes(settings: Settings) -> list[Route]:
    """For the ops app on ``metrics_port``: every ``/debug`` path answers 403 saying why there is no
    profile here: profiling is disabled, or it is served on ``pprof_host:pprof_port``."""
    setup = settings.system_setup
    if not setup.profiling_enabled:
        return _refusing(DISABLED_REASON)
    return _refusing(f"profiling is served on {setup.pprof_host}:{setup.pprof_port}/debug/pprof, not here")


def profiling_routes(*, enabled: bool, max_seconds: float = MAX_SECONDS) -> list[Route]:
    """The ``/debug/pprof/...`` routes. With ``enabled=False`` every ``/debug`` path answers 403
    with :data:`DISABLED_REASON`."""
    if not enabled:
        return _refusing(DISABLED_REASON)
    cpu_lock, heap_lock = threading.Lock(), threading.Lock()

    def guarded(lock: threading.Lock, what: str, work: Callable[[Request], Response]) -> Callable:
        def endpoint(request: Request) -> Response:  # sync: runs in Starlette's thread pool
            try:
                if not lock.acquire(blocking=False):
                    return PlainTextResponse(f"a {what} is already running; try again later\n", 409)
                try:
                    return work(request)
                finally:
                    lock.release()
            except InvalidRequest as exc:
                return PlainTextResponse(f"{exc}\n", 400)

        return endpoint

    def profile(request: Request) -> Response:
        fmt = _choice(request, "format", CPU_FORMATS, "text")
        mode = _choice(request, "mode", ("cpu", "wall"), "cpu")
        seconds = _seconds(request, max_seconds)
        body, media_type = render_session(sample_threads(seconds, mode=mode), fmt)
        return Response(body, media_type=media_type)

    def heap(request: Request) -> Response:
        fmt = _choice(request, "format", HEAP_FORMATS, "text")
        seconds = _seconds(request, max_seconds)
        raw_top = request.query_params.get("top", "25")
        if not raw_top.isdigit() or not 1 <= int(raw_top) <= MAX_TOP:
            raise InvalidRequest(f"top must be an integer between 1 and {MAX_TOP}, not {raw_top!r}")
        allocations, summary = heap_diff(seconds, top=int(raw_top))
        if fmt == "json":
            return JSONResponse({**summary, "allocations": [a.to_dict() for a in allocations]})
        return PlainTextResponse(heap_text(allocations, summary))

    def index(request: Request) -> Response:
        return PlainTextResponse(
            "/debug/pprof/profile?seconds=N&format=text|html|speedscope|json&mode=cpu|wall\n"
            f"/debug/pprof/heap?seconds=N&top=K&format=text|json\nN: {MIN_SECONDS:g}..{max_seconds:g}\n"
        )

    return [
        Route("/debug/pprof", index),
        Route("/debug/pprof/", index),
        Route("/debug/pprof/profile", guarded(cpu_lock, "CPU profile", profile)),
        Route("/debug/pprof/heap", guarded(heap_lock, "heap profile", heap)),
    ]


def build_profiling_app(*, enabled: bool = True, max_seconds: float = MAX_SECONDS) -> Starlette:
    """The profiling ASGI app (the disabled variant answers 403 on every /debug path)."""
    return Starlette(routes=profiling_routes(enabled=enabled, max_seconds=max_seconds))


class ProfilingServer:
    """The profiling app on uvicorn in a daemon thread, on a socket bound before it starts."""

    def __init__(self, host: str, port: int, app: Starlette | None = None) -> None:
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as exc:
            self._socket.close()
            raise ConfigError(
                f"system_setup.pprof_port: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ).with_context("profiling", "listen") from exc
        self._socket.listen(64)
        self.host, self.port = host, int(self._socket.getsockname()[1])
        config = uvicorn.Config(
            app or build_profiling_app(), log_level="warning", access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="rof-pprof", daemon=True
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> "ProfilingServer":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"the profiling server did not start on {self.url}").with_context(
                    "profiling", "start"
                )
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> "ProfilingServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_profiling_server(settings: Settings) -> ProfilingServer | None:
    """The profiling server on ``system_setup.pprof_host:pprof_port``, started; ``None`` (nothing
    listening) unless ``system_setup.profiling_enabled``. ConfigError when the port is taken."""
    setup = settings.system_setup
    if not setup.profiling_enabled:
        return None
    return ProfilingServer(setup.pprof_host, setup.pprof_port).start()


def describe(server: ProfilingServer | None) -> str:
    """One line for the service's start-up log."""
    if server is None:
        return DISABLED_REASON
    return f"profiling on {server.url}/debug/pprof (profile, heap)"
