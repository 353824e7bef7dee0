"""Market discovery: the `markets` partitions follow the config and what the quote store holds."""

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from rof_pipelines.adapters.resources import QuoteStoreResource, RofSettings
from rof_pipelines.errors import RofError
from rof_pipelines.partitions import markets_partitions


def wanted_markets(settings: RofSettings, quote_store: QuoteStoreResource) -> list[str]:
    configured = settings.load().storage.markets
    with quote_store.open() as store:
        stored = [market.key for market in store.markets()]
    return sorted(set(configured) | set(stored))


@sensor(
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds markets from config.yaml and from the quote store to the `markets` partitions.",
)
def market_discovery_sensor(
    context: SensorEvaluationContext, settings: RofSettings, quote_store: QuoteStoreResource
):
    try:
        wanted = wanted_markets(settings, quote_store)
    except RofError as exc:
        return SkipReason(f"cannot list markets: {exc}")
    known = set(context.instance.get_dynamic_partitions(markets_partitions.name))
    new = [market for market in wanted if market not in known]
    if not new:
        return SkipReason(f"no new markets ({len(known)} known)")
    context.log.info(f"adding markets: {', '.join(new)}")
    return SensorResult(dynamic_partitions_requests=[markets_partitions.build_add_request(new)])
