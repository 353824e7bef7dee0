"""`rof bench ops` at toy sizes: the instance is filled as documented (runs per pool with their
statuses, a materialisation per market and asset) and the JSON has the figures the issue asks for."""

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from rof_pipelines.bench import ops


def test_the_instance_holds_the_runs_and_markets_the_scrape_reports():
    instance = DagsterInstance.ephemeral()
    try:
        ops.fill_instance(instance, ops.market_keys(5), 120)
        assert instance.get_runs_count() == 120
        assert instance.get_runs_count(RunsFilter(tags={"rof/pool": "ab_optimizer"})) > 0
        timed = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]), limit=5)
        assert timed and all(r.start_time and r.end_time and r.end_time > r.start_time for r in timed)
        assert sorted(instance.get_dynamic_partitions("markets")) == sorted(ops.market_keys(5))
    finally:
        instance.dispose()


@pytest.mark.slow
def test_bench_ops_reports_scrape_percentiles_and_the_recording_overhead():
    result = ops.bench_scrape(markets=5, runs=100, scrapes=5)
    assert result["runs"] == 100 and result["markets_in_scrape"] == 5
    assert 0 < result["scrape_p50_seconds"] <= result["scrape_p99_seconds"]
    overhead = ops.bench_overhead(days=1, population=8, generations=2, repeats=1)
    assert overhead["wall_seconds_off"] > 0 and overhead["overhead_ratio"] > 0
