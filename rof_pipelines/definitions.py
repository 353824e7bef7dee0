"""The one composition root: every asset, check, job, schedule, sensor and resource."""

import warnings

from dagster import AssetSelection, BetaWarning, Definitions, PreviewWarning, define_asset_job

from rof_pipelines.adapters.io_managers import ParquetFrameIOManager
from rof_pipelines.adapters.resources import QuoteStoreResource, RofSettings
from rof_pipelines.defs.indicators.assets import indicator_frame
from rof_pipelines.defs.ops.sensors import market_discovery_sensor
from rof_pipelines.defs.quotes.assets import quote_snapshots
from rof_pipelines.partitions import market_day_partitions

# Partitioned asset checks and MultiPartitionMapping are Dagster beta/preview features we rely on
# deliberately; their warnings would otherwise repeat on every load.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)

settings_resource = RofSettings()

market_data_job = define_asset_job(
    "market_data",
    selection=[quote_snapshots, indicator_frame],
    partitions_def=market_day_partitions,
    description="Quote snapshots and indicator frame for one market and day.",
)

all_market_day_assets_job = define_asset_job(
    "all_market_day_assets",
    selection=AssetSelection.all(),
    partitions_def=market_day_partitions,
    description="Every asset for one market and day (what `rof demo` runs).",
)

defs = Definitions(
    assets=[quote_snapshots, indicator_frame],
    jobs=[market_data_job, all_market_day_assets_job],
    sensors=[market_discovery_sensor],
    resources={
        "settings": settings_resource,
        "quote_store": QuoteStoreResource(settings=settings_resource),
        "frame_io_manager": ParquetFrameIOManager(settings=settings_resource),
    },
)
