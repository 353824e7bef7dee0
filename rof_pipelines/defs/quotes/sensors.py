"""The quotes domain's sensors: market discovery, and the `quotes.updated` queue that reruns what
new quotes touch."""

from typing import Any

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from rof_pipelines.adapters.inbox import InboxRow
from rof_pipelines.adapters.messages import QuotesUpdatedMessage, planned_runs
from rof_pipelines.adapters.resources import QuoteStoreResource, RofSettings
from rof_pipelines.defs.messaging import MAX_REQUESTS_PER_ROW, message_tags, queue_sensor
from rof_pipelines.errors import RofError, UnrunnableMessage
from rof_pipelines.partitions import last_partition_day, market_day_key, markets_partitions
from rof_pipelines.settings import Settings


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


def quotes_updated_requests(row: InboxRow) -> list[RunRequest]:
    """Rerun every day the new quotes touch (and, through the job, what depends on them); today's
    partition does not exist yet, so today is left to the nightly run once it is over."""
    payload = row.payload
    message = QuotesUpdatedMessage.model_validate(payload)
    last_day = last_partition_day()
    runs = planned_runs(message, last_day)
    if runs > MAX_REQUESTS_PER_ROW:  # checked before building them: an old row may span centuries
        raise UnrunnableMessage(f"asks for {runs} runs, more than any configuration allows")
    days = message.run_days(last_day)
    return [
        RunRequest(
            run_key=f"{row.message_id}:{day.isoformat()}",
            partition_key=market_day_key(payload["market"], day),
            tags=message_tags(row, **{"rof/market": payload["market"], "rof/date": day.isoformat()}),
        )
        for day in days
    ]


def build_quotes_updated_sensor(at_load: Settings, all_market_day_assets_job: Any) -> SensorDefinition:
    """``quotes_updated_messages_sensor``: runs ``all_market_day_assets`` for each message."""
    return queue_sensor(
        "quotes.updated",
        all_market_day_assets_job,
        "ab_optimizer",
        quotes_updated_requests,
        "`quotes.updated` queue: rerun every market/day the new quotes touch, and what depends on them.",
        at_load,
    )
