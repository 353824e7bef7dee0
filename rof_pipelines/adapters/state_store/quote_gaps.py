"""Ranges an exchange served no candles for (table ``quote_gaps``), recorded by a download.

A download asks the exchange for ``[start, end)`` page by page; what the answer says about that range
replaces what was recorded for it before: rows overlapping it go, its gaps come in. So a range once
recorded as a gap (an exchange that lagged, a trailing stretch not served yet) stops being one when a
later download finds candles there, and a gap that narrows is recorded narrower. Times are half-open
``[gap_from, gap_to)`` candle open times, UTC; ``interval`` is the candle interval's text (``1m``).
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from rof_pipelines.adapters.state_store.records import QuoteGapRecord
from rof_pipelines.adapters.state_store.repository import SqlRepository
from rof_pipelines.adapters.state_store.values import SERVICE, market_key, utc
from rof_pipelines.errors import DataValidationError


def quote_gap_rows(
    market: str,
    interval: str,
    start: datetime,
    end: datetime,
    gaps: Sequence[tuple[datetime, datetime]],
    source: str,
) -> tuple[str, datetime, datetime, list[dict[str, Any]]]:
    """The market's key, the answered range and the rows its gaps become, checked: every gap inside
    ``[start, end)``."""
    if not interval or not source:
        raise DataValidationError(f"{SERVICE}: a quote gap needs an interval and a source")
    market = market_key(market)
    start, end = utc(start), utc(end)
    if end <= start:
        raise DataValidationError(f"{SERVICE}: quote gaps of {market}: range {start} .. {end} is empty")
    rows = []
    for gap_from, gap_to in gaps:
        gap_from, gap_to = utc(gap_from), utc(gap_to)
        if not start <= gap_from < gap_to <= end:
            raise DataValidationError(
                f"{SERVICE}: quote gap {gap_from} .. {gap_to} of {market} is not inside the range "
                f"asked, {start} .. {end}"
            )
        rows.append(
            {"market": market, "interval": interval, "gap_from": gap_from, "gap_to": gap_to, "source": source}
        )
    return market, start, end, rows


class SqlQuoteGaps(SqlRepository):
    """``store.quote_gaps``: what downloads found missing at the exchange, for operators (rof quotes gaps)."""

    def record(
        self,
        market: str,
        interval: str,
        start: datetime,
        end: datetime,
        gaps: Sequence[tuple[datetime, datetime]],
        source: str,
    ) -> int:
        """The exchange's answer for ``[start, end)``: exactly ``gaps`` are missing there (the rest has
        candles). Replaces the rows overlapping that range, in one transaction; returns how many went."""
        market, start, end, rows = quote_gap_rows(market, interval, start, end, gaps, source)
        table = self._store.table("quote_gaps")
        delete = sa.delete(table).where(
            table.c.market == market,
            table.c.interval == interval,
            table.c.gap_from < end,
            table.c.gap_to > start,
        )

        def run() -> int:
            with self._engine.begin() as conn:
                removed = conn.execute(delete).rowcount
                if rows:
                    insert = pg_insert(table).values(rows)
                    conn.execute(
                        insert.on_conflict_do_update(
                            constraint="uq_quote_gaps_market_interval_from",
                            set_={
                                "gap_to": insert.excluded.gap_to,
                                "source": insert.excluded.source,
                                "recorded_at": sa.func.now(),
                            },
                        )
                    )
                return removed

        return self._write(run)

    def find(
        self,
        market: str | None = None,
        interval: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[QuoteGapRecord]:
        """Recorded gaps, by market, interval and start; only those overlapping ``[start, end)`` when
        given."""
        table = self._store.table("quote_gaps")
        query = sa.select(table).order_by(table.c.market, table.c.interval, table.c.gap_from)
        if market is not None:
            query = query.where(table.c.market == market_key(market))
        if interval is not None:
            query = query.where(table.c.interval == interval)
        if end is not None:
            query = query.where(table.c.gap_from < utc(end))
        if start is not None:
            query = query.where(table.c.gap_to > utc(start))

        def run() -> list[QuoteGapRecord]:
            with self._engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
            return [QuoteGapRecord(**{k: v for k, v in row.items() if k != "id"}) for row in rows]

        return self._read(run)
