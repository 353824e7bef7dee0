"""The quotes domain: quote snapshots (with their checks), the jobs over one market and day, market
discovery, the `quotes.updated` queue, and the scheduled exchange ingest (ingest.markets)."""

from dagster import Definitions

from rof_pipelines.defs.quotes.assets import quote_snapshots
from rof_pipelines.defs.quotes.ingest import build_exchange_ingest_job, build_exchange_ingest_schedules
from rof_pipelines.defs.quotes.jobs import build_all_market_day_assets_job, build_market_data_job
from rof_pipelines.defs.quotes.sensors import build_quotes_updated_sensor, market_discovery_sensor
from rof_pipelines.settings import Settings


def domain_definitions(at_load: Settings) -> Definitions:
    all_market_day_assets_job = build_all_market_day_assets_job(at_load)
    ingest_job = build_exchange_ingest_job(at_load)
    return Definitions(
        assets=[quote_snapshots],
        jobs=[build_market_data_job(at_load), all_market_day_assets_job, ingest_job],
        schedules=build_exchange_ingest_schedules(at_load, ingest_job),
        sensors=[market_discovery_sensor, build_quotes_updated_sensor(at_load, all_market_day_assets_job)],
    )
