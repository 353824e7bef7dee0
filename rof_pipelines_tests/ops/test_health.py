"""The ops service's /health, /health/live, /health/ready and /metrics, served by uvicorn on a free
loopback port, against real dependencies: a PostgreSQL cluster of the test's own (stopped and
started again), the shared RabbitMQ, a Parquet quote store and a SQLite Dagster instance in temp
directories, and a TCP listener that accepts and never answers (a hung state store)."""

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rof_pipelines.ops.app import build_app, running
from rof_pipelines.ops.health import DEPENDENCIES
from rof_pipelines_tests.ops.servers import TcpPostgres, free_port, http_get, temp_root

pytestmark = [pytest.mark.postgres]

PLANTED = "Planted-Pa55/w@rd"  # a password with URL-special characters


def get_json(url: str, timeout: float = 15.0) -> tuple[int, dict[str, Any], float]:
    started = time.perf_counter()
    status, body = http_get(url, timeout=timeout)
    return status, json.loads(body), time.perf_counter() - started


@pytest.fixture(scope="module")
def cluster() -> Iterator[TcpPostgres]:
    with temp_root("rof-ops-health-") as root:
        server = TcpPostgres(root)
        try:
            yield server
        finally:
            server.close()


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def beat(daemons_age_s: float = 0.0) -> None:
    """Heartbeats of every required daemon, ``daemons_age_s`` old, written to the real instance."""
    from dagster import DagsterInstance
    from dagster._daemon.types import DaemonHeartbeat

    with DagsterInstance.get() as instance:
        for daemon_type in instance.get_required_daemon_types():
            instance.add_daemon_heartbeat(
                DaemonHeartbeat(time.time() - daemons_age_s, daemon_type, "test-daemon", None)
            )


def settings_for(make_settings, db_host: str, rabbitmq_url: str, **state: Any):  # type: ignore[no-untyped-def]
    overrides = {
        "state_storage": {
            "db_host": db_host,
            "db_user": "postgres",
            "db_name": "postgres",
            "db_password": PLANTED,
            **state,
        },
        "storage": {"rabbitmq": {"url": rabbitmq_url}},
    }
    settings = make_settings(overrides)
    return lambda: settings


def test_all_up_then_state_store_stopped_and_back(
    cluster: TcpPostgres, make_settings, rabbitmq_url: str, dagster_home: Path
) -> None:
    load = settings_for(make_settings, f"{cluster.host}:{cluster.port}", rabbitmq_url)
    beat()
    with running(build_app(load, collectors=[])) as url:
        status, body, _ = get_json(url + "/health")
        assert status == 200, body
        assert body["status"] == "ok" and body["failing"] == []
        assert list(body["dependencies"]) == list(DEPENDENCIES)
        for name, entry in body["dependencies"].items():
            assert entry["ok"] is True, (name, entry)
            assert entry["latency_ms"] >= 0 and entry["error"] is None
        deps = body["dependencies"]
        assert deps["state_store"]["critical"] and deps["dagster_instance"]["critical"]
        assert not deps["rabbitmq"]["critical"] and not deps["quote_store"]["critical"]
        assert deps["state_store"]["breaker"] == "closed" and deps["rabbitmq"]["breaker"] == "closed"
        assert all(d["ok"] for d in deps["dagster_daemon"]["daemons"].values())
        assert http_get(url + "/health/ready")[0] == 200

        cluster.stop()
        try:
            status, body, took = get_json(url + "/health")
            assert status == 503 and took < 5, (took, body)
            assert body["status"] == "down" and body["failing"] == ["state_store"]
            error = body["dependencies"]["state_store"]["error"]
            assert error and str(cluster.port) in error
            assert body["dependencies"]["dagster_instance"]["ok"]
            status, ready, _ = get_json(url + "/health/ready")
            assert status == 503 and ready["failing"] == ["state_store"]
            assert http_get(url + "/health/live")[0] == 200
        finally:
            cluster.start()
        status, body, _ = get_json(url + "/health")
        assert status == 200 and body["status"] == "ok", body
        assert http_get(url + "/health/ready")[0] == 200


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a hung server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


def test_hanging_state_store_does_not_hang_health(
    silent_listener: int, make_settings, rabbitmq_url: str, dagster_home: Path
) -> None:
    load = settings_for(make_settings, f"127.0.0.1:{silent_listener}", rabbitmq_url)
    with running(build_app(load, collectors=[])) as url:
        status, body, took = get_json(url + "/health")
        assert status == 503 and took < 5, (took, body)
        state = body["dependencies"]["state_store"]
        assert not state["ok"] and state["latency_ms"] <= body["timeout_s"] * 1000 + 500
        assert body["dependencies"]["rabbitmq"]["ok"]  # the others answered meanwhile
        # /health/live never waits for a dependency
        started = time.perf_counter()
        assert http_get(url + "/health/live")[0] == 200
        assert time.perf_counter() - started < 1


def test_non_critical_down_is_degraded_and_secrets_never_shown(
    cluster: TcpPostgres, make_settings, dagster_home: Path
) -> None:
    closed_port = free_port()
    broker = f"amqp://guest:{PLANTED.replace('/', '%2F').replace('@', '%40')}@127.0.0.1:{closed_port}/"
    load = settings_for(make_settings, f"{cluster.host}:{cluster.port}", broker)
    beat(daemons_age_s=600)  # a daemon that stopped ten minutes ago
    with running(build_app(load, collectors=[])) as url:
        status, raw = http_get(url + "/health")
        body = json.loads(raw)
        assert status == 200, body
        assert body["status"] == "degraded"
        assert body["failing"] == ["dagster_daemon", "rabbitmq"]
        assert body["dependencies"]["rabbitmq"]["error"]
        daemons = body["dependencies"]["dagster_daemon"]["daemons"]
        assert all(d["heartbeat_age_s"] >= 590 and not d["ok"] for d in daemons.values())
        assert "older than 60s" in body["dependencies"]["dagster_daemon"]["error"]
        text = raw.decode()
        assert "Planted" not in text and "Pa55" not in text
        assert http_get(url + "/health/ready")[0] == 200  # readiness follows the critical ones only

    # A deployment that counts RabbitMQ as critical gets 503 for the same outage.
    with running(build_app(load, collectors=[], critical={"state_store", "rabbitmq"})) as url:
        status, body, _ = get_json(url + "/health")
        assert status == 503 and body["failing"] == ["rabbitmq", "dagster_daemon"]
        assert http_get(url + "/health/ready")[0] == 503


def test_broken_config_and_missing_instance(make_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from rof_pipelines.errors import ConfigError

    def broken() -> Any:
        raise ConfigError("invalid configuration (config.yaml): state_storage.db_host: bad")

    with running(build_app(broken, collectors=[])) as url:
        status, body, _ = get_json(url + "/health")
        assert status == 503 and body["failing"] == ["config"] and "db_host" in body["error"]
        assert http_get(url + "/health/ready")[0] == 503
        assert http_get(url + "/health/live")[0] == 200

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    settings = make_settings()
    with running(build_app(lambda: settings, collectors=[])) as url:
        status, body, _ = get_json(url + "/health")
        assert status == 503 and "dagster_instance" in body["failing"]
        assert "DAGSTER_HOME" in body["dependencies"]["dagster_instance"]["error"]


def test_metrics_route_serves_registry_and_collectors(make_settings, dagster_home: Path) -> None:
    from prometheus_client.core import GaugeMetricFamily

    from rof_pipelines.adapters.breakers import breaker_for

    breaker_for("state_store")

    class One:
        def collect(self):  # type: ignore[no-untyped-def]
            yield GaugeMetricFamily("ga_test_probe", "a scrape-time family", value=7)

    settings = make_settings()
    with running(build_app(lambda: settings, collectors=[One()])) as url:
        status, payload = http_get(url + "/metrics")
        text = payload.decode()
        assert status == 200
        assert 'circuit_breaker_state{service="state_store"}' in text
        assert "ga_test_probe 7.0" in text
        assert text.count("# TYPE circuit_breaker_state ") == 1


def test_rof_ops_serve_command(tmp_path: Path) -> None:
    """`rof ops serve` as a process: loopback, the configured port, JSON logs, stops on SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    from rof_pipelines.settings import PROJECT_ROOT

    port = free_port()
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "METRICS_PORT": str(port),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        "ROF_DATA_DIR": str(tmp_path / "data"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "rof_pipelines.cli", "ops", "serve"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if http_get(f"http://127.0.0.1:{port}/health/live", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "rof ops serve did not answer within 60 s"
            time.sleep(0.2)
        status, payload = http_get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert status == 200 and b"circuit_breaker_state" in payload
        status, payload = http_get(f"http://127.0.0.1:{port}/debug/pprof/profile?seconds=1", timeout=10)
        assert status == 403 and b"profiling disabled" in payload  # off unless profiling_enabled
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM), err  # uvicorn re-raises the signal it caught
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(r["logger"].startswith("uvicorn") and f"127.0.0.1:{port}" in r["message"] for r in records), (
        err
    )
