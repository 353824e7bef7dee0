"""What the Dagster tests share: resources from one config file, quotes in its store, one market-day
materialised, and a materialisation's metadata."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from dagster import AssetKey, DagsterInstance, materialize

from rof_pipelines.adapters.io_managers import ParquetFrameIOManager
from rof_pipelines.adapters.quote_stores import open_quote_store
from rof_pipelines.adapters.resources import (
    PostgresStateStoreResource,
    QuoteStoreResource,
    RofSettings,
    StateStoreResource,
)
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import generate_quotes
from rof_pipelines.partitions import market_day_key, markets_partitions
from rof_pipelines.settings import load_settings


def resources_for(config_path: Path, state_store: StateStoreResource | None = None) -> dict[str, Any]:
    """The production resources on one config file; ``state_store`` replaces the PostgreSQL state
    store (an :class:`InMemoryStateStoreResource` in tests about wiring)."""
    settings = RofSettings(config_path=str(config_path))
    return {
        "settings": settings,
        "quote_store": QuoteStoreResource(settings=settings),
        "state_store": state_store or PostgresStateStoreResource(settings=settings),
        "frame_io_manager": ParquetFrameIOManager(settings=settings),
    }


def fill_quotes(config_path: Path, market: Market, day: date, days_before: int = 1, seed: int = 9) -> None:
    """Generated quotes for ``day`` and the days before it, unless the store already holds some."""
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    with open_quote_store(load_settings(config_path, environ={})) as store:
        store.ensure_schema()
        if store.time_range(market) is None:
            store.write(
                market,
                generate_quotes(
                    market, start - timedelta(days=days_before), start + timedelta(days=1), seed=seed
                ),
            )


def materialize_market_day(
    config_path: Path,
    instance: DagsterInstance,
    assets: list[Any],
    market: Market,
    day: date,
    run_config: dict[str, Any] | None = None,
    raise_on_error: bool = True,
    state_store: StateStoreResource | None = None,
):
    fill_quotes(config_path, market, day)
    instance.add_dynamic_partitions(markets_partitions.name, [market.key])
    return materialize(
        assets,
        partition_key=market_day_key(market, day),
        instance=instance,
        run_config=run_config,
        resources=resources_for(config_path, state_store),
        raise_on_error=raise_on_error,
    )


def asset_metadata(result, asset: str) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key == AssetKey(asset):
            return {key: value.value for key, value in materialization.metadata.items()}
    raise AssertionError(f"{asset} was not materialised")
