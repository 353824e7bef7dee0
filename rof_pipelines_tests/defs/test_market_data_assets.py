"""Both assets materialise through Dagster, on the embedded store and on PostgreSQL."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, instance_for_test, materialize

from rof_pipelines.adapters.io_managers import ParquetFrameIOManager
from rof_pipelines.adapters.quote_stores import open_quote_store
from rof_pipelines.adapters.resources import QuoteStoreResource, RofSettings
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import generate_quotes
from rof_pipelines.defs.indicators.assets import indicator_frame
from rof_pipelines.defs.quotes.assets import quote_snapshots
from rof_pipelines.partitions import market_day_key, markets_partitions
from rof_pipelines.settings import load_settings

TON = Market.parse("binance:TONUSDT")
DAYS = [date(2026, 11, 19), date(2026, 11, 20)]
SECRET = "s3cr3t-pw-never-shown"


def write_config(tmp_path: Path, storage: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"storage": {"data_dir": str(tmp_path / "data"), **storage}}))
    return path


def resources(config_path: Path) -> dict:
    settings = RofSettings(config_path=str(config_path))
    return {
        "settings": settings,
        "quote_store": QuoteStoreResource(settings=settings),
        "frame_io_manager": ParquetFrameIOManager(settings=settings),
    }


def fill_store(config_path: Path) -> None:
    settings = load_settings(config_path, environ={})
    start = datetime.combine(DAYS[0], datetime.min.time(), tzinfo=UTC)
    with open_quote_store(settings) as store:
        store.ensure_schema()
        store.write(TON, generate_quotes(TON, start, start + timedelta(days=len(DAYS)), seed=5))


def materialize_days(instance: DagsterInstance, config_path: Path):
    instance.add_dynamic_partitions(markets_partitions.name, [TON.key])
    results = []
    for day in DAYS:
        results.append(
            materialize(
                [quote_snapshots, indicator_frame],
                partition_key=market_day_key(TON, day),
                instance=instance,
                resources=resources(config_path),
            )
        )
    return results


def assert_materialised(instance: DagsterInstance, results) -> None:
    assert all(result.success for result in results)
    last = results[-1]
    by_asset = {
        event.step_materialization_data.materialization.asset_key.to_user_string(): event.step_materialization_data.materialization.metadata
        for event in last.get_asset_materialization_events()
    }
    assert set(by_asset) == {"quote_snapshots", "indicator_frame"}
    assert by_asset["quote_snapshots"]["dagster/row_count"].value > 6000
    for counter in ("duplicates", "out_of_order", "nan_price", "outliers"):
        assert f"cleaning/{counter}" in by_asset["quote_snapshots"]
    assert by_asset["indicator_frame"]["dagster/row_count"].value == 1440
    assert 0 <= by_asset["indicator_frame"]["last_rsi"].value <= 100
    checks = {e.check_name: e.passed for e in last.get_asset_check_evaluations()}
    assert checks == {
        "unique_ordered_timestamps": True,
        "price_sanity": True,
        "gaps": True,
        "ohlc_consistent": True,
        "indicators_defined": True,
        "bars_complete": True,
    }
    # The second day's frame is warmed up by the first day's snapshots (read in the same store query).
    frame_path = Path(by_asset["indicator_frame"]["path"].value)
    frame = pd.read_parquet(frame_path)
    assert frame.index.min() == pd.Timestamp(DAYS[1], tz="UTC")
    assert not frame["macd"].isna().any()
    latest = instance.get_latest_materialization_event(AssetKey("indicator_frame"))
    assert latest is not None and latest.run_id == last.run_id


def test_materialise_on_the_embedded_store(tmp_path):
    config_path = write_config(tmp_path, {"quote_store": "parquet"})
    fill_store(config_path)
    with instance_for_test() as instance:
        assert_materialised(instance, materialize_days(instance, config_path))


def test_materialise_on_postgres_without_leaking_the_password(tmp_path, pg_database, capfd):
    # Trust auth accepts any password, so a real secret travels the whole path without being needed.
    db = {
        "db_host": pg_database["db_host"],
        "db_user": pg_database["db_user"],
        "db_name": pg_database["db_name"],
        "db_password": SECRET,
    }
    config_path = write_config(tmp_path, {"quote_store": "postgres", "postgres": db})
    fill_store(config_path)
    with instance_for_test() as instance:
        results = materialize_days(instance, config_path)
        assert_materialised(instance, results)
        for result in results:
            for record in instance.all_logs(result.run_id):
                assert SECRET not in str(record)
        stored = instance.get_latest_materialization_event(AssetKey("quote_snapshots"))
        assert "postgresql://" in str(stored) and SECRET not in str(stored)
    out, err = capfd.readouterr()
    assert SECRET not in out and SECRET not in err


def test_missing_quotes_fail_with_a_clear_message(tmp_path):
    config_path = write_config(tmp_path, {"quote_store": "parquet"})
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(markets_partitions.name, [TON.key])
        result = materialize(
            [quote_snapshots],
            partition_key=market_day_key(TON, DAYS[0]),
            instance=instance,
            resources=resources(config_path),
            raise_on_error=False,
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert "no quote snapshots for binance:TONUSDT on 2026-11-19" in str(
            failure.event_specific_data.error
        )


@pytest.mark.parametrize("key", ["2026-11-20|binance:TONUSDT"])
def test_partition_keys_are_read_by_dimension(key):
    from rof_pipelines.partitions import market_and_day

    assert market_and_day(key) == (TON, date(2026, 11, 20))
    assert market_and_day(market_day_key("Binance:tonusdt", "2026-11-20")) == (TON, date(2026, 11, 20))
