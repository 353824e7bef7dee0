"""The nightly schedule asks for the same runs however often it is evaluated; the backup job runs."""

from datetime import UTC, datetime
from pathlib import Path

import yaml
from dagster import DagsterInstance, build_schedule_context, instance_for_test

from rof_pipelines.adapters.resources import PostgresStateStoreResource, RofSettings
from rof_pipelines.definitions import defs as load_definitions
from rof_pipelines.partitions import market_and_day, markets_partitions

defs = load_definitions()  # the jobs and schedules as the code location builds them
state_backup_job = defs.resolve_job_def("state_backup")
nightly_optimisation_schedule = defs.resolve_schedule_def("nightly_optimisation_schedule")
MARKETS = ["binance:TONUSDT", "okx:BTCUSDT", "binance:BTCUSDT"]
SETTINGS = {"settings": RofSettings()}


def evaluate(instance: DagsterInstance, when: datetime):
    context = build_schedule_context(
        instance=instance,
        scheduled_execution_time=when,
        repository_def=defs.get_repository_def(),
        resources=SETTINGS,
    )
    return list(nightly_optimisation_schedule.evaluate_tick(context).run_requests or [])


def test_nightly_requests_are_identical_when_evaluated_twice():
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(markets_partitions.name, MARKETS)
        when = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
        first, second = evaluate(instance, when), evaluate(instance, when)
    assert [(r.run_key, r.partition_key, r.tags) for r in first] == [
        (r.run_key, r.partition_key, r.tags) for r in second
    ]
    assert len(first) == 3 and len({r.run_key for r in first}) == 3
    for request in first:
        market, day = market_and_day(request.partition_key)
        assert day.isoformat() == "2026-11-23" and request.run_key == f"nightly:2026-11-23:{market.key}"
        assert request.tags["rof/trigger"] == "schedule"


def test_nightly_skips_without_markets():
    with instance_for_test() as instance:
        context = build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2026, 11, 24, tzinfo=UTC), resources=SETTINGS
        )
        result = nightly_optimisation_schedule.evaluate_tick(context)
    assert not result.run_requests and "no markets yet" in result.skip_message


def test_nightly_requests_only_markets_that_traded_yesterday():
    """Sunday 01:00: Saturday had crypto trading but no FX and no stocks; Friday 2024-12-27 all
    three traded; the tick after Christmas Day only crypto and FX (no FX holidays are modelled)."""
    markets = ["binance:BTCUSDT", "oanda:EURUSD", "nasdaq:GOOG"]
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(markets_partitions.name, markets)

        def requested(when: datetime) -> list[str]:
            return sorted(market_and_day(r.partition_key)[0].key for r in evaluate(instance, when))

        assert requested(datetime(2024, 12, 29, 1, 0, tzinfo=UTC)) == ["binance:BTCUSDT"]
        assert requested(datetime(2024, 12, 28, 1, 0, tzinfo=UTC)) == sorted(markets)
        assert requested(datetime(2024, 12, 26, 1, 0, tzinfo=UTC)) == ["binance:BTCUSDT", "oanda:EURUSD"]
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(markets_partitions.name, ["nasdaq:GOOG"])
        context = build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2024, 12, 29, 1, 0, tzinfo=UTC),
            resources=SETTINGS,
        )
        result = nightly_optimisation_schedule.evaluate_tick(context)
    assert not result.run_requests and "no market traded on 2024-12-28" in result.skip_message


def test_schedules_and_jobs_are_described_in_the_definitions():
    for name in ("nightly_optimisation_schedule", "state_backup_schedule"):
        assert defs.resolve_schedule_def(name).description
    for name in ("nightly_optimisation", "state_backup", "all_market_day_assets", "market_data"):
        assert defs.resolve_job_def(name).description


def test_backup_job_writes_an_archive(tmp_path: Path, pg_database):
    config = tmp_path / "config.yaml"
    state = {
        "db_host": pg_database["db_host"],
        "db_user": pg_database["db_user"],
        "db_name": pg_database["db_name"],
        "db_password": "",
        "schema": "rof_state",
    }
    config.write_text(
        yaml.safe_dump(
            {"state_storage": state, "system_setup": {"backup": {"directory": str(tmp_path / "b")}}}
        )
    )
    settings = RofSettings(config_path=str(config))
    result = state_backup_job.execute_in_process(
        resources={"settings": settings, "state_store": PostgresStateStoreResource(settings=settings)}
    )
    assert result.success
    url = result.output_for_node("backup_state_store")
    assert Path(url).exists() and Path(url).parent == tmp_path / "b"


def test_backup_job_writes_to_a_named_destination_and_refuses_an_unknown_one(tmp_path: Path, pg_database):
    config = tmp_path / "config.yaml"
    state = {
        "db_host": pg_database["db_host"],
        "db_user": pg_database["db_user"],
        "db_name": pg_database["db_name"],
        "db_password": "",
        "schema": "rof_state",
    }
    backup = {"directory": str(tmp_path / "b"), "destinations": {"offsite": str(tmp_path / "off")}}
    config.write_text(yaml.safe_dump({"state_storage": state, "system_setup": {"backup": backup}}))
    settings = RofSettings(config_path=str(config))
    resources = {"settings": settings, "state_store": PostgresStateStoreResource(settings=settings)}

    def run(destination: str):
        return state_backup_job.execute_in_process(
            run_config={"ops": {"backup_state_store": {"config": {"destination": destination}}}},
            resources=resources,
            raise_on_error=False,
        )

    named = run("offsite")
    assert named.success and Path(named.output_for_node("backup_state_store")).parent == tmp_path / "off"
    for refused in ("elsewhere", str(tmp_path / "evil"), "memory://x"):  # e.g. a row inboxed before names
        result = run(refused)
        assert not result.success
        [failure] = [event for event in result.all_events if event.is_step_failure]
        assert "no destination named" in str(failure.event_specific_data.error)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "b").exists()


def test_jobs_carry_pool_timeout_and_trigger_tags():
    pools = {
        "market_data": ("task_worker", "30"),
        "state_backup": ("task_worker", "30"),
        "nightly_optimisation": ("ab_optimizer", "1200"),
        "all_market_day_assets": ("ab_optimizer", "1200"),
    }
    for name, (pool, timeout) in pools.items():
        tags = defs.resolve_job_def(name).tags
        assert (tags["rof/pool"], tags["dagster/max_runtime"], tags["rof/trigger"]) == (
            pool,
            timeout,
            "manual",
        )
