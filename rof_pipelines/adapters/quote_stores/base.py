"""The one interface every quote store implements."""

from abc import ABC, abstractmethod
from datetime import datetime

import pandas as pd

from rof_pipelines.core.market import Market


class QuoteStore(ABC):
    """Quote snapshots per market, read by half-open time range ``[start, end)``.

    Frames in and out use the canonical schema of :mod:`rof_pipelines.core.market`
    (``ts`` UTC microseconds, float64 ``price``, ``bid``, ``ask``, ``volume``; NaN where absent).
    Writes are atomic and idempotent: ``write`` replaces whatever the store held for that market in
    ``[first ts, last ts]`` of the frame, in one transaction, so a failed write leaves nothing behind
    and re-running an import or a generator does not duplicate rows.
    """

    name: str = "abstract"

    @abstractmethod
    def ensure_schema(self) -> None:
        """Create the table/layout if it does not exist (idempotent)."""

    @abstractmethod
    def write(self, market: Market, quotes: pd.DataFrame) -> int:
        """Store snapshots for one market; return the number of rows written."""

    @abstractmethod
    def read(self, market: Market, start: datetime, end: datetime) -> pd.DataFrame:
        """Snapshots with ``start <= ts < end``, ordered by ts."""

    @abstractmethod
    def markets(self) -> list[Market]:
        """Markets that have at least one snapshot, sorted."""

    @abstractmethod
    def time_range(self, market: Market) -> tuple[datetime, datetime] | None:
        """First and last snapshot time for a market, or None if it has none."""

    def describe(self) -> str:
        """A password-free description for logs and Dagster metadata."""
        return self.name

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default holds none."""

    def __enter__(self) -> "QuoteStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
