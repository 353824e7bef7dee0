"""Jobs, each in one of the worker pools (run tags ``rof/pool``; limits in deploy/dagster.yaml).

The jobs take their partitions (date x market) from the assets they select; every asset here shares
``market_day_partitions``, and a test holds each resolved job to it.
"""

from dagster import AssetSelection, define_asset_job

from rof_pipelines.defs.load_time import pool_tags

market_data_job = define_asset_job(
    "market_data",
    selection=AssetSelection.groups("quotes", "indicators"),
    description="Quote snapshots and indicator frame for one market and day.",
    tags=pool_tags("task_worker"),
)

all_market_day_assets_job = define_asset_job(
    "all_market_day_assets",
    selection=AssetSelection.all(),
    description="Every asset for one market and day: what `rof demo` runs and what new quotes rerun.",
    tags=pool_tags("ab_optimizer"),
)

nightly_optimisation_job = define_asset_job(
    "nightly_optimisation",
    selection=AssetSelection.all(),
    description="Everything for one market and day: quotes, indicators, agent, optimisation, A/B test. "
    "Run nightly for yesterday and on `tasks` messages.",
    tags=pool_tags("ab_optimizer"),
)
