"""``rof bench scale``: one partition's island GA on 1, 2, ... dagster-celery workers.

For each worker count: that many ``rof workers start`` processes (one step at a time each) on the
configured RabbitMQ, a fresh state-store schema (island epochs are reused from the store, so every
count computes its own), and ``dagster asset materialize --select ga_population`` for one partition
through the celery executor. Reported: the run's wall time (the run record's start to end, and the
launching command's), the speedup over the first count, which worker ran how many island steps,
whether every count stored the same population (``same_result``), and peak memory per worker (the
whole worker's PSS; its step process's RSS) against one single-process GA step of the same size
(islands 1, in process).

dagster-celery adds about half a second per step (a task's hand-over and the step's start on the
worker) and the run's start and the islands' merge are serial, so an island epoch needs seconds of
compute for a second worker to pay: the defaults (4 islands of 400 genomes, epochs of 10
generations) give steps of about 3 s here.
"""

import os
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from rof_pipelines.bench.backfill import _create_db, _drop_db, bench_markets, generate
from rof_pipelines.bench.celery_cluster import Cluster, PeakMemory, finished, frames, steps_by_worker
from rof_pipelines.bench.sensor import ADMIN_DSN, RABBITMQ_URL
from rof_pipelines.demo import demo_days

MB = 1024 * 1024


def _population(cluster: Cluster, name: str, market: str) -> pd.DataFrame:
    found = frames(cluster.root / name, [market], assets=["ga_population"])
    if len(found) != 1:
        raise RuntimeError(f"{name}: expected one stored ga_population, found {sorted(found)}")
    return next(iter(found.values()))


def _new_run(instance: Any, before: set[str]) -> Any:
    """The one run launched since ``before`` (run ids), which must have succeeded."""
    records = [r for r in instance.get_run_records() if r.dagster_run.run_id not in before]
    if len(records) != 1 or not records[0].dagster_run.is_success:
        raise RuntimeError(f"expected one successful run, got {[r.dagster_run.status for r in records]}")
    return records[0]


def bench_scale(
    workers: Sequence[int] = (1, 2),
    islands: int = 4,
    population: int = 1600,
    generations: int = 40,
    migration_interval: int = 10,
) -> dict[str, Any]:
    from dagster import DagsterInstance

    from rof_pipelines.core.market import Market
    from rof_pipelines.demo import register_markets
    from rof_pipelines.partitions import market_day_key

    if not workers or min(workers) < 1:
        raise ValueError(f"--workers must be counts of at least 1, got {list(workers)}")
    market = bench_markets(1)[0]
    day = demo_days(1)[0]
    key = market_day_key(market, day)
    ga = {"islands": islands, "migration_interval": migration_interval, "generations": generations}
    ga.update(population_size=population, min_population=min(population, 20), max_population=2 * population)
    root = Path(tempfile.mkdtemp(prefix="rof-bench-scale-"))
    database, instance_db = (
        f"rof_bench_scale_{secrets.token_hex(4)}",
        f"rof_bench_scale_dagster_{secrets.token_hex(4)}",
    )
    cluster: Cluster | None = None
    instance = None
    try:
        _create_db(database)
        _create_db(instance_db)
        cluster = Cluster(
            root,
            ADMIN_DSN,
            database,
            instance_db,
            markets=[market],
            rabbitmq_url=RABBITMQ_URL,
            changes={"ab_tests": {"experiment": {"ga": ga}}},
        )
        generate(cluster.config("quotes", "in_process"), [market], [day])
        instance = DagsterInstance.from_config(str(cluster.home))
        register_markets(instance, [Market.parse(market)])
        # One island-epoch step may use one process: no pool inside a worker's step.
        run_config = {"ops": {"ga_population": {"config": {"workers": 1}}}}

        per_count: dict[str, dict[str, Any]] = {}
        populations: dict[str, pd.DataFrame] = {}
        for count in workers:
            name = f"workers{count}"
            config = cluster.config(name, "celery")
            names = [f"s{count}w{i}" for i in range(1, count + 1)]
            for worker in names:
                cluster.start_worker(worker, config)
            cluster.wait_ready()
            before = {run.run_id for run in instance.get_runs()}
            with PeakMemory({w: cluster.workers[w][0].pid for w in names}) as memory:
                started = time.perf_counter()
                finished(
                    cluster.launch(key, run_config, config, select="ga_population", label=name), name, 3600
                )
                command_s = time.perf_counter() - started
            cluster.stop()
            record = _new_run(instance, before)
            placed = steps_by_worker(instance, record.dagster_run.run_id)
            per_count[str(count)] = {
                # the run's own duration (start to end in its record): the CLI's imports excluded
                "run_seconds": round(float(record.end_time - record.start_time), 2),
                "command_seconds": round(command_s, 2),
                "island_steps_by_worker": dict(
                    sorted(Counter(w for s, w in placed.items() if ".ga_island_epoch_" in s).items())
                ),
                "peak_mb_per_worker": {
                    w: {
                        "worker_pss": round(memory.tree_peak[w] / MB),
                        "step_process_rss": round(memory.process_peak[w] / MB),
                    }
                    for w in names
                },
            }
            populations[str(count)] = _population(cluster, name, market)

        # The reference: the same GA as one step in one process (islands 1), its peak memory.
        single = Cluster(
            root / "single",
            ADMIN_DSN,
            database,
            instance_db,
            markets=[market],
            rabbitmq_url=RABBITMQ_URL,
            changes={"ab_tests": {"experiment": {"ga": {**ga, "islands": 1}}}},
        )
        single_config = single.config("single", "in_process")
        process = single.launch(key, run_config, single_config, select="ga_population", label="single")
        with PeakMemory({"single": process.pid}) as memory:
            started = time.perf_counter()
            finished(process, "single-process GA", 3600)
            single_s = time.perf_counter() - started
        single_pss, single_rss = memory.tree_peak["single"], memory.process_peak["single"]

        first = str(workers[0])
        reference = populations[first]
        same = True
        for frame in populations.values():
            try:
                pd.testing.assert_frame_equal(frame, reference)
            except AssertionError:
                same = False
        peaks = [v for c in per_count.values() for v in c["peak_mb_per_worker"].values()]
        worst_step = max(v["step_process_rss"] for v in peaks)
        worst_worker = max(v["worker_pss"] for v in peaks)
        return {
            "bench": "scale",
            "cpus": os.cpu_count(),
            "workers": list(workers),
            "market": market,
            "partition": str(key),
            "islands": islands,
            "population": population,
            "generations": generations,
            "migration_interval": migration_interval,
            "epochs": -(-generations // migration_interval),
            "run_seconds": {c: v["run_seconds"] for c, v in per_count.items()},
            "speedup": {
                c: round(per_count[first]["run_seconds"] / v["run_seconds"], 2) for c, v in per_count.items()
            },
            "same_result": same,
            "per_worker_count": per_count,
            "single_process_ga": {
                "command_seconds": round(single_s, 2),
                "peak_rss_mb": round(single_rss / MB),
                "peak_pss_mb": round(single_pss / MB),
            },
            # the goal: a worker's memory within 1.5x of one single-process GA step
            "step_process_rss_to_single": round(worst_step * MB / single_rss, 2),
            "worker_pss_to_single": round(worst_worker * MB / single_pss, 2),
        }
    finally:
        if cluster is not None:
            cluster.stop()
        if instance is not None:
            instance.dispose()
        _drop_db(database)
        _drop_db(instance_db)
        shutil.rmtree(root, ignore_errors=True)
