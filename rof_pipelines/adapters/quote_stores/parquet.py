"""The embedded default quote store: a local Parquet dataset, one file per market and day.

Layout: ``{root}/exchange={exchange}/pair={PAIR}/date={YYYY-MM-DD}/part-0.parquet`` (hive-style, so
pyarrow, DuckDB or pandas can read it directly). It needs no server, which is why ``rof demo`` and
``dagster dev`` use it out of the box.
"""

import fcntl
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from rof_pipelines.adapters.quote_stores.base import QuoteStore
from rof_pipelines.core.market import QUOTE_COLUMNS, Market, empty_quotes, ts_to_us, us_to_datetime
from rof_pipelines.errors import ErrorMap, ErrorRule, PermanentError

if TYPE_CHECKING:
    from rof_pipelines.settings import Settings

SERVICE = "parquet"
US_PER_DAY = 86_400 * 1_000_000
# What a write stages beside a day file before renaming it into place: ".part-0.parquet.<pid>.tmp".
_TEMP_NAME_RE = re.compile(r"^\.part-\d+\.parquet\.\d+\.tmp$")
_SCHEMA = pa.schema(
    [("ts", pa.timestamp("us", tz="UTC"))] + [(col, pa.float64()) for col in QUOTE_COLUMNS[1:]]
)

# The failures of reading a day file: the disk, or a file that is not (whole) Parquet. Neither goes
# away by trying again, and no breaker guards a local directory.
FILE_ERROR_TYPES: tuple[type[BaseException], ...] = (OSError, pa.ArrowInvalid)
PARQUET_FILE_ERRORS = ErrorMap("parquet files", [ErrorRule(FILE_ERROR_TYPES, PermanentError)])


class ParquetQuoteStore(QuoteStore):
    """Quotes as day files under ``root``; a write stages every file it changes, then renames them into
    place, under a per-market file lock (one writer per market across processes)."""

    name = "parquet"

    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def from_settings(cls, settings: "Settings") -> "ParquetQuoteStore":
        return cls(settings.storage.resolved_data_dir() / "quotes")

    def describe(self) -> str:
        return f"parquet:{self.root}"

    def ensure_schema(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    # -- paths --

    def _market_dir(self, market: Market) -> Path:
        return self.root / f"exchange={market.exchange}" / f"pair={market.pair}"

    def _day_file(self, market: Market, day: date) -> Path:
        return self._market_dir(market) / f"date={day.isoformat()}" / "part-0.parquet"

    @contextmanager
    def _locked(self, market: Market) -> Iterator[None]:
        """One writer per market at a time, across processes."""
        directory = self._market_dir(market)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def _reading(self, what: object, operation: str) -> Iterator[None]:
        """File errors while reading ``what`` -> the project's, tagged with the store and operation."""
        try:
            yield
        except FILE_ERROR_TYPES as exc:
            raise PARQUET_FILE_ERRORS.translate(
                exc, service=SERVICE, label=f"{self.describe()}: cannot read {what}", operation=operation
            ) from exc

    def _read_file(self, path: Path, operation: str) -> pd.DataFrame:
        with self._reading(path, operation):
            table = pq.read_table(path, schema=_SCHEMA)
        return table.to_pandas()

    # -- the store's part of the contract --

    def _write(self, market: Market, frame: pd.DataFrame) -> None:
        ts_us = ts_to_us(frame["ts"])
        low, high = int(ts_us.min()), int(ts_us.max())
        day_of_row = ts_us // US_PER_DAY
        staged: list[tuple[Path, Path]] = []
        with self._locked(market):
            self._sweep_temp_files(market)
            try:
                for day_number in np.unique(day_of_row):
                    day = date(1970, 1, 1) + timedelta(days=int(day_number))
                    target = self._day_file(market, day)
                    fresh = frame.loc[day_of_row == day_number]
                    if target.exists():
                        kept = self._read_file(target, "write")
                        kept_us = ts_to_us(kept["ts"])
                        kept = kept.loc[(kept_us < low) | (kept_us > high)]
                        fresh = pd.concat([kept, fresh], ignore_index=True)
                    fresh = fresh.sort_values("ts", kind="stable")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                    staged.append((temp, target))  # before writing: a half-written temp is removed too
                    pq.write_table(
                        pa.Table.from_pandas(fresh, schema=_SCHEMA, preserve_index=False),
                        temp,
                        compression="zstd",
                    )
                # Days inside the replaced range that the new frame does not touch lose their rows too.
                for path in self._day_files(market, us_to_datetime(low), us_to_datetime(high + 1)):
                    if path not in {target for _, target in staged}:
                        kept = self._read_file(path, "write")
                        kept_us = ts_to_us(kept["ts"])
                        kept = kept.loc[(kept_us < low) | (kept_us > high)]
                        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                        staged.append((temp, path))
                        pq.write_table(pa.Table.from_pandas(kept, schema=_SCHEMA, preserve_index=False), temp)
                for temp, target in staged:  # every file is complete before any replaces its target
                    os.replace(temp, target)
            except BaseException:  # an error or an interrupt: nothing staged stays behind
                for temp, _ in staged:
                    temp.unlink(missing_ok=True)
                raise

    def _sweep_temp_files(self, market: Market) -> list[Path]:
        """Remove the temp files a killed writer of ``market`` left beside its day files (a SIGKILL runs
        no cleanup). Called with the market's lock held, so no live writer owns one; only names this
        store stages (``.part-N.parquet.<pid>.tmp``) are touched. Returns what was removed."""
        removed = []
        for day_dir in self._market_dir(market).glob("date=*"):
            for child in day_dir.iterdir() if day_dir.is_dir() else ():
                if _TEMP_NAME_RE.match(child.name) and child.is_file() and not child.is_symlink():
                    child.unlink(missing_ok=True)
                    removed.append(child)
        return removed

    def _day_files(self, market: Market, start: datetime, end: datetime) -> list[Path]:
        directory = self._market_dir(market)
        if not directory.exists():
            return []
        first = _as_utc(start).date()
        last = (_as_utc(end) - timedelta(microseconds=1)).date()
        files = []
        for child in sorted(directory.glob("date=*/part-0.parquet")):
            try:
                day = date.fromisoformat(child.parent.name.removeprefix("date="))
            except ValueError:
                continue
            if first <= day <= last:
                files.append(child)
        return files

    def _read(self, market: Market, start_us: int, end_us: int) -> pd.DataFrame:
        """One dataset scan over the range's day files (pyarrow reads them on its thread pool), so a
        two-year window is one call, not hundreds of sequential file reads."""
        low, high = start_us, end_us
        files = self._day_files(market, us_to_datetime(start_us), us_to_datetime(end_us))
        if not files:
            return empty_quotes()
        with self._reading(f"{market} files", "read"):
            dataset = ds.dataset([str(path) for path in files], schema=_SCHEMA, format="parquet")
            ts = ds.field("ts")
            table = dataset.to_table(
                filter=(ts >= pa.scalar(low, pa.timestamp("us", tz="UTC")))
                & (ts < pa.scalar(high, pa.timestamp("us", tz="UTC")))
            )
        frame = table.to_pandas()
        return frame.sort_values("ts", kind="stable").reset_index(drop=True)

    def _markets(self) -> list[Market]:
        found = []
        for pair_dir in self.root.glob("exchange=*/pair=*"):
            if any(pair_dir.glob("date=*/part-0.parquet")):
                exchange = pair_dir.parent.name.removeprefix("exchange=")
                found.append(Market(exchange, pair_dir.name.removeprefix("pair=")))
        return found

    def _time_range(self, market: Market) -> tuple[datetime, datetime] | None:
        files = self._day_files(market, datetime(1970, 1, 2, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC))
        first = next((ts.min() for ts in self._ts_columns(files) if len(ts)), None)
        last = next((ts.max() for ts in self._ts_columns(reversed(files)) if len(ts)), None)
        if first is None or last is None:
            return None
        return first.to_pydatetime(), last.to_pydatetime()

    def _ts_columns(self, files: Iterable[Path]) -> Iterator[pd.Series]:
        for path in files:
            yield self._read_file(path, "time_range")["ts"]


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
