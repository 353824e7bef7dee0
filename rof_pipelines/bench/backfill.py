"""``rof bench backfill``: a partition backfill of every market-day asset through the real daemon,
against the same work computed in one process, so the ratio shows what the per-run overhead costs.

The backfill is what a user launches from the UI (an asset backfill over markets x days), added
with Dagster's own API (``PartitionBackfill.from_asset_partitions`` + ``instance.add_backfill``,
what the webserver's ``launchPartitionBackfill`` does) and executed by the backfill daemon of a real
``dagster-daemon`` (bench/sensor.py's harness). The instance is PostgreSQL (the production shape,
deploy/dagster.yaml: SQLite locks under the multiprocess executor) with a queued run coordinator
that launches runs; the instance and the state store are throwaway databases, the quotes a
throwaway embedded Parquet store filled by the project's generator with the demo's configuration.

The compute figure is the same partitions materialised one after another in this process
(``execute_in_process``, in-process executor, an ephemeral instance, a fresh state store) after one
warm-up partition on a market outside the backfill, so imports and JIT are paid before the clock.
The breakdown reads each daemon run's event log: queue wait, run-worker start, step-process start
(spawn, imports, code-location load, resources) and step time, per step.
"""

import os
import secrets
import shutil
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

from rof_pipelines.bench.sensor import ADMIN_DSN, DaemonHarness, wait_for
from rof_pipelines.demo import DEMO_BARS, DEMO_CHANGES, demo_days, generation_range, register_markets
from rof_pipelines.settings import load_settings

# Assets that may legitimately materialise nothing on a partition (no champion to learn from).
OPTIONAL_ASSETS = frozenset({"strategy_knowledge"})
WARMUP_MARKET = "binance:WARMUPUSDT"
SMOKE = {"markets": 2, "days": 2, "ga_population": 8, "ga_generations": 2}


def bench_markets(count: int) -> list[str]:
    """Synthetic 24/7 markets; every other one carries the demo's planted momentum pattern."""
    return [f"binance:BENCH{i:02d}USDT" for i in range(count)]


def _pattern(market: str) -> str:
    return "momentum" if market != WARMUP_MARKET and int(market[13:15]) % 2 == 0 else "none"


def instance_postgres_db(admin_dsn: str, database: str) -> dict[str, Any]:
    """dagster-postgres's ``postgres_db`` for ``database`` on the server of ``admin_dsn``; psycopg2,
    since SQLAlchemy 2.1 with psycopg 3 fails on the instance's NOTIFY."""
    admin = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    return {
        "username": admin.get("user", "postgres"),
        "password": admin.get("password", ""),
        "hostname": admin.get("host", "127.0.0.1"),
        "db_name": database,
        "port": int(admin.get("port", 5432)),
        "scheme": "postgresql+psycopg2",
    }


def instance_yaml(database: str, max_concurrent_runs: int) -> str:
    """deploy/dagster.yaml's shape on a throwaway database: PostgreSQL storage (psycopg2), queued
    coordinator that launches runs, the default run launcher."""
    postgres_db = instance_postgres_db(ADMIN_DSN, database)
    return yaml.safe_dump(
        {
            "storage": {"postgres": {"postgres_db": postgres_db}},
            "run_coordinator": {
                "module": "dagster.core.run_coordinator",
                "class": "QueuedRunCoordinator",
                "config": {"max_concurrent_runs": max_concurrent_runs, "dequeue_interval_seconds": 1},
            },
            "run_launcher": {"module": "dagster.core.launcher", "class": "DefaultRunLauncher"},
            "telemetry": {"enabled": False},
        },
        sort_keys=False,
    )


def _admin(statement: sql.Composable) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(statement)


def _create_db(name: str) -> None:
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _drop_db(name: str) -> None:
    _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def generate(config_path: Path, markets: Sequence[str], days: Sequence[date], seed: int = 0) -> int:
    """Quotes for every market over its first window, indicator warm-up and the backfill's days."""
    from rof_pipelines.adapters.quote_stores import open_quote_store
    from rof_pipelines.core.market import Market
    from rof_pipelines.core.quotes import GeneratorConfig, generate_quotes

    settings = load_settings(config_path, environ={})
    rows = 0
    with open_quote_store(settings) as store:
        store.ensure_schema()
        for key in markets:
            market = Market.parse(key)
            start, end = generation_range(settings, market, days)
            quotes = generate_quotes(
                market, start, end, seed=seed, config=GeneratorConfig(pattern=_pattern(key))
            )
            rows += store.write(market, quotes)
    return rows


def _run_config(ga_population: int | None, ga_generations: int | None) -> dict[str, Any] | None:
    ga = {
        key: value
        for key, value in (("population_size", ga_population), ("generations", ga_generations))
        if value is not None
    }
    return {"ops": {"ga_population": {"config": ga}}} if ga else None


def _step_times(instance: Any, run_id: str) -> dict[str, Any]:
    """Seconds between a run's events: launch (RUN_STARTING -> RUN_START), per step the process
    start (STEP_WORKER_STARTING -> STEP_START) and the step (STEP_START -> STEP_SUCCESS/FAILURE)."""
    first: dict[str, float] = {}
    worker: dict[str, float] = {}
    worker_up: dict[str, float] = {}
    start: dict[str, float] = {}
    steps: dict[str, dict[str, float]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        kind, step, ts = event.event_type.name, event.step_key, entry.timestamp
        first.setdefault(kind, ts)
        if kind == "STEP_WORKER_STARTING" and step:
            worker[step] = ts
        elif kind == "STEP_WORKER_STARTED" and step:
            worker_up[step] = ts
        elif kind == "STEP_START" and step:
            start[step] = ts
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and step and step in start:
            first["LAST_STEP_END"] = max(first.get("LAST_STEP_END", ts), ts)
            steps[step] = {"step_s": ts - start[step]}
            if step in worker:
                steps[step]["process_start_s"] = start[step] - worker[step]
            if step in worker and step in worker_up:  # spawn + imports, then code location + resources
                steps[step]["spawn_import_s"] = worker_up[step] - worker[step]
                steps[step]["code_load_s"] = start[step] - worker_up[step]
        elif kind in ("RUN_SUCCESS", "RUN_FAILURE"):
            first["RUN_END"] = ts
    return {"events": first, "steps": steps}


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def breakdown(instance: Any, runs: Sequence[Any], compute_steps: dict[str, list[float]]) -> dict[str, Any]:
    """Where a daemon run's time goes, averaged over runs, next to the same steps in one process."""
    queue, launch, process, step_total, tail, total = [], [], [], [], [], []
    per_step: dict[str, list[float]] = defaultdict(list)
    per_step_start: dict[str, list[float]] = defaultdict(list)
    per_step_spawn: dict[str, list[float]] = defaultdict(list)
    per_step_load: dict[str, list[float]] = defaultdict(list)
    for record in runs:
        times = _step_times(instance, record.dagster_run.run_id)
        ev, steps = times["events"], times["steps"]
        if "RUN_STARTING" in ev:
            queue.append(ev["RUN_STARTING"] - record.create_timestamp.timestamp())
            if "RUN_START" in ev:
                launch.append(ev["RUN_START"] - ev["RUN_STARTING"])
            if "RUN_END" in ev:
                total.append(ev["RUN_END"] - ev["RUN_STARTING"])
        process.append(sum(s.get("process_start_s", 0.0) for s in steps.values()))
        step_total.append(sum(s["step_s"] for s in steps.values()))
        if "RUN_END" in ev and "LAST_STEP_END" in ev:
            tail.append(ev["RUN_END"] - ev["LAST_STEP_END"])
        for key, item in steps.items():
            per_step[key].append(item["step_s"])
            if "process_start_s" in item:
                per_step_start[key].append(item["process_start_s"])
            if "spawn_import_s" in item:
                per_step_spawn[key].append(item["spawn_import_s"])
                per_step_load[key].append(item["code_load_s"])
    return {
        "runs_measured": len(runs),
        "mean_queue_wait_s": _mean(queue),
        "mean_run_worker_start_s": _mean(launch),  # RUN_STARTING -> RUN_START: spawn, imports, defs
        "mean_step_process_start_s_per_run": _mean(process),  # summed over the run's steps
        "mean_step_time_s_per_run": _mean(step_total),
        "mean_run_tail_s": _mean(tail),  # last step end -> RUN_SUCCESS
        "mean_run_s": _mean(total),  # RUN_STARTING -> RUN_SUCCESS
        "steps": {
            key: {
                "daemon_process_start_s": _mean(per_step_start.get(key, [])),
                "daemon_spawn_import_s": _mean(per_step_spawn.get(key, [])),
                "daemon_code_load_s": _mean(per_step_load.get(key, [])),
                "daemon_step_s": _mean(values),
                "in_process_step_s": _mean(compute_steps.get(key, [])),
            }
            for key, values in sorted(per_step.items())
        },
    }


def materialisation_counts(instance: Any, asset_keys: Sequence[Any]) -> dict[str, Counter[str]]:
    """Materialisation events per asset per partition, read from the instance's event log."""
    counts: dict[str, Counter[str]] = {}
    for key in asset_keys:
        counter: Counter[str] = Counter()
        cursor = None
        while True:
            result = instance.fetch_materializations(key, limit=1000, cursor=cursor)
            for record in result.records:
                counter[str(record.partition_key)] += 1
            if not result.has_more:
                break
            cursor = result.cursor
        counts[key.to_user_string()] = counter
    return counts


def compute_in_process(
    config_path: Path, markets: Sequence[str], days: Sequence[date], run_config: dict[str, Any] | None
) -> tuple[float, dict[str, list[float]], int]:
    """Seconds the same partitions take in this process, one after another, after a warm-up
    partition; the per-step seconds; failed runs."""
    from dagster import DagsterInstance

    from rof_pipelines.core.market import Market
    from rof_pipelines.definitions import defs
    from rof_pipelines.demo import using_config
    from rof_pipelines.partitions import market_day_key

    job = defs().resolve_job_def("all_market_day_assets")
    config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}, **(run_config or {})}
    per_step: dict[str, list[float]] = defaultdict(list)
    failed = 0
    with using_config(config_path), DagsterInstance.ephemeral() as instance:
        register_markets(instance, [Market.parse(m) for m in [WARMUP_MARKET, *markets]])

        def one(market: str, day: date) -> Any:
            return job.execute_in_process(
                partition_key=market_day_key(market, day),
                instance=instance,
                raise_on_error=False,
                run_config=config,
                tags={"rof/trigger": "bench"},
            )

        one(WARMUP_MARKET, days[0])
        started = time.perf_counter()
        results = [one(market, day) for day in days for market in markets]
        seconds = time.perf_counter() - started
        for result in results:
            failed += not result.success
            for key, item in _step_times(instance, result.run_id)["steps"].items():
                per_step[key].append(item["step_s"])
    return seconds, dict(per_step), failed


def bench_backfill(
    markets: int = 10,
    days: int = 30,
    ga_population: int | None = None,
    ga_generations: int | None = None,
    max_concurrent_runs: int | None = None,
    timeout: float = 3 * 3600,
    compute: bool = True,
    executor: str | None = None,
    partitions_per_run: int | None = None,
) -> dict[str, Any]:
    """Backfill MARKETS x DAYS market-day partitions through the daemon; see the module docstring."""
    from dagster import DagsterInstance
    from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES, PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    from rof_pipelines.core.market import Market
    from rof_pipelines.definitions import defs
    from rof_pipelines.demo import using_config
    from rof_pipelines.partitions import market_day_key

    market_keys = bench_markets(markets)
    day_list = demo_days(days)
    concurrency = max_concurrent_runs or os.cpu_count() or 1
    overrides = {
        **DEMO_CHANGES,
        "storage": {
            "quote_store": "parquet",
            "markets": market_keys,
            "market_overrides": {m: DEMO_BARS for m in [WARMUP_MARKET, *market_keys]},
        },
    }
    # system_setup of the code location the daemon loads
    chosen = {"executor": executor, "backfill_partitions_per_run": partitions_per_run}
    if any(value is not None for value in chosen.values()):
        overrides["system_setup"] = {k: v for k, v in chosen.items() if v is not None}
    harness = DaemonHarness(config_overrides=overrides)
    instance_db = f"rof_bench_dagster_{secrets.token_hex(4)}"
    compute_db = f"rof_bench_compute_{secrets.token_hex(4)}"
    instance = None
    succeeded = False
    try:
        _create_db(instance_db)
        (harness.home / "dagster.yaml").write_text(instance_yaml(instance_db, concurrency))
        generated_at = time.perf_counter()
        rows = generate(harness.config_path, [WARMUP_MARKET, *market_keys], day_list)
        generate_s = time.perf_counter() - generated_at
        run_config = _run_config(ga_population, ga_generations)
        partitions = [str(market_day_key(m, d)) for d in day_list for m in market_keys]

        with using_config(harness.config_path):
            asset_graph = defs().resolve_asset_graph()
            asset_keys = sorted(
                (k for k in asset_graph.get_all_asset_keys() if asset_graph.get(k).partitions_def),
                key=lambda k: k.to_user_string(),
            )
            instance = DagsterInstance.from_config(str(harness.home))
            register_markets(instance, [Market.parse(m) for m in market_keys])
            harness.start()
            ready = wait_for(lambda: "BACKFILL" in instance.get_daemon_heartbeats(), timeout=300, poll=1)
            if not ready:
                raise RuntimeError(f"the backfill daemon never started; see {harness.dir / 'daemon.log'}")
            backfill_id = make_new_backfill_id()
            started = time.time()
            backfill = PartitionBackfill.from_asset_partitions(
                backfill_id=backfill_id,
                asset_graph=asset_graph,
                partition_names=partitions,
                asset_selection=asset_keys,
                backfill_timestamp=started,
                tags={"rof/trigger": "bench"},
                dynamic_partitions_store=instance,
                all_partitions=False,
                title=f"rof bench backfill {markets}x{days}",
                description=None,
                run_config=run_config,
            )
            instance.add_backfill(backfill)

            def done() -> bool:
                current = instance.get_backfill(backfill_id)
                return current is not None and current.status in BULK_ACTION_TERMINAL_STATUSES

            finished = wait_for(done, timeout=timeout, poll=1)
            wall = time.time() - started
            status = instance.get_backfill(backfill_id).status.value
            harness.kill()
            from dagster import RunsFilter

            runs = instance.get_run_records(RunsFilter(tags={"dagster/backfill": backfill_id}))
            counts = materialisation_counts(instance, asset_keys)
            run_status = Counter(r.dagster_run.status.value for r in runs)
            ends = [r.end_time for r in runs if r.end_time]
            if ends:  # the backfill is done when its last run ends, not when the daemon next looks
                wall = min(wall, max(ends) - started)

            compute_s, compute_steps, compute_failed = None, {}, None
            if compute:
                _create_db(compute_db)
                compute_config = harness.dir / "config.compute.yaml"
                data = yaml.safe_load(harness.config_path.read_text())
                data["state_storage"]["db_name"] = compute_db
                compute_config.write_text(yaml.safe_dump(data))
                compute_s, compute_steps, compute_failed = compute_in_process(
                    compute_config, market_keys, day_list, run_config
                )

        once = {
            name: sum(1 for p in partitions if counter.get(p, 0) == 1) for name, counter in counts.items()
        }
        extra = {name: sum(1 for p, n in counter.items() if n > 1) for name, counter in counts.items()}
        every_once = all(
            extra[name] == 0 and (once[name] == len(partitions) or name in OPTIONAL_ASSETS) for name in counts
        )
        n = len(partitions)
        result = {
            "bench": "backfill",
            "executor": executor or "config default",
            "partitions_per_run": partitions_per_run or "config default",
            "markets": markets,
            "days": days,
            "partitions": n,
            "assets": [k.to_user_string() for k in asset_keys],
            "ga": run_config["ops"]["ga_population"]["config"] if run_config else "config (demo)",
            "max_concurrent_runs": concurrency,
            "cpus": os.cpu_count(),
            "backfill_status": status if finished else f"TIMEOUT ({status})",
            "wall_seconds": round(wall, 2),
            "partitions_per_minute": round(n / wall * 60, 3) if wall else None,
            "runs_launched": len(runs),
            "runs_per_partition": round(len(runs) / n, 3),
            "run_status": dict(run_status),
            "every_partition_once": every_once,
            "partitions_materialised_once": once,
            "partitions_materialised_more_than_once": extra,
            "compute_seconds": round(compute_s, 2) if compute_s is not None else None,
            "compute_failed_runs": compute_failed,
            "compute_to_wall": round(compute_s / wall, 3) if compute_s and wall else None,
            # the same, per core the runs could use: 1.0 is every core computing all the time
            "compute_to_wall_per_core": (
                round(compute_s / (wall * min(concurrency, os.cpu_count() or 1)), 3)
                if compute_s and wall
                else None
            ),
            "quote_rows_generated": rows,
            "generate_seconds": round(generate_s, 1),
            "breakdown": breakdown(instance, runs, compute_steps),
        }
        succeeded = finished and every_once
        return result
    finally:
        if instance is not None:
            instance.dispose()
        harness.close()
        for name in (instance_db, compute_db):
            _drop_db(name)
        if succeeded:  # a failed bench keeps its directory: daemon.log says what went wrong
            shutil.rmtree(harness.dir, ignore_errors=True)
