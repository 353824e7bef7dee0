"""The quotes domain's jobs: the market data of one market and day, and every asset of it.

Each job is built from the settings read when the code location loads (its worker pool's run tags);
its partitions (date x market) come from the assets it selects, ``market_day_partitions``, and a test
holds each resolved job to them.
"""

from dagster import AssetSelection, define_asset_job

from rof_pipelines.defs.load_time import pool_tags
from rof_pipelines.settings import Settings


def build_market_data_job(at_load: Settings):  # an asset job, whose class Dagster does not export
    return define_asset_job(
        "market_data",
        selection=AssetSelection.groups("quotes", "indicators"),
        description="Quote snapshots and indicator frame for one market and day.",
        tags=pool_tags(at_load, "task_worker"),
    )


def build_all_market_day_assets_job(at_load: Settings):
    return define_asset_job(
        "all_market_day_assets",
        selection=AssetSelection.all(),
        description="Every asset for one market and day: what `rof demo` runs and what new quotes rerun.",
        tags=pool_tags(at_load, "ab_optimizer"),
    )
