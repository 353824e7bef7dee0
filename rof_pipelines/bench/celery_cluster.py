"""A local dagster-celery cluster: `rof workers start` processes on a RabbitMQ, a Dagster instance,
quote and state stores in PostgreSQL databases, each config's frames in its own directory.

Runs are launched as a run worker would launch them (``dagster job execute`` / ``dagster asset
materialize`` against ``rof_pipelines.definitions``), so every step goes through the real executor,
broker and workers. Used by the two-worker tests and by ``rof bench scale``. The queues are the
production names: do not point two clusters at one RabbitMQ at once.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from rof_pipelines.bench.backfill import instance_postgres_db
from rof_pipelines.demo import DEMO_BARS, DEMO_CHANGES, using_config
from rof_pipelines.settings import deep_merge

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
# The engine event dagster-celery logs when a worker starts a step, naming the worker.
WORKER_EVENT = "Celery worker"
POOL_ARGS = ("--pool", "task_worker", "--pool", "ab_optimizer")


class Cluster:
    """The shared instance and quote store, a config file per state store and frames directory, and
    the worker processes (each the leader of its own process group, so a kill takes its pool too)."""

    def __init__(
        self,
        root: Path,
        admin_dsn: str,
        database: str,
        instance_db: str,
        *,
        markets: Sequence[str],
        rabbitmq_url: str,
        changes: Mapping[str, Any] | None = None,
    ) -> None:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(admin_dsn)
        self.db = {
            "db_host": f"{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}",
            "db_user": info.get("user", "postgres"),
            "db_name": database,
            "db_password": "",
        }
        self.root = root
        self.markets = list(markets)
        self.rabbitmq_url = rabbitmq_url
        self.changes = dict(changes or {})
        self.home = root / "dagster_home"
        self.home.mkdir(parents=True)
        postgres_db = instance_postgres_db(admin_dsn, instance_db)
        (self.home / "dagster.yaml").write_text(
            yaml.safe_dump(
                {"storage": {"postgres": {"postgres_db": postgres_db}}, "telemetry": {"enabled": False}}
            )
        )
        self.workers: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def config(self, name: str, executor: str) -> Path:
        """A config file with its own state-store schema and frames directory (``root/name``)."""
        changes = {
            "ab_tests": {
                "meta_learning": {"enabled": False},  # no seeding across partitions: order-free results
                "transfer_learning": {"enabled": False},
                "experiment": {"ga": {"population_size": 8, "generations": 2, "min_population": 4}},
            },
            "storage": {
                "quote_store": "postgres",
                "postgres": self.db,
                "data_dir": str(self.root / name),
                "markets": self.markets,
                "market_overrides": {market: DEMO_BARS for market in self.markets},
                "rabbitmq": {"url": self.rabbitmq_url},
            },
            "state_storage": {**self.db, "schema": f"rof_state_{name}", "auto_migrate": True},
            "system_setup": {"executor": executor, "log_level": "warning"},
        }
        merged = deep_merge(deep_merge(json.loads(json.dumps(DEMO_CHANGES)), changes), self.changes)
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(merged))
        return path

    def env(self, config: Path) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key != "RABBITMQ_URL"}
        return {**env, "ROF_CONFIG": str(config), "DAGSTER_HOME": str(self.home), "PYTHONPATH": str(ROOT)}

    def start_worker(self, name: str, config: Path) -> None:
        """A worker on both pool queues; a step it runs reads ``config`` (its ROF_CONFIG)."""
        log = self.root / f"{name}.log"
        process = subprocess.Popen(
            [str(BIN / "rof"), "workers", "start", *POOL_ARGS, "--name", name],
            env=self.env(config),
            cwd=ROOT,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers[name] = (process, log)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        for name, (process, log) in self.workers.items():
            while "ready." not in log.read_text(errors="replace"):
                if process.poll() is not None:
                    raise RuntimeError(f"worker {name} exited: {log.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {name} not ready: {log.read_text()[-2000:]}")
                time.sleep(0.5)

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker's whole process group (the CLI, celery's main process, its pool child)."""
        process, _ = self.workers.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.workers):
            self.kill_worker(name)

    def launch(
        self,
        key: Any,
        run_config: Mapping[str, Any],
        config: Path,
        *,
        select: str | None = None,
        label: str = "run",
    ) -> subprocess.Popen[bytes]:
        """One partition's run of all_market_day_assets (or of the ``select``ed assets)."""
        from rof_pipelines.partitions import market_day_partitions

        config_file = self.root / f"{label}-{str(key).replace(':', '_').replace('|', '_')}.yaml"
        config_file.write_text(yaml.safe_dump(dict(run_config)))
        target = ["-m", "rof_pipelines.definitions", "-a", "defs", "-c", str(config_file)]
        if select is None:
            tags = {**market_day_partitions.get_tags_for_partition_key(key), "rof/trigger": "test"}
            command = [str(BIN / "dagster"), "job", "execute", *target, "-j", "all_market_day_assets"]
            command += ["--tags", json.dumps(tags)]
        else:
            command = [str(BIN / "dagster"), "asset", "materialize", *target, "--select", select]
            command += ["--partition", str(key)]
        return subprocess.Popen(
            command, env=self.env(config), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )


def finished(process: subprocess.Popen[bytes], what: str, timeout: float = 600) -> None:
    output, _ = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise RuntimeError(f"{what}: {output.decode(errors='replace')[-3000:]}")


def frames(data_dir: Path, markets: Sequence[str], assets: Sequence[str] | None = None) -> dict[str, Any]:
    """The markets' stored frames by relative path: parquet as a DataFrame, the rest as bytes."""
    out: dict[str, Any] = {}
    folders = {market.replace(":", "=") for market in markets}
    for path in sorted((data_dir / "frames").rglob("*")):
        relative = str(path.relative_to(data_dir / "frames"))
        if (
            path.is_file()
            and path.parent.name in folders
            and (assets is None or relative.split("/")[0] in assets)
        ):
            out[relative] = pd.read_parquet(path) if path.suffix == ".parquet" else path.read_bytes()
    return out


def in_process(
    config: Path,
    markets: Sequence[str],
    partitions: Sequence[tuple[str, date]],
    run_config: Mapping[str, Any],
) -> None:
    """The same partitions in this process, in the same order per market (a promotion changes the
    market's active config for its next day)."""
    from dagster import DagsterInstance

    from rof_pipelines.core.market import Market
    from rof_pipelines.definitions import build_definitions
    from rof_pipelines.demo import register_markets
    from rof_pipelines.partitions import market_day_key
    from rof_pipelines.settings import load_settings

    # Built from this config, not the process's cached definitions: load-time settings (the island
    # graph's shape) are the config's.
    job = build_definitions(load_settings(config)).resolve_job_def("all_market_day_assets")
    with using_config(config), DagsterInstance.ephemeral() as instance:
        register_markets(instance, [Market.parse(m) for m in markets])
        for market, day in partitions:
            result = job.execute_in_process(
                partition_key=market_day_key(market, day), instance=instance, run_config=dict(run_config)
            )
            if not result.success:
                raise RuntimeError(f"in-process run of {market} {day} failed")


def steps_by_worker(instance: Any, run_id: str) -> dict[str, str]:
    """Each step's celery worker, from the engine event dagster-celery writes when a worker starts it
    (the last one, if the step was redelivered)."""
    placed: dict[str, str] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is not None and event.is_engine_event and event.step_key:
            worker = event.engine_event_data.metadata.get(WORKER_EVENT)
            if worker is not None:
                placed[event.step_key] = str(worker.value).split("@")[0]
    return placed


class PeakMemory:
    """Peak memory of process trees, sampled every ``interval`` seconds in a thread: per tree, its
    whole (a worker's launcher, celery's main process and its pool child) as the sum of PSS, where
    pages a fork shares are counted once, split between its sharers (RSS would count them in every
    process); and its largest single process by RSS."""

    def __init__(self, roots: Mapping[str, int], interval: float = 0.25) -> None:
        self.roots = dict(roots)
        self.interval = interval
        self.tree_peak = dict.fromkeys(self.roots, 0)
        self.process_peak = dict.fromkeys(self.roots, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            for name, pid in self.roots.items():
                try:
                    root = psutil.Process(pid)
                    tree = [root, *root.children(recursive=True)]
                except psutil.Error:
                    continue
                shared, largest = 0, 0
                for process in tree:
                    with contextlib.suppress(psutil.Error):  # a child that just exited
                        info = process.memory_full_info()
                        shared += getattr(info, "pss", info.rss)
                        largest = max(largest, info.rss)
                self.tree_peak[name] = max(self.tree_peak[name], shared)
                self.process_peak[name] = max(self.process_peak[name], largest)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
