"""``rof bench sensor``: delay from publishing a `tasks` message to its run request, end to end.

Runs the real ``dagster-daemon`` on a throwaway instance (SQLite) whose queued run coordinator
launches nothing (max_concurrent_runs 0), so every run request stays a QUEUED run to inspect. The
state store is a throwaway PostgreSQL database, the broker the real RabbitMQ with a private queue
prefix. Delay = run creation time - publish time, per message.
"""

import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pika
import psycopg
import yaml
from psycopg import sql

from rof_pipelines.adapters.messages import build_message
from rof_pipelines.adapters.rabbitmq import RabbitMQ
from rof_pipelines.settings import PROJECT_ROOT, load_settings

ADMIN_DSN = os.environ.get("ROF_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBITMQ_URL = os.environ.get("ROF_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
INSTANCE_YAML = """\
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 0
telemetry:
  enabled: false
"""


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


class DaemonHarness:
    """A dagster-daemon with this project's definitions, a private state store DB and queue prefix."""

    def __init__(
        self,
        sensor_interval: int = 5,
        queue_size: int = 100_000,
        max_messages_per_tick: int = 200,
        config_overrides: dict[str, Any] | None = None,
    ):
        self.prefix = f"rof_bench_{secrets.token_hex(4)}"
        self.database = f"rof_bench_{secrets.token_hex(4)}"
        self.dir = Path(tempfile.mkdtemp(prefix="rof-sensor-bench-"))
        self.home = self.dir / "dagster_home"
        self.home.mkdir()
        (self.home / "dagster.yaml").write_text(INSTANCE_YAML)
        admin = psycopg.conninfo.conninfo_to_dict(ADMIN_DSN)
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        pool = {"max_workers": 12, "queue_size": queue_size, "task_timeout": "1200s"}
        config = {
            "storage": {
                "data_dir": str(self.dir / "data"),
                "markets": [],
                "rabbitmq": {
                    "url": RABBITMQ_URL,
                    "queue_prefix": self.prefix,
                    "sensor_interval_seconds": sensor_interval,
                },
            },
            "state_storage": {
                "db_host": f"{admin.get('host', '127.0.0.1')}:{admin.get('port', 5432)}",
                "db_user": admin.get("user", "postgres"),
                "db_password": admin.get("password", ""),
                "db_name": self.database,
                "schema": "rof_state",
            },
            "system_setup": {"worker_pool": {"ab_optimizer": pool, "task_worker": pool}},
        }
        _merge(config, config_overrides or {})
        self.config_path = self.dir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.settings = load_settings(self.config_path, environ={})
        self.rabbit = RabbitMQ(self.settings.storage.rabbitmq, None, self.prefix)
        self.rabbit.declare_topology()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "DAGSTER_HOME": str(self.home), "ROF_CONFIG": str(self.config_path)}
        log = open(self.dir / "daemon.log", "ab")  # noqa: SIM115 - lives as long as the daemon
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster-daemon"),
                "run",
                "-w",
                str(PROJECT_ROOT / "workspace.yaml"),
            ],
            env=env,
            cwd=self.dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the daemon and everything it started (its own process group)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def runs(self) -> list[tuple[str, float]]:
        """(message id, creation time in epoch seconds) of every run the sensors requested."""
        from dagster import DagsterInstance

        instance = DagsterInstance.from_config(str(self.home))
        try:
            return [
                (record.dagster_run.tags["rof/message_id"], record.create_timestamp.timestamp())
                for record in instance.get_run_records()
                if "rof/message_id" in record.dagster_run.tags
            ]
        finally:
            instance.dispose()

    def first_run_times(self) -> dict[str, float]:
        times: dict[str, float] = {}
        for message_id, created in sorted(self.runs(), key=lambda item: item[1]):
            times.setdefault(message_id, created)
        return times

    def close(self) -> None:
        self.kill()
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        channel = connection.channel()
        for queue in self.rabbit.topology.all_queues:
            channel.queue_delete(queue)
        for exchange in (self.rabbit.topology.exchange, self.rabbit.topology.dead_letter_exchange):
            channel.exchange_delete(exchange)
        connection.close()
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.database))
            )


def wait_for(predicate, timeout: float, poll: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False


def bench_sensor(
    messages: int = 20, spacing_seconds: float = 1.5, sensor_interval: int = 5
) -> dict[str, Any]:
    harness = DaemonHarness(sensor_interval=sensor_interval)
    try:
        harness.start()
        # Let the daemon load the code location and run a first tick before timing anything.
        warmup = build_message("task", market="bench:WARMUP", date="2026-01-01")
        harness.rabbit.publish(warmup)
        if not wait_for(lambda: warmup.message_id in harness.first_run_times(), timeout=180):
            raise RuntimeError(f"the daemon never requested a run; see {harness.dir / 'daemon.log'}")
        published: dict[str, float] = {}
        for i in range(messages):
            message = build_message("task", market=f"bench:PAIR{i % 3}", date="2026-01-02")
            published[message.message_id] = time.time()
            harness.rabbit.publish(message)
            time.sleep(spacing_seconds)
        wait_for(lambda: set(published) <= set(harness.first_run_times()), timeout=120)
        runs = harness.runs()
        first = harness.first_run_times()
        delays = sorted(first[mid] - sent for mid, sent in published.items() if mid in first)
        quantiles = (
            statistics.quantiles(delays, n=20, method="inclusive") if len(delays) >= 2 else delays * 19
        )
        return {
            "bench": "sensor",
            "messages": messages,
            "requested": len(delays),
            "runs_total": len(runs),  # includes the warm-up message's run
            "distinct_messages_with_runs": len({message_id for message_id, _ in runs}),
            "sensor_interval_seconds": sensor_interval,
            "p50_seconds": round(statistics.median(delays), 3) if delays else None,
            "p95_seconds": round(quantiles[18], 3) if delays else None,
            "max_seconds": round(delays[-1], 3) if delays else None,
        }
    finally:
        harness.close()
