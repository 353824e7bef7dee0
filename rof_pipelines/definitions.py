"""The one composition root: every asset, check, job, schedule, sensor and resource."""

from dagster import Definitions

from rof_pipelines.adapters.io_managers import ParquetFrameIOManager
from rof_pipelines.adapters.resources import (
    QuoteStoreResource,
    RabbitMQResource,
    RofSettings,
    StateStoreResource,
)
from rof_pipelines.defs.experiments.assets import ab_report, strategy_knowledge
from rof_pipelines.defs.indicators.assets import indicator_frame
from rof_pipelines.defs.jobs import all_market_day_assets_job, market_data_job, nightly_optimisation_job
from rof_pipelines.defs.ops.backups import state_backup_job, state_backup_schedule
from rof_pipelines.defs.ops.config_reload import config_reload_sensor
from rof_pipelines.defs.ops.messaging import backup_sensor, quotes_updated_sensor, tasks_sensor
from rof_pipelines.defs.ops.schedules import nightly_optimisation_schedule
from rof_pipelines.defs.ops.sensors import market_discovery_sensor
from rof_pipelines.defs.optimisation.assets import ga_population
from rof_pipelines.defs.quotes.assets import quote_snapshots
from rof_pipelines.defs.rl.assets import q_table

settings_resource = RofSettings()

defs = Definitions(
    assets=[quote_snapshots, indicator_frame, q_table, ga_population, ab_report, strategy_knowledge],
    jobs=[market_data_job, all_market_day_assets_job, nightly_optimisation_job, state_backup_job],
    schedules=[nightly_optimisation_schedule, state_backup_schedule],
    sensors=[
        market_discovery_sensor,
        tasks_sensor,
        quotes_updated_sensor,
        backup_sensor,
        config_reload_sensor,
    ],
    resources={
        "settings": settings_resource,
        "quote_store": QuoteStoreResource(settings=settings_resource),
        "state_store": StateStoreResource(settings=settings_resource),
        "rabbitmq": RabbitMQResource(settings=settings_resource),
        "frame_io_manager": ParquetFrameIOManager(settings=settings_resource),
    },
)
