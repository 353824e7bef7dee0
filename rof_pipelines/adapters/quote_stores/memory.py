"""The in-memory quote store: the same contract as the real stores, held in this process only.

For tests about Dagster wiring rather than a database: a run executed in process (``materialize``,
``execute_in_process``) opens the store once per asset, so stores opened with the same ``space``
share their data, like connections to one database. ``from_settings`` takes the space from
``storage.data_dir``, so each test's data directory is a database of its own. Nothing survives the
process; do not configure it for ``dagster dev`` (runs there are separate processes).
"""

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rof_pipelines.adapters.quote_stores.base import QuoteStore
from rof_pipelines.core.market import Market, empty_quotes, ts_to_us, us_to_datetime

if TYPE_CHECKING:
    from rof_pipelines.settings import Settings


@dataclass
class _Series:
    """One market's rows, sorted by ts, with their epoch microseconds beside them for the filters."""

    frame: pd.DataFrame
    ts_us: np.ndarray


@dataclass
class _Space:
    series: dict[Market, _Series] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_SPACES: dict[str, _Space] = {}
_SPACES_LOCK = threading.Lock()


def _space(name: str) -> _Space:
    with _SPACES_LOCK:
        return _SPACES.setdefault(name, _Space())


class MemoryQuoteStore(QuoteStore):
    """Quotes in a process-wide dictionary named ``space``; a write swaps in a whole new frame for the
    market under the space's lock, so it is atomic and readers never see half of it."""

    name = "memory"

    def __init__(self, space: str = "default"):
        self.space = space
        self._data = _space(space)

    @classmethod
    def from_settings(cls, settings: "Settings") -> "MemoryQuoteStore":
        return cls(str(settings.storage.resolved_data_dir()))

    @classmethod
    def drop_space(cls, space: str) -> None:
        """Forget everything stored under ``space`` (a test's teardown)."""
        with _SPACES_LOCK:
            _SPACES.pop(space, None)

    def describe(self) -> str:
        return f"memory:{self.space}"

    def __repr__(self) -> str:
        return f"MemoryQuoteStore({self.space!r})"

    def ensure_schema(self) -> None:
        """Nothing to create."""

    def _write(self, market: Market, frame: pd.DataFrame) -> None:
        fresh_us = ts_to_us(frame["ts"])
        low, high = fresh_us.min(), fresh_us.max()
        with self._data.lock:
            held = self._data.series.get(market)
            if held is not None:
                outside = (held.ts_us < low) | (held.ts_us > high)
                frame = pd.concat([held.frame.loc[outside], frame], ignore_index=True)
            frame = frame.sort_values("ts", kind="stable").reset_index(drop=True).copy()
            self._data.series[market] = _Series(frame, ts_to_us(frame["ts"]))

    def _read(self, market: Market, start_us: int, end_us: int) -> pd.DataFrame:
        with self._data.lock:
            held = self._data.series.get(market)
        if held is None:
            return empty_quotes()
        inside = (held.ts_us >= start_us) & (held.ts_us < end_us)
        return held.frame.loc[inside].reset_index(drop=True).copy()

    def _markets(self) -> list[Market]:
        with self._data.lock:
            return [market for market, held in self._data.series.items() if len(held.ts_us)]

    def _time_range(self, market: Market) -> tuple[datetime, datetime] | None:
        with self._data.lock:
            held = self._data.series.get(market)
        if held is None or not len(held.ts_us):
            return None
        return us_to_datetime(held.ts_us[0]), us_to_datetime(held.ts_us[-1])
