"""A backfill run of a range of partitions (BackfillPolicy.multi_run): every market-day asset runs
its body once per day inside one step, and what each day stores, records and checks is what a run
of that day alone gives. Closed days store nothing; a day that fails costs only itself."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import yaml
from dagster import AssetKey, DagsterEventType, instance_for_test, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from rof_pipelines.adapters.quote_stores import open_quote_store
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import generate_quotes
from rof_pipelines.defs.experiments.assets import ab_report, strategy_knowledge
from rof_pipelines.defs.indicators.assets import CHECKS as INDICATOR_CHECKS
from rof_pipelines.defs.indicators.assets import indicator_frame
from rof_pipelines.defs.optimisation.assets import ga_population
from rof_pipelines.defs.quotes.assets import quote_snapshots
from rof_pipelines.defs.rl.assets import q_table
from rof_pipelines.partitions import market_day_key, markets_partitions
from rof_pipelines.settings import load_settings
from rof_pipelines_tests.defs.support import resources_for

TON = Market.parse("binance:TONUSDT")
ASSETS = [quote_snapshots, indicator_frame, q_table, ga_population, ab_report, strategy_knowledge]
RUN_CONFIG = {"ops": {"ga_population": {"config": {"generations": 2, "population_size": 8, "workers": 1}}}}
# Friday to Monday: with the market on the New York exchange's calendar, two closed days between.
FRIDAY, MONDAY = date(2026, 11, 20), date(2026, 11, 23)
DAYS = [FRIDAY + timedelta(days=n) for n in range(4)]


def write_config(directory: Path, calendar: str | None = None) -> Path:
    market: dict = {"market": TON.key}
    if calendar:  # an exchange's session is a fraction of a day: a longer window
        market.update(calendar=calendar, data_period="3d")
    config = {
        "storage": {"data_dir": str(directory / "data"), "quote_store": "parquet", "markets": [market]},
        "state_storage": {"db_host": "127.0.0.1:9", "db_name": "nowhere", "auto_migrate": False},
        "ai_config": {"rl": {"episodes": 2, "fee": 0.0, "slippage": 0.0}},
        "ab_tests": {
            "experiment": {"ga": {"min_population": 8}},
            "folds": 2,
            "n_boot": 200,
            # Days of one run would otherwise seed each other's GA in a different order.
            "meta_learning": {"enabled": False},
            "transfer_learning": {"enabled": False},
        },
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fill(config_path: Path, first: date, last: date) -> None:
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    with open_quote_store(load_settings(config_path, environ={})) as store:
        store.ensure_schema()
        store.write(TON, generate_quotes(TON, start, end, seed=9))


def run_range(config_path: Path, instance, state_store, first: date, last: date, raise_on_error: bool = True):
    instance.add_dynamic_partitions(markets_partitions.name, [TON.key])
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: str(market_day_key(TON, first)),
        ASSET_PARTITION_RANGE_END_TAG: str(market_day_key(TON, last)),
    }
    return materialize(
        ASSETS,
        instance=instance,
        tags=tags,
        run_config=RUN_CONFIG,
        resources=resources_for(config_path, state_store),
        raise_on_error=raise_on_error,
    )


def run_day(config_path: Path, instance, state_store, day: date):
    instance.add_dynamic_partitions(markets_partitions.name, [TON.key])
    return materialize(
        ASSETS,
        instance=instance,
        partition_key=market_day_key(TON, day),
        run_config=RUN_CONFIG,
        resources=resources_for(config_path, state_store),
    )


def stored(config_path: Path, asset: str, day: date) -> Path | None:
    root = load_settings(config_path, environ={}).storage.resolved_frames_url()
    found = list(Path(root, asset, TON.key.replace(":", "=")).glob(f"{day.isoformat()}.*"))
    return found[0] if found else None


def read(path: Path):
    return path.read_bytes() if path.suffix == ".bin" else pd.read_parquet(path)


def materialisations(result) -> dict[tuple[str, str], dict]:
    seen: dict[tuple[str, str], dict] = {}
    for event in result.get_asset_materialization_events():
        m = event.step_materialization_data.materialization
        key = (m.asset_key.to_user_string(), str(m.partition))
        assert key not in seen, f"{key} materialised twice"
        seen[key] = {k: v.value for k, v in m.metadata.items()}
    return seen


def test_a_range_in_one_run_stores_and_records_what_runs_of_single_days_do(tmp_path, memory_state_store):
    ranged_dir, single_dir = tmp_path / "ranged", tmp_path / "single"
    days = DAYS[:3]
    for directory in (ranged_dir, single_dir):
        directory.mkdir()
        fill(write_config(directory), days[0] - timedelta(days=2), days[-1])

    with instance_for_test() as instance:
        result = run_range(ranged_dir / "config.yaml", instance, memory_state_store, days[0], days[-1])
        assert result.success
        steps = [e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_SUCCESS]
        assert sorted(steps) == sorted(a.key.path[-1] for a in ASSETS)  # one step per asset, not per day
        recorded = materialisations(result)
        assert set(recorded) == {
            (a.key.to_user_string(), str(market_day_key(TON, d))) for a in ASSETS for d in days
        }
        # Each day's materialisation carries that day's own metadata, not the range's.
        assert [recorded[("indicator_frame", str(market_day_key(TON, d)))]["date"] for d in days] == [
            d.isoformat() for d in days
        ]
        evaluated = [
            (e.event_specific_data.check_name, e.event_specific_data.partition)
            for e in result.all_events
            if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
        ]
        expected = {(name, str(market_day_key(TON, d))) for name in INDICATOR_CHECKS for d in days}
        assert sorted(p for p in evaluated if p[0] in INDICATOR_CHECKS) == sorted(expected)

    with instance_for_test() as instance:
        for day in days:
            assert run_day(single_dir / "config.yaml", instance, memory_state_store, day).success

    for asset in ("quote_snapshots", "indicator_frame", "ga_population"):
        for day in days:
            ranged, single = (
                stored(ranged_dir / "config.yaml", asset, day),
                stored(single_dir / "config.yaml", asset, day),
            )
            assert ranged is not None and single is not None, (asset, day)
            if ranged.suffix == ".parquet":
                pd.testing.assert_frame_equal(read(ranged), read(single))
            else:
                assert read(ranged) == read(single)


def test_closed_days_in_a_range_store_nothing_and_say_why(tmp_path, memory_state_store):
    config_path = write_config(tmp_path, calendar="XNYS")
    fill(config_path, FRIDAY - timedelta(days=5), MONDAY)
    with instance_for_test() as instance:
        result = run_range(config_path, instance, memory_state_store, FRIDAY, MONDAY)
    assert result.success
    recorded = materialisations(result)
    for day in (FRIDAY, MONDAY):
        assert stored(config_path, "indicator_frame", day) is not None
        assert "market_closed" not in recorded[("indicator_frame", str(market_day_key(TON, day)))]
    for day in DAYS[1:3]:  # Saturday, Sunday
        assert stored(config_path, "indicator_frame", day) is None
        assert stored(config_path, "ga_population", day) is None
        assert recorded[("indicator_frame", str(market_day_key(TON, day)))]["market_closed"] is True


def test_a_day_that_fails_costs_only_itself(tmp_path, memory_state_store):
    """The range's first day has no quotes: it fails with the reason, the other days are stored and
    materialised, and the step names the failed day."""
    config_path = write_config(tmp_path)
    days = DAYS[:3]
    fill(config_path, days[1], days[-1])
    with instance_for_test() as instance:
        result = run_range(config_path, instance, memory_state_store, days[0], days[-1], raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
        assert failure.step_key == "quote_snapshots"
        message = failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)
        assert "1 of 3 partitions failed" in message and days[0].isoformat() in message
        records = instance.fetch_materializations(AssetKey("quote_snapshots"), limit=10).records
    assert sorted(r.partition_key for r in records) == sorted(str(market_day_key(TON, d)) for d in days[1:])
    assert stored(config_path, "quote_snapshots", days[0]) is None
    assert all(stored(config_path, "quote_snapshots", d) is not None for d in days[1:])


def test_a_range_of_one_day_is_stored_as_a_run_of_that_day(tmp_path, memory_state_store):
    """A backfill's last run may hold one day, and runs of one partition each
    (system_setup.backfill_partitions_per_run: 1) are ranges of one key: the body gets that day's
    frames, not the range's, and stores what a run of the day alone does."""
    ranged_dir, single_dir = tmp_path / "ranged", tmp_path / "single"
    day = DAYS[0]
    for directory in (ranged_dir, single_dir):
        directory.mkdir()
        fill(write_config(directory), day - timedelta(days=2), day)
    with instance_for_test() as instance:
        result = run_range(ranged_dir / "config.yaml", instance, memory_state_store, day, day)
        assert result.success
        assert set(materialisations(result)) == {
            (a.key.to_user_string(), str(market_day_key(TON, day))) for a in ASSETS
        }
    with instance_for_test() as instance:
        assert run_day(single_dir / "config.yaml", instance, memory_state_store, day).success
    for asset in ("indicator_frame", "ga_population", "ab_report"):
        ranged, single = (
            stored(ranged_dir / "config.yaml", asset, day),
            stored(single_dir / "config.yaml", asset, day),
        )
        assert ranged is not None and single is not None, asset
        if ranged.suffix == ".parquet":
            pd.testing.assert_frame_equal(read(ranged), read(single), obj=asset)
        else:
            assert read(ranged) == read(single), asset
