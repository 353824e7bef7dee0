"""The profiling server (ops/profiling.py) on a real uvicorn on a free loopback port: off unless
enabled (nothing listening), the ops app's /debug paths say "profiling disabled", a CPU profile of the
process names a function a thread keeps busy, and the heap diff shows an allocation made meanwhile."""

import json
import socket
import threading
import time
import tracemalloc
import urllib.error
import urllib.request

import pytest
from starlette.applications import Starlette

from rof_pipelines.errors import ConfigError
from rof_pipelines.ops.profiling import (
    DISABLED_REASON,
    ProfilingServer,
    build_profiling_app,
    ops_app_debug_routes,
    start_profiling_server,
)
from rof_pipelines_tests.ops.servers import free_port


def get(url: str, timeout: float = 30.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def server():
    with ProfilingServer("127.0.0.1", 0).start() as running:
        yield running


def test_disabled_by_default_nothing_listens(make_settings):
    port = free_port()
    settings = make_settings({"system_setup": {"pprof_port": port}})
    assert settings.system_setup.profiling_enabled is False
    assert settings.system_setup.pprof_host == "127.0.0.1"
    assert start_profiling_server(settings) is None
    assert not listening(port)


def test_enabled_listens_on_loopback_and_stops(make_settings):
    port = free_port()
    settings = make_settings({"system_setup": {"pprof_port": port, "profiling_enabled": True}})
    running = start_profiling_server(settings)
    assert running is not None
    try:
        assert running.url == f"http://127.0.0.1:{port}"
        status, body = get(f"{running.url}/debug/pprof")
        assert status == 200 and "/debug/pprof/profile?seconds=N" in body
        # A second server on the same port is refused with the key path.
        with pytest.raises(ConfigError, match=f"system_setup.pprof_port: cannot listen on 127.0.0.1:{port}"):
            start_profiling_server(settings)
    finally:
        running.stop()
    assert not listening(port)


def test_the_running_service_debug_paths_say_profiling_disabled(make_settings):
    """The ops app on metrics_port (here: its /debug routes on a Starlette app of their own)."""
    settings = make_settings()
    app = Starlette(routes=ops_app_debug_routes(settings))
    with ProfilingServer("127.0.0.1", 0, app).start() as service:
        for path in ("/debug/pprof/profile?seconds=1", "/debug/pprof/heap", "/debug"):
            status, body = get(f"{service.url}{path}")
            assert status == 403 and json.loads(body) == {"error": DISABLED_REASON}
    assert DISABLED_REASON.startswith("profiling disabled")
    with ProfilingServer("127.0.0.1", 0, build_profiling_app(enabled=False)).start() as disabled:
        assert get(f"{disabled.url}/debug/pprof/heap")[0] == 403

    enabled = make_settings({"system_setup": {"profiling_enabled": True, "pprof_port": 9555}})
    app = Starlette(routes=ops_app_debug_routes(enabled))
    with ProfilingServer("127.0.0.1", 0, app).start() as service:
        status, body = get(f"{service.url}/debug/pprof/profile")
        assert status == 403 and "served on 127.0.0.1:9555/debug/pprof" in body


def test_seconds_and_formats_are_bounded(server):
    for query, reason in (
        ("seconds=0", "between 1 and 300"),
        ("seconds=301", "between 1 and 300"),
        ("seconds=abc", "must be a number"),
        ("seconds=1&format=pdf", "format must be one of"),
        ("seconds=1&mode=gpu", "mode must be one of"),
    ):
        status, body = get(f"{server.url}/debug/pprof/profile?{query}")
        assert status == 400 and reason in body, (query, body)
    status, body = get(f"{server.url}/debug/pprof/heap?seconds=1&top=0")
    assert status == 400 and "top must be" in body


def keep_busy_in_profiled_thread(stop: threading.Event) -> int:
    """The function the CPU profile must name: pure Python work on its own thread."""
    total = 0
    while not stop.is_set():
        for i in range(10_000):
            total += i * i % 7
    return total


def test_a_cpu_profile_names_the_function_a_thread_keeps_busy(server):
    stop = threading.Event()
    busy = threading.Thread(target=keep_busy_in_profiled_thread, args=(stop,), name="busy-worker")
    busy.start()
    try:
        status, text = get(f"{server.url}/debug/pprof/profile?seconds=1")
        status_sc, speedscope = get(f"{server.url}/debug/pprof/profile?seconds=1&format=speedscope")
    finally:
        stop.set()
        busy.join()
    assert status == 200
    assert "keep_busy_in_profiled_thread" in text and "thread busy-worker" in text
    assert status_sc == 200
    frames = json.loads(speedscope)["shared"]["frames"]
    assert any(frame["name"] == "keep_busy_in_profiled_thread" for frame in frames)


def test_a_second_profile_at_the_same_time_is_refused(server):
    results: list[tuple[int, str]] = []
    first = threading.Thread(
        target=lambda: results.append(get(f"{server.url}/debug/pprof/profile?seconds=2"))
    )
    first.start()
    time.sleep(0.5)
    status, body = get(f"{server.url}/debug/pprof/profile?seconds=1")
    first.join()
    assert status == 409 and "already running" in body
    assert results[0][0] == 200


HOARD: list[bytearray] = []


def allocate_for_the_heap_profile() -> None:
    HOARD.extend(bytearray(4096) for _ in range(4000))  # ~16 MiB, held until the test clears it


def test_the_heap_diff_shows_an_allocation_made_meanwhile(server):
    assert not tracemalloc.is_tracing()
    results: list[tuple[int, str]] = []
    request = threading.Thread(
        target=lambda: results.append(get(f"{server.url}/debug/pprof/heap?seconds=2&format=json"))
    )
    request.start()
    deadline = time.monotonic() + 10
    while not tracemalloc.is_tracing() and time.monotonic() < deadline:  # started on demand
        time.sleep(0.01)
    allocate_for_the_heap_profile()
    request.join()
    try:
        status, body = results[0]
        assert status == 200, body
        report = json.loads(body)
        top = report["allocations"][0]
        assert top["location"].endswith("test_profiling.py:" + str(allocation_line()))
        assert top["size_diff"] > 15 * 2**20 and report["tracemalloc_started_here"] is True
        assert not tracemalloc.is_tracing()  # stopped after
        status, text = get(f"{server.url}/debug/pprof/heap?seconds=1")
        assert status == 200 and "tracemalloc diff over 1 s" in text
    finally:
        HOARD.clear()


def allocation_line() -> int:
    import inspect

    source, first = inspect.getsourcelines(allocate_for_the_heap_profile)
    return first + next(i for i, line in enumerate(source) if "HOARD.extend" in line)
