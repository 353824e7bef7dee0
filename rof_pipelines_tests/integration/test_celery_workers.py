"""The pipeline on two real dagster-celery workers (system_setup.executor: celery), with the GA as
islands, so one partition's GA is itself spread over the workers.

Two `rof workers start` processes, both on both pool queues (task_worker, ab_optimizer) plus the
default one, on the test RabbitMQ; a Dagster instance, a quote store and state stores in throwaway
PostgreSQL databases; frames in per-run directories (rof_pipelines/bench/celery_cluster.py). Runs are
launched as a run worker would, by `dagster job execute` against rof_pipelines.definitions, and
compared frame by frame with the same partitions materialised in this process (in_process).
"""

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from rof_pipelines.bench.backfill import bench_markets, generate
from rof_pipelines.bench.celery_cluster import Cluster, finished, frames, in_process, steps_by_worker
from rof_pipelines.core.market import Market
from rof_pipelines.demo import demo_days, register_markets
from rof_pipelines_tests.conftest import RABBITMQ_TEST_URL, _create_database, _drop_database, service_missing

# The planted momentum pattern on the first, none on the second; the third is the kill test's own (a
# promotion changes a market's active config, so it must not follow the first test's runs).
MARKETS = tuple(bench_markets(3))
BACKFILL_MARKETS = MARKETS[:2]
# Two islands, two epochs of three generations: the graph's shape is fixed when the code location
# loads, in the workers as in the run, so every run here keeps 4-6 generations (two epochs).
ISLANDS = {"islands": 2, "migration_interval": 3, "generations": 6, "migrants": 1}
TINY_GA = {"population_size": 8, "generations": 4}  # no `workers`: a pool child may start no pool
LONG_GA = {"population_size": 600, "generations": 6}  # island epochs of seconds: a kill lands mid-step
STEPS_PER_RUN = (
    3 + 1 + 2 * 2 + 1 + 1 + 2
)  # quotes, indicators, q_table; start, 2x2 epochs, migrate, merge; A/B
pytestmark = pytest.mark.timeout(420)


def _rabbitmq_or_skip() -> None:
    import pika

    try:
        pika.BlockingConnection(
            pika.URLParameters(RABBITMQ_TEST_URL + "?connection_attempts=1&socket_timeout=3")
        ).close()
    except Exception as exc:
        service_missing(f"RabbitMQ not reachable at {RABBITMQ_TEST_URL}: {exc}")


@pytest.fixture(scope="module")
def cluster(pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Any]]:
    _rabbitmq_or_skip()
    from dagster import DagsterInstance

    database = _create_database(pg_admin_dsn, "rof_test_celery")
    instance_db = _create_database(pg_admin_dsn, "rof_test_celery_dagster")
    cluster = Cluster(
        tmp_path_factory.mktemp("celery"),
        pg_admin_dsn,
        database,
        instance_db,
        markets=MARKETS,
        rabbitmq_url=RABBITMQ_TEST_URL,
        # A checkpoint every generation: the kill lands after one, so the redelivered step resumes.
        changes={"ab_tests": {"experiment": {"ga": ISLANDS}, "state_management": {"checkpoint_interval": 1}}},
    )
    # A step reads the configuration of the worker that runs it (its ROF_CONFIG): the celery runs'
    # state store and frames are this file's, whatever the process that launched the run reads.
    cluster.celery_config = cluster.config("workers", "celery")
    instance = None
    try:
        generate(cluster.celery_config, MARKETS, demo_days(2))
        instance = DagsterInstance.from_config(str(cluster.home))
        register_markets(instance, [Market.parse(m) for m in MARKETS])
        for name in ("w1", "w2"):
            cluster.start_worker(name, cluster.celery_config)
        cluster.wait_ready()
        yield cluster, instance
    finally:
        cluster.stop()
        if instance is not None:
            instance.dispose()
        _drop_database(pg_admin_dsn, database)
        _drop_database(pg_admin_dsn, instance_db)


def own_market_rows(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """strategy_knowledge stores the whole knowledge base as it stood: other markets' tasks are in it
    or not depending on which worker finished first, so only the partition's own market (whose days
    run in order) is comparable."""
    if not name.startswith("strategy_knowledge/"):
        return frame
    market = name.split("/")[1].replace("=", ":")
    own = frame[frame["market"] == market].reset_index(drop=True)
    assert len(own), f"{name}: no task of {market} in it"
    return own


def assert_same_frames(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(
                own_market_rows(name, got[name]), own_market_rows(name, value), obj=name
            )
        else:
            assert got[name] == value, name


def test_partitions_and_their_islands_on_two_workers_equal_the_in_process_run(
    cluster: tuple[Cluster, Any],
) -> None:
    from rof_pipelines.partitions import market_day_key

    cl, instance = cluster
    days = demo_days(2)
    started = time.monotonic()
    failures: list[str] = []

    def lane(market: str) -> None:  # a market's days in order; the two markets at once
        for day in days:
            try:
                finished(
                    cl.launch(
                        market_day_key(market, day),
                        {"ops": {"ga_population": {"config": TINY_GA}}},
                        cl.celery_config,
                    ),
                    f"{market} {day}",
                )
            except RuntimeError as exc:
                failures.append(str(exc))

    threads = [threading.Thread(target=lane, args=(market,)) for market in BACKFILL_MARKETS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    celery_seconds = time.monotonic() - started
    assert not failures, failures

    runs = instance.get_runs()
    assert len(runs) == len(BACKFILL_MARKETS) * len(days) and all(run.is_success for run in runs)
    placement = {run.tags["dagster/partition"]: steps_by_worker(instance, run.run_id) for run in runs}
    print(
        f"celery: {len(runs)} runs in {celery_seconds:.1f} s; steps by worker: {json.dumps(placement, indent=1)}"
    )
    assert all(len(steps) == STEPS_PER_RUN for steps in placement.values()), placement
    island_workers = {
        worker
        for steps in placement.values()
        for step, worker in steps.items()
        if ".ga_island_epoch_" in step
    }
    assert island_workers == {"w1", "w2"}, placement

    reference = cl.config("reference", "in_process")
    in_process(
        reference,
        MARKETS,
        [(market, day) for day in days for market in BACKFILL_MARKETS],
        {"ops": {"ga_population": {"config": TINY_GA}}},
    )
    want = frames(cl.root / "reference", BACKFILL_MARKETS)
    assert {path.split("/")[0] for path in want} >= {
        "quote_snapshots",
        "indicator_frame",
        "q_table",
        "ga_population",
    }
    assert_same_frames(frames(cl.root / "workers", BACKFILL_MARKETS), want)


def _island_checkpoints(cl: Cluster, market: str) -> int:
    """Island-epochs of ``market`` with a checkpoint short of their last generation (each
    island-epoch checkpoints under a key of its own)."""
    import psycopg
    from psycopg import sql

    host, port = cl.db["db_host"].split(":")
    with psycopg.connect(host=host, port=int(port), user=cl.db["db_user"], dbname=cl.db["db_name"]) as conn:
        query = sql.SQL(
            "SELECT count(DISTINCT config_fingerprint) FROM {}.ga_checkpoints WHERE market = %s AND NOT final"
        ).format(sql.Identifier("rof_state_workers"))
        return int(conn.execute(query, (market,)).fetchone()[0])


def test_a_worker_killed_mid_step_hands_the_step_to_the_other(cluster: tuple[Cluster, Any]) -> None:
    """SIGKILL the worker running an island epoch while it runs, after the epoch's first checkpoint:
    RabbitMQ redelivers the unacked task (task_acks_late, task_reject_on_worker_lost) to the other
    worker, which resumes it from that checkpoint; the run finishes with the in-process run's result,
    the A/B test's trial count (and so its deflated Sharpe ratio) included."""
    from dagster import DagsterEventType

    from rof_pipelines.partitions import market_day_key

    cl, instance = cluster
    market, day = MARKETS[2], demo_days(2)[0]
    before = {run.run_id for run in instance.get_runs()}
    run_config = {"ops": {"ga_population": {"config": LONG_GA}}}
    process = cl.launch(market_day_key(market, day), run_config, cl.celery_config, label="kill")
    step, victim, run_id = None, None, None
    deadline = time.monotonic() + 180
    while victim is None:
        assert process.poll() is None, process.communicate()[0].decode(errors="replace")[-3000:]
        assert time.monotonic() < deadline, "no island epoch started on a worker"
        for run in instance.get_runs():
            if run.run_id not in before:
                run_id = run.run_id
                placed = steps_by_worker(instance, run_id)
                step = next((s for s in sorted(placed) if ".ga_island_epoch_1[" in s), None)
                victim = placed.get(step) if step else None
        time.sleep(0.1)
    # Both islands of the epoch (one per worker) have a checkpoint of their own: the victim's step
    # resumes from its one when it is redelivered.
    while _island_checkpoints(cl, market) < 2:
        assert time.monotonic() < deadline, "no island checkpoint was written"
        time.sleep(0.05)
    done_before_kill = [e.step_key for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_SUCCESS)]
    cl.kill_worker(victim)
    killed_at = time.time()
    finished(process, "the run after the kill")

    assert step not in done_before_kill, f"{step} had finished before the kill: not a mid-step kill"
    successes = [
        e for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_SUCCESS) if e.step_key == step
    ]
    assert len(successes) == 1 and successes[0].timestamp > killed_at, successes
    survivor = steps_by_worker(instance, run_id)[step]
    print(f"{step} started on {victim}, killed; redelivered to {survivor}")
    assert survivor != victim
    assert instance.get_run_by_id(run_id).is_success

    reference = cl.config("killed_reference", "in_process")
    in_process(reference, MARKETS, [(market, day)], run_config)
    assert_same_frames(frames(cl.root / "workers", [market]), frames(cl.root / "killed_reference", [market]))
