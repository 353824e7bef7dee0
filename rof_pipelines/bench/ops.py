"""Ops benchmark: ``rof bench ops``. Two figures, one JSON line.

1. **Scrape latency** of the ops service's ``/metrics`` (goal: p99 < 1 s) over HTTP, with the real
   app and collectors (``ops/app.py``, ``ops/collectors.py``) on a Dagster instance holding
   ``markets`` markets and ``runs`` recorded runs, and a state store with a GA task per market.

   The instance is an ephemeral one (``DagsterInstance.ephemeral()``: Dagster's SQLite run, event
   and schedule storage in memory, the same schema and queries as the file-backed SQLite instance
   ``rof run`` uses), filled through the instance's run storage, the quickest public way found:
   ``instance.run_storage.add_historical_run`` (a run with its status, tags ``rof/pool`` and
   ``rof/market``, and a creation time spread over the past days) and ``run_storage.handle_run_event``
   with RUN_START and RUN_SUCCESS/RUN_FAILURE for the newest runs of each pool only (the start and
   end times the wait and run-time quantiles read). About 10,000 runs in 20 s here. Slower ways
   measured: the file-backed SQLite instance (a new engine per connection: ~14 ms a run, 2 minutes
   for 10,000), ``instance.handle_new_event`` (also writes each run's event log, a SQLite file per
   run: ~50 ms an event), and a PostgreSQL instance on this shared server (~45 ms a run). Queued runs
   carry a made-up gRPC code-location origin (Dagster refuses a queued run without one; the origin
   is ``dagster._core.remote_origin``, the one non-public import). Materialisations of ``q_table``,
   ``ga_population``, ``quote_snapshots`` and ``indicator_frame`` per market are
   ``instance.report_runless_asset_event`` with the metadata the assets write. The state store is
   the in-memory twin (``InMemoryStateStore``), so the figure is the service's and the instance's,
   not a database server's.

   The first scrape is reported apart: it reads each asset's newest events to fill the collector's
   per-market cache; later scrapes read only what was stored since.

2. **Overhead of recording metrics on a GA run** (goal: < 2 % wall): the same small optimisation
   (population x generations on a few days of 1-minute bars, 1 worker) with the production
   checkpoint sink (``adapters/optimisation.py: StoreCheckpoints``: per generation the evaluation
   counter, evaluations/s in the progress details and a throttled push; a forced push at the end,
   as ``pushed_step`` does) against the same sink without the recording (the progress row only, as
   before metrics). Pushes go to a real Pushgateway when the binary is installed (Debian's
   ``prometheus-pushgateway``), else nowhere (``"pushgateway": null``). Alternated ``repeats``
   times, each keeping its fastest (the GA bench's method: this machine's speed drifts).
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

POOL_SHARES = (("ab_optimizer", 0.7), ("task_worker", 0.3))
# Final statuses of the recorded runs (the rest: queued 2 %, started 1 %).
STATUS_SHARES = (
    ("SUCCESS", 0.86),
    ("FAILURE", 0.08),
    ("CANCELED", 0.03),
    ("QUEUED", 0.02),
    ("STARTED", 0.01),
)
TIMED_RUNS_PER_POOL = 300  # newest runs of each pool given start/end times (the collector reads 200)
ASSETS = ("q_table", "ga_population", "quote_snapshots", "indicator_frame")
PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _queued_origin() -> Any:
    from dagster._core.remote_origin import (
        GrpcServerCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )

    location = GrpcServerCodeLocationOrigin(host="localhost", port=4000, location_name="rof_pipelines")
    return RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=location, repository_name="__repository__"
        ),
        job_name="all_market_day_assets",
    )


def market_keys(markets: int) -> list[str]:
    exchanges = ("binance", "okx", "bybit", "kraken")
    return [f"{exchanges[i % len(exchanges)]}:M{i:03d}USDT" for i in range(markets)]


def fill_instance(instance: Any, markets: list[str], runs: int, seed: int = 0) -> dict[str, Any]:
    """``runs`` run records and one materialisation per market and asset; returns what was written."""
    from dagster import AssetMaterialization, DagsterEvent, DagsterEventType, DagsterRun, DagsterRunStatus

    from rof_pipelines.partitions import MARKETS_PARTITION, market_day_key

    rng = np.random.default_rng(seed)
    storage = instance.run_storage
    origin = _queued_origin()
    pools = rng.choice([p for p, _ in POOL_SHARES], size=runs, p=[s for _, s in POOL_SHARES])
    statuses = rng.choice([s for s, _ in STATUS_SHARES], size=runs, p=[s for _, s in STATUS_SHARES])
    now = datetime.now(UTC)
    began = time.perf_counter()
    timed_left = {pool: TIMED_RUNS_PER_POOL for pool, _ in POOL_SHARES}
    for i in range(runs - 1, -1, -1):  # newest first, so the newest of each pool get their times
        pool, status, market = str(pools[i]), str(statuses[i]), markets[i % len(markets)]
        created = now - timedelta(minutes=2 * (runs - i))
        day = (created - timedelta(days=1)).date()
        tags = {"rof/pool": pool, "rof/market": market, "rof/date": day.isoformat(), "rof/trigger": "bench"}
        timed = status in ("SUCCESS", "FAILURE") and timed_left[pool] > 0
        initial = "NOT_STARTED" if timed else status
        run = DagsterRun(
            job_name="all_market_day_assets",
            run_id=f"{i:08x}{'0' * 24}",
            status=DagsterRunStatus[initial],
            tags=tags,
            remote_job_origin=origin if initial == "QUEUED" else None,
        )
        storage.add_historical_run(run, created)
        if timed:
            timed_left[pool] -= 1
            wait, ran = float(rng.exponential(20.0)), float(rng.lognormal(4.0, 0.6))
            start = created + timedelta(seconds=wait)
            end_event = DagsterEventType.RUN_SUCCESS if status == "SUCCESS" else DagsterEventType.RUN_FAILURE
            for event_type, at in (
                (DagsterEventType.RUN_START, start),
                (end_event, start + timedelta(seconds=ran)),
            ):
                storage.handle_run_event(
                    run.run_id, DagsterEvent(event_type.value, job_name=run.job_name), at
                )
    runs_s = time.perf_counter() - began

    began = time.perf_counter()
    instance.add_dynamic_partitions(MARKETS_PARTITION, markets)
    day = (now - timedelta(days=1)).date()
    for n, market in enumerate(markets):
        key = str(market_day_key(market, day))
        metadata = {
            "q_table": {
                "episodes": 40,
                "final_episode_reward": float(rng.normal(0.01, 0.02)),
                "state_coverage": float(rng.uniform(0.2, 0.9)),
                "test/n_trades": int(rng.integers(0, 80)),
                "test/kelly_fraction": float(rng.uniform(0, 0.5)),
            },
            "ga_population": {"trials": 200 + n},
            "quote_snapshots": {
                "dagster/row_count": 8640,
                "last_ts": (now - timedelta(minutes=5)).isoformat(),
            },
            "indicator_frame": {"dagster/row_count": 1440},
        }
        for asset in ASSETS:
            instance.report_runless_asset_event(
                AssetMaterialization(asset_key=asset, partition=key, metadata=metadata[asset])
            )
    return {
        "fill_runs_seconds": round(runs_s, 1),
        "fill_materialisations_seconds": round(time.perf_counter() - began, 1),
    }


def fill_state_store(store: Any, markets: list[str]) -> None:
    for n, market in enumerate(markets):
        done = n % 4 == 0
        store.progress.record(
            f"ga:{market}:bench",
            market,
            20 if done else n % 20,
            20,
            0.5 + n / 1000,
            None if done else 120.0,
            "completed" if done else "running",
            details={
                "mean_sharpe": 0.1,
                "evaluations": 400,
                "cache_hits": 40,
                "evaluations_per_second": 30.0,
            },
        )


def bench_scrape(markets: int = 100, runs: int = 10_000, scrapes: int = 200) -> dict[str, Any]:
    from dagster import DagsterInstance

    from rof_pipelines.adapters.state_store.memory import InMemoryStateStore
    from rof_pipelines.ops.app import build_app, running
    from rof_pipelines.ops.collectors import collectors
    from rof_pipelines.settings import load_settings

    keys = market_keys(markets)
    with tempfile.TemporaryDirectory(prefix="rof-bench-ops-") as home:
        settings = load_settings(overrides={"storage": {"data_dir": str(Path(home) / "data")}})
        instance = DagsterInstance.ephemeral()
        try:
            filled = fill_instance(instance, keys, runs)
            store = InMemoryStateStore()
            fill_state_store(store, keys)
            app = build_app(
                lambda: settings, collectors=collectors(lambda: settings, instance=instance, store=store)
            )
            timings: list[float] = []
            with running(app) as url:
                began = time.perf_counter()
                first = _get(url + "/metrics")
                first_s = time.perf_counter() - began
                for _ in range(scrapes):
                    began = time.perf_counter()
                    body = _get(url + "/metrics")
                    timings.append(time.perf_counter() - began)
            lines = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
            markets_seen = {
                line.split('market="', 1)[1].split('"', 1)[0]
                for line in lines
                if line.startswith("rl_agent_episodes{")
            }
            return {
                "markets": markets,
                "runs": instance.get_runs_count(),
                "scrapes": scrapes,
                "first_scrape_seconds": round(first_s, 4),
                "first_scrape_bytes": len(first),
                "scrape_p50_seconds": round(_percentile(timings, 50), 4),
                "scrape_p99_seconds": round(_percentile(timings, 99), 4),
                "scrape_max_seconds": round(max(timings), 4),
                "scrape_bytes": len(body),
                "series": len(lines),
                "markets_in_scrape": len(markets_seen),
                "goal_p99_under_1s": _percentile(timings, 99) < 1.0,
                **filled,
            }
        finally:
            instance.dispose()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


# --- recording overhead on a GA run ------------------------------------------------------------------


@contextlib.contextmanager
def _pushgateway() -> Iterator[str | None]:
    binary = PUSHGATEWAY if os.access(PUSHGATEWAY, os.X_OK) else shutil.which("prometheus-pushgateway")
    if not binary:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file=", "--log.level=error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError):
                _get(url + "/-/ready")
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the Pushgateway did not start")
            time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def bench_overhead(
    days: int = 7, population: int = 50, generations: int = 20, repeats: int = 5
) -> dict[str, Any]:
    """The GA of ``rof bench ga`` (the default config's 50 x 20 on 7 days of one-minute bars) with and
    without recording and pushing, alternated ``repeats`` times; each one's fastest run compared."""
    from rof_pipelines.adapters import pushgateway
    from rof_pipelines.adapters.optimisation import StoreCheckpoints, TaskKey
    from rof_pipelines.adapters.state_store.memory import InMemoryStateStore
    from rof_pipelines.bench.ga import ga_setup
    from rof_pipelines.core.ga.engine import optimise
    from rof_pipelines.core.ga.fitness import build_fitness_data
    from rof_pipelines.core.ga.warmup import warm
    from rof_pipelines.settings import load_settings

    class Unrecorded(StoreCheckpoints):
        """The sink without the metrics: the progress row only, as before the metrics existed."""

        records_metrics = False

    settings = load_settings()
    setup = ga_setup(days, population, generations)
    market, start, train_part, space, base, ga = (
        setup.market,
        setup.start,
        setup.train,
        setup.space,
        setup.base,
        setup.ga,
    )
    warm()
    walls: dict[str, list[float]] = {"off": [], "on": []}
    pushes = 0
    with _pushgateway() as gateway:
        for r in range(repeats):
            # Alternate which goes first, so a drift in the machine's speed favours neither.
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                data = build_fitness_data(
                    train_part,
                    base,
                    space,
                    validation_fraction=ga.validation_fraction,
                    sample_fraction=ga.sample_fraction,
                )
                key = TaskKey(
                    market.key, f"bench-{mode}-{r}", start, start + timedelta(days=days), "d" * 16, "c" * 16
                )
                store = InMemoryStateStore()
                sink = (StoreCheckpoints if mode == "on" else Unrecorded)(store, key)
                pusher = None
                if mode == "on" and gateway:
                    pusher = pushgateway.StepPusher(
                        gateway,
                        pool="ab_optimizer",
                        market=market.key,
                        asset="ga_population",
                        timeout=settings.system_setup.pushgateway_timeout,
                        min_interval=settings.system_setup.pushgateway_interval,
                    )
                began = time.perf_counter()
                pushgateway._active = pusher  # what pushed_step sets for the step
                try:
                    optimise(data, ga, workers=1, checkpoints=sink)
                finally:
                    if pusher is not None:
                        pusher.push(force=True)  # the step's end
                    pushgateway._active = None
                walls[mode].append(time.perf_counter() - began)
                pushes += pusher.pushes if pusher is not None else 0
        push_times = []
        if pusher is not None:  # what one push of a step's figures costs (the fixed part)
            for _ in range(20):
                began = time.perf_counter()
                pusher.push(force=True)
                push_times.append(time.perf_counter() - began)
    off, on = min(walls["off"]), min(walls["on"])
    pairs = [b / a for a, b in zip(walls["off"], walls["on"], strict=True)]
    return {
        "ga_population": population,
        "ga_generations": generations,
        "ga_bars": len(train_part),
        "repeats": repeats,
        "pushgateway": gateway,
        "pushes": pushes,
        "push_seconds_median": round(float(np.median(push_times)), 5) if push_times else None,
        "wall_seconds_off": round(off, 4),
        "wall_seconds_on": round(on, 4),
        "overhead_ratio": round(on / off, 4),
        "overhead_percent": round(100 * (on / off - 1), 2),
        "overhead_median_pair_percent": round(100 * (float(np.median(pairs)) - 1), 2),
        "walls_off": [round(w, 3) for w in walls["off"]],
        "walls_on": [round(w, 3) for w in walls["on"]],
        "goal_overhead_under_2_percent": on / off < 1.02,
    }


def bench_ops(markets: int = 100, runs: int = 10_000, scrapes: int = 200, repeats: int = 5) -> dict[str, Any]:
    return {
        "bench": "ops",
        **bench_scrape(markets, runs, scrapes),
        **bench_overhead(repeats=repeats),
    }


def main(argv: list[str] | None = None) -> None:
    args = argv or sys.argv[1:]
    markets = int(args[0]) if args else 100
    runs = int(args[1]) if len(args) > 1 else 10_000
    print(json.dumps(bench_ops(markets, runs)), flush=True)


if __name__ == "__main__":
    main()
