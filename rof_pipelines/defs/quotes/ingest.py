"""``exchange_ingest``: the newest candles of one market from its exchange (ingest.markets), and a
schedule per configured market that runs it every ``every_minutes``. What it writes reaches the rest
of the pipeline as ``quotes.updated`` messages on RabbitMQ, so the quotes sensor's inbox rules
(deduplication, limits, dead letters) apply exactly as for any other producer."""

import time
from datetime import timedelta
from typing import Any, Optional

from dagster import (
    Config,
    DefaultScheduleStatus,
    Failure,
    JobDefinition,
    OpExecutionContext,
    Output,
    RetryPolicy,
    ScheduleDefinition,
    job,
    op,
)

from rof_pipelines.adapters.exchange_ingest import ingest_entry, ingest_market
from rof_pipelines.adapters.pushgateway import pusher_for
from rof_pipelines.adapters.resources import (
    QuoteStoreResource,
    RabbitMQResource,
    RofSettings,
    StateStoreResource,
)
from rof_pipelines.config_types import parse_duration
from rof_pipelines.core.market import Market, duration_text
from rof_pipelines.defs.load_time import pool_tags, step_tags
from rof_pipelines.errors import TransientError
from rof_pipelines.partitions import HISTORY_START, last_partition_day
from rof_pipelines.settings import IngestMarketConfig, Settings

PUBLISH_ATTEMPTS = 3
PUBLISH_RETRY_SECONDS = 5.0


class ExchangeIngestConfig(Config):
    """Which ``ingest.markets`` entry to fetch (its interval only when the market is listed twice)."""

    market: str
    interval: Optional[str] = None  # noqa: UP045 - Dagster's config schema needs Optional


@op(
    description="Fetch a market's newest candles from its exchange into the quote store, then announce "
    "the finished days written as quotes.updated.",
    tags=step_tags("task_worker"),
    # The exchange's own waits (rate limit, maintenance) happen inside the fetch; a failed fetch is
    # repeated by the next tick from the newest stored candle, so one retry is enough here.
    retry_policy=RetryPolicy(max_retries=1, delay=30),
)
def fetch_exchange_quotes(
    context: OpExecutionContext,
    config: ExchangeIngestConfig,
    settings: RofSettings,
    quote_store: QuoteStoreResource,
    state_store: StateStoreResource,
    rabbitmq: RabbitMQResource,
):
    loaded = settings.load()
    interval = parse_duration(config.interval) if config.interval else None
    entry = ingest_entry(loaded, config.market, interval)
    market = Market.parse(entry.market)
    with quote_store.open() as store, state_store.open() as state:
        store.ensure_schema()
        outcome = ingest_market(
            loaded,
            store,
            entry,
            first_day=HISTORY_START,
            today=last_partition_day() + timedelta(days=1),
            gap_ledger=state.quote_gaps,
        )
    published = _publish(context, rabbitmq, outcome.messages) if outcome.messages else []
    pusher = pusher_for(loaded.system_setup, pool="task_worker", market=market.key, asset="exchange_ingest")
    if pusher is not None:
        pusher.push(force=True)
    result = outcome.download
    context.log.info(result.summary())
    return Output(
        None,
        metadata={
            "market": market.key,
            "interval": result.interval,
            "candles_written": result.candles_written,
            "pages": result.pages,
            "first_candle": str(result.first_ts) if result.first_ts else "",
            "last_candle": str(result.last_ts) if result.last_ts else "",
            "gaps": [f"{a.isoformat()} .. {b.isoformat()}" for a, b in result.gaps],
            "lag_seconds": outcome.lag_seconds if outcome.lag_seconds is not None else -1.0,
            "rate_limit_waits": result.rate_limit_waits,
            "top_of_book_snapshot": outcome.book_snapshot,
            "quotes_updated_published": published,
        },
    )


def _range_text(message: Any) -> str:
    return f"{message.market} {message.start.isoformat()} .. {message.end.isoformat()}"


def _publish(context: OpExecutionContext, rabbitmq: RabbitMQResource, messages: list) -> list[str]:
    """The messages, confirmed by the broker. The candles are stored already: if the broker stays
    down, the step fails (not retried) naming the commands that publish them by hand."""
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            rabbit = rabbitmq.open()
            rabbit.declare_topology()
            rabbit.publish_many(messages)
            return [_range_text(m) for m in messages]
        except TransientError as exc:
            if attempt == PUBLISH_ATTEMPTS:
                ranges = "; ".join(
                    f"rof publish quotes-updated -m {m.market} --start {m.start.isoformat()} --end "
                    f"{m.end.isoformat()}"
                    for m in messages
                )
                # Not retried: a rerun would find the candles stored and announce nothing.
                raise Failure(
                    description=f"candles stored, but quotes.updated could not be published ({exc}); "
                    f"the days will not rerun until it is: {ranges}",
                    metadata={"unpublished": [_range_text(m) for m in messages]},
                    allow_retries=False,
                ) from exc
            context.log.warning(
                f"quotes.updated publish failed ({exc}); attempt {attempt + 1} in {PUBLISH_RETRY_SECONDS:g} s"
            )
            time.sleep(PUBLISH_RETRY_SECONDS)
    return []


def build_exchange_ingest_job(at_load: Settings) -> JobDefinition:
    @job(
        name="exchange_ingest",
        description="The newest candles of one ingest.markets market from its exchange (ccxt, public "
        "market data only), announced as quotes.updated.",
        tags=pool_tags(at_load, "task_worker"),
    )
    def exchange_ingest() -> None:
        fetch_exchange_quotes()

    return exchange_ingest


def schedule_name(entry: IngestMarketConfig) -> str:
    """``exchange_ingest_binance_btcusdt_1m``: Dagster names allow letters, digits and ``_`` only."""
    raw = f"exchange_ingest_{entry.market}_{duration_text(entry.interval)}".lower()
    return "".join(ch if ch.isalnum() else "_" for ch in raw)


def build_exchange_ingest_schedules(at_load: Settings, ingest_job: JobDefinition) -> list[ScheduleDefinition]:
    """One schedule per ingest.markets entry, as the code location loaded them (running by default:
    listing a market there is asking for it)."""
    return [
        ScheduleDefinition(
            name=schedule_name(entry),
            job=ingest_job,
            cron_schedule=entry.cron,
            execution_timezone="UTC",
            default_status=DefaultScheduleStatus.RUNNING,
            run_config={
                "ops": {
                    "fetch_exchange_quotes": {
                        "config": {"market": entry.market, "interval": duration_text(entry.interval)}
                    }
                }
            },
            description=f"{entry.market} {duration_text(entry.interval)} candles every "
            f"{entry.every_minutes} min{' with top of book' if entry.top_of_book else ''} (ingest.markets).",
            tags={"rof/trigger": "schedule", "rof/market": entry.market},
        )
        for entry in at_load.ingest.markets
    ]
