"""``rof bench backfill`` on a tiny case: a real asset backfill through the real dagster-daemon on a
PostgreSQL instance, every partition materialised exactly once, and the figures it prints."""

import json

import pytest
import yaml

from rof_pipelines.bench.backfill import bench_markets, instance_yaml

REQUIRED = ("ab_report", "ga_population", "indicator_frame", "q_table", "quote_snapshots")


def test_instance_is_postgres_and_launches_runs():
    """SQLite locks under the multiprocess executor and a limit of 0 launches nothing."""
    config = yaml.safe_load(instance_yaml("rof_bench_x", 3))
    assert config["storage"]["postgres"]["postgres_db"]["db_name"] == "rof_bench_x"
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_coordinator"]["config"]["max_concurrent_runs"] == 3
    assert bench_markets(3) == ["binance:BENCH00USDT", "binance:BENCH01USDT", "binance:BENCH02USDT"]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.rabbitmq
@pytest.mark.timeout(900)
def test_tiny_backfill_through_the_daemon(pg_admin_dsn, rabbitmq_url):
    from rof_pipelines.bench.backfill import bench_backfill

    # 2 markets x 1 day: the backfill spans both dimensions' keys, and Dagster groups them into one
    # ranged run (the day is the dimension with fewer values; defs/partition_ranges.py).
    for executor in ("in_process",):
        result = bench_backfill(
            markets=2, days=1, ga_population=8, ga_generations=2, max_concurrent_runs=2, executor=executor
        )
        print(json.dumps(result))  # one JSON line (shown with -s)
        assert result["bench"] == "backfill" and result["executor"] == executor
        assert result["partitions"] == 2
        assert result["backfill_status"] == "COMPLETED_SUCCESS"
        assert result["runs_launched"] == 1 and result["runs_per_partition"] == 0.5
        assert result["run_status"] == {"SUCCESS": 1}
        assert result["every_partition_once"] is True
        for name in REQUIRED:
            assert result["partitions_materialised_once"][name] == 2, name
        assert set(result["partitions_materialised_more_than_once"].values()) == {0}
        wall = result["wall_seconds"]
        assert wall > 0
        assert result["partitions_per_minute"] == pytest.approx(2 / wall * 60, rel=0.01)
        assert result["compute_seconds"] > 0 and result["compute_failed_runs"] == 0
        assert result["compute_to_wall"] == pytest.approx(result["compute_seconds"] / wall, abs=0.002)
        steps = result["breakdown"]["steps"]
        assert set(REQUIRED) <= set(steps)
        for name in REQUIRED:
            assert steps[name]["in_process_step_s"] is not None
            if executor == "multiprocess":
                assert steps[name]["daemon_process_start_s"] > 0
                assert steps[name]["daemon_spawn_import_s"] > 0 and steps[name]["daemon_code_load_s"] > 0
            else:
                assert steps[name]["daemon_process_start_s"] is None  # no step process at all
        assert result["breakdown"]["mean_run_worker_start_s"] > 0
        process_start = result["breakdown"]["mean_step_process_start_s_per_run"]
        assert (process_start > 0) == (executor == "multiprocess")
