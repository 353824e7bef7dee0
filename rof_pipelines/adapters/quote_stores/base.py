"""The one interface every quote store implements, as a template: the base class runs the checks and
shapes the answers, a store fills in ``_write`` / ``_read`` / ``_markets`` / ``_time_range``."""

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Self

import pandas as pd

from rof_pipelines.adapters.metrics import record_load
from rof_pipelines.adapters.quote_stores.validation import validated_quotes
from rof_pipelines.core.market import Market, datetime_to_us, empty_quotes

if TYPE_CHECKING:
    from rof_pipelines.settings import Settings


class QuoteStore(ABC):
    """Quote snapshots per market, read by half-open time range ``[start, end)``.

    Frames in and out use the canonical schema of :mod:`rof_pipelines.core.market`
    (``ts`` UTC microseconds, float64 ``price``, ``bid``, ``ask``, ``volume``; NaN where absent).
    Writes are atomic and idempotent: ``write`` replaces whatever the store held for that market in
    ``[first ts, last ts]`` of the frame, in one transaction, so a failed write leaves nothing behind
    and re-running an import or a generator does not duplicate rows.

    The public methods are concrete and the same for every store: ``write`` validates the whole frame
    before the store sees it and answers 0 for an empty one; ``read`` answers an empty canonical frame
    for ``start >= end`` without asking the store; ``markets`` comes back sorted and ``time_range`` in
    UTC. A store implements the underscored hooks, which only ever see checked input.
    """

    name: str = "abstract"

    @classmethod
    def from_settings(cls, settings: "Settings") -> Self:
        """The store as ``settings`` configure it; used by :func:`open_quote_store` via the registry."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from settings")

    @abstractmethod
    def ensure_schema(self) -> None:
        """Create the table/layout if it does not exist (idempotent)."""

    # -- the contract, the same for every store --------------------------------------------------------

    def write(self, market: Market, quotes: pd.DataFrame) -> int:
        """Store snapshots for one market; return the number of rows written."""
        frame = validated_quotes(market, quotes)
        if frame.empty:
            return 0
        self._write(market, frame)
        return len(frame)

    def read(self, market: Market, start: datetime, end: datetime) -> pd.DataFrame:
        """Snapshots with ``start <= ts < end``, ordered by ts (naive bounds mean UTC)."""
        start_us, end_us = datetime_to_us(start), datetime_to_us(end)
        if start_us >= end_us:
            return empty_quotes()
        started = time.perf_counter()
        frame = self._read(market, start_us, end_us)
        record_load(time.perf_counter() - started, frame)  # data_manager_load_*: pushed by runs
        return empty_quotes() if frame.empty else frame

    def markets(self) -> list[Market]:
        """Markets that have at least one snapshot, sorted."""
        return sorted(set(self._markets()))

    def time_range(self, market: Market) -> tuple[datetime, datetime] | None:
        """First and last snapshot time for a market (UTC), or None if it has none."""
        found = self._time_range(market)
        if found is None:
            return None
        first, last = found
        return first.astimezone(UTC), last.astimezone(UTC)

    # -- what a store implements -----------------------------------------------------------------------

    @abstractmethod
    def _write(self, market: Market, frame: pd.DataFrame) -> None:
        """Replace the market's rows in [first ts, last ts] of ``frame`` with ``frame``, atomically.

        ``frame`` is canonical, validated and not empty."""

    @abstractmethod
    def _read(self, market: Market, start_us: int, end_us: int) -> pd.DataFrame:
        """The market's canonical rows with ``start_us <= ts < end_us`` (epoch microseconds, ``start_us
        < end_us``), ordered by ts."""

    @abstractmethod
    def _markets(self) -> Iterable[Market]:
        """Markets with at least one snapshot, in any order."""

    @abstractmethod
    def _time_range(self, market: Market) -> tuple[datetime, datetime] | None:
        """First and last snapshot time (tz-aware) of a market, or None if it has none."""

    # -- lifecycle --------------------------------------------------------------------------------------

    def describe(self) -> str:
        """A password-free description for logs and Dagster metadata."""
        return self.name

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default holds none."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
