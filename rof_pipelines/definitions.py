"""The one composition root: every asset, check, job, schedule, sensor and resource."""

from dagster import AssetSelection, Definitions, define_asset_job

from rof_pipelines.adapters.io_managers import ParquetFrameIOManager
from rof_pipelines.adapters.resources import QuoteStoreResource, RofSettings, StateStoreResource
from rof_pipelines.defs.indicators.assets import indicator_frame
from rof_pipelines.defs.load_time import pool_tags
from rof_pipelines.defs.ops.backups import state_backup_job, state_backup_schedule
from rof_pipelines.defs.ops.schedules import nightly_optimisation_job, nightly_optimisation_schedule
from rof_pipelines.defs.ops.sensors import market_discovery_sensor
from rof_pipelines.defs.quotes.assets import quote_snapshots
from rof_pipelines.defs.rl.assets import q_table
from rof_pipelines.partitions import market_day_partitions

settings_resource = RofSettings()

market_data_job = define_asset_job(
    "market_data",
    selection=[quote_snapshots, indicator_frame],
    partitions_def=market_day_partitions,
    description="Quote snapshots and indicator frame for one market and day.",
    tags=pool_tags("task_worker"),
)

all_market_day_assets_job = define_asset_job(
    "all_market_day_assets",
    selection=AssetSelection.all(),
    partitions_def=market_day_partitions,
    description="Every asset for one market and day (what `rof demo` runs).",
    tags=pool_tags("ab_optimizer"),
)

defs = Definitions(
    assets=[quote_snapshots, indicator_frame, q_table],
    jobs=[market_data_job, all_market_day_assets_job, nightly_optimisation_job, state_backup_job],
    schedules=[nightly_optimisation_schedule, state_backup_schedule],
    sensors=[market_discovery_sensor],
    resources={
        "settings": settings_resource,
        "quote_store": QuoteStoreResource(settings=settings_resource),
        "state_store": StateStoreResource(settings=settings_resource),
        "frame_io_manager": ParquetFrameIOManager(settings=settings_resource),
    },
)
