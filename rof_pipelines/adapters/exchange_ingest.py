"""One scheduled fetch of a market configured in ``ingest.markets``: its newest candles (and a
top-of-book snapshot, when configured) into the quote store, and the ``quotes.updated`` messages
that rerun the finished days it touched, through the same queue and inbox rules as any producer.

A day's partition exists once the day is over, so candles of today are written but announced only
after midnight: the first fetch of a new day writes the last candles of the day before, and its
message reruns that whole day once.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import pandas as pd

from rof_pipelines.adapters.exchanges import (
    DownloadResult,
    ExchangeClient,
    GapLedger,
    download_candles,
    fetch_top_of_book,
)
from rof_pipelines.adapters.messages import Message, build_message
from rof_pipelines.adapters.metrics import record_ingest
from rof_pipelines.adapters.quote_stores.base import QuoteStore
from rof_pipelines.core.market import Market
from rof_pipelines.errors import ConfigError
from rof_pipelines.settings import IngestMarketConfig, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOutcome:
    market: str
    download: DownloadResult
    book_snapshot: bool
    lag_seconds: float | None  # the exchange's now minus the close of the newest stored candle
    messages: list[Message]  # quotes.updated for the finished days written, in order


def ingest_entry(settings: Settings, market: str, interval: timedelta | None = None) -> IngestMarketConfig:
    """The ``ingest.markets`` entry of ``market`` (and ``interval``, when a market is listed twice)."""
    key = Market.parse(market).key
    found = [e for e in settings.ingest.markets if e.market == key and interval in (None, e.interval)]
    if len(found) != 1:
        listed = ", ".join(f"{e.market} {e.interval}" for e in settings.ingest.markets) or "none"
        raise ConfigError(f"{key}: not (or not once) in ingest.markets; listed: {listed}")
    return found[0]


def updated_messages(
    market: Market, start: datetime, end: datetime, *, first_day: date, today: date, max_days: int
) -> list[Message]:
    """``quotes.updated`` for [start, end) cut to the finished partition days (from ``first_day`` to
    yesterday), in messages of at most ``max_days`` days each; none when no finished day is touched."""
    start = max(start, datetime.combine(first_day, time.min, tzinfo=UTC))
    end = min(end, datetime.combine(today, time.min, tzinfo=UTC))
    messages: list[Message] = []
    while start < end:
        chunk_end = min(end, datetime.combine(start.date() + timedelta(days=max_days), time.min, tzinfo=UTC))
        messages.append(build_message("quotes.updated", market=market.key, start=start, end=chunk_end))
        start = chunk_end
    return messages


def ingest_market(
    settings: Settings,
    store: QuoteStore,
    entry: IngestMarketConfig,
    *,
    first_day: date,
    today: date,
    gap_ledger: GapLedger | None = None,
) -> IngestOutcome:
    """Fetch ``entry``'s market once; see the module docstring. Writes are idempotent, so a fetch
    that fails half-way is repeated by the next one from the newest stored candle. Gaps in the
    exchange's answer go to ``gap_ledger`` (``store.quote_gaps``) as ``ingest``."""
    market = Market.parse(entry.market)
    since = datetime.combine(entry.since, time.min, tzinfo=UTC) if entry.since else None
    rabbit = settings.storage.rabbitmq
    with ExchangeClient.from_settings(settings, market.exchange) as client:
        result = download_candles(
            store,
            client,
            market,
            entry.interval,
            since=since,
            keep_book=entry.top_of_book,
            gap_ledger=gap_ledger,
            source="ingest",
        )
        book = False
        if entry.top_of_book:
            store.write(market, fetch_top_of_book(client, market))
            book = True
        now_ms = client.now_ms()
    newest = result.last_ts  # the newest candle's open: this fetch's, else the store's
    if newest is None and (stored := store.time_range(market)) is not None:
        newest = pd.Timestamp(stored[1]).floor(entry.interval).to_pydatetime()
    lag = None if newest is None else max(0.0, now_ms / 1000 - (newest + entry.interval).timestamp())
    messages: list[Message] = []
    if result.first_ts is not None and result.last_ts is not None:
        messages = updated_messages(
            market,
            result.first_ts,
            result.last_ts + entry.interval,
            first_day=first_day,
            today=today,
            max_days=min(rabbit.max_days_per_message, rabbit.max_runs_per_message),
        )
    record_ingest(result.candles_written, lag, result.rate_limit_waits)
    log.info("%s; %d quotes.updated message(s)", result.summary(), len(messages))
    return IngestOutcome(market.key, result, book, lag, messages)
