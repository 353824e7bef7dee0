"""Reading a user's quote file (CSV or Parquet) for ``rof quotes import``.

Two kinds are understood: snapshot files (ts, price, optional bid/ask/volume) and OHLCV candle files
(ts/open_time, open, high, low, close, volume), including an exchange's header-less kline CSV export
and what pandas writes (``df.to_csv()`` puts the timestamp index in an unnamed first column).
Timestamps with a zone and epoch numbers are UTC; naive ones need ``tz``. The whole file is validated
before the store sees any of it (every problem is reported at once), and the store writes it in one
transaction, so a bad file writes nothing.
"""

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from rof_pipelines.adapters.quote_stores.base import QuoteStore
from rof_pipelines.core.market import Market, duration_text, ts_to_us
from rof_pipelines.core.quotes import (
    US_PER_DAY,
    candles_to_snapshots,
    detect_kind,
    normalise_columns,
    resolve_zone,
    snapshots_from_table,
    validate_candles,
)
from rof_pipelines.errors import BarIntervalTooFine, DataValidationError

# Column order of a header-less kline export (open time first, in milliseconds or microseconds).
KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
    "ignore",
)


@dataclass(frozen=True)
class ImportResult:
    market: str
    kind: str
    rows_in_file: int
    snapshots_written: int
    first_ts: str
    last_ts: str
    candle_interval: str | None
    # UTC days the file covers, so the caller can tell which daily partitions it fills.
    first_day: str
    last_day: str
    days: int  # distinct UTC days holding data (gaps such as weekends are not counted)
    candle_interval_note: str | None = None  # "given by --interval" or how it was inferred


@dataclass(frozen=True)
class PreparedImport:
    snapshots: pd.DataFrame  # canonical, validated
    kind: str
    rows_in_file: int
    candle_interval: timedelta | None
    candle_interval_note: str | None


def _looks_headerless(path: Path, sep: str) -> bool:
    """A first line made only of numbers is data, as in an exchange's kline export."""
    first = pd.read_csv(path, header=None, nrows=1, dtype=str, sep=sep, keep_default_na=False)
    fields = [str(field).strip() for field in first.iloc[0]] if len(first) else []
    try:
        [float(field) for field in fields if field]
    except ValueError:
        return False
    return any(fields)


def read_quote_table(path: Path) -> tuple[pd.DataFrame, int]:
    """The file as a table of strings/values, and the file line number of its first data row.

    A Parquet file's DatetimeIndex (``df.to_parquet()``) comes back as a column named after it,
    or ``index`` when it has no name."""
    if not path.exists():
        raise DataValidationError(f"{path}: no such file")
    suffixes = "".join(path.suffixes).lower()
    try:
        if suffixes.endswith(".parquet") or suffixes.endswith(".pq"):
            table = pd.read_parquet(path)
            if isinstance(table.index, pd.DatetimeIndex) and (table.index.name or "index") not in table:
                table = table.reset_index()
            return table.reset_index(drop=True), 1
        if any(suffixes.endswith(ext) for ext in (".csv", ".csv.gz", ".txt", ".tsv")):
            sep = "\t" if suffixes.endswith(".tsv") else ","
            if _looks_headerless(path, sep):
                table = pd.read_csv(path, header=None, dtype=str, sep=sep, keep_default_na=False)
                if table.shape[1] > len(KLINE_COLUMNS) or table.shape[1] < 5:
                    raise DataValidationError(
                        f"{path}: the file has no header and {table.shape[1]} columns; a header-less "
                        "file must be a kline export (open_time, open, high, low, close, volume, ...)"
                    )
                table.columns = list(KLINE_COLUMNS[: table.shape[1]])
                return table, 1
            return pd.read_csv(path, dtype=str, sep=sep, keep_default_na=False), 2
    except pd.errors.EmptyDataError as exc:
        raise DataValidationError(f"{path}: the file holds no rows") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise DataValidationError(f"{path}: cannot be parsed: {exc}") from exc
    raise DataValidationError(f"{path}: unsupported file type {suffixes or '(none)'}; use .csv or .parquet")


def prepare_import(
    path: Path, kind: str = "auto", interval: timedelta | None = None, tz: str | None = None
) -> PreparedImport:
    """Validated canonical snapshots for a file; every problem is raised at once, before any write.

    ``tz`` is the IANA zone of naive timestamps; timestamps with an offset and epoch numbers are UTC."""
    resolve_zone(tz)  # an unknown zone is refused before the file is read
    table, row_offset = read_quote_table(path)
    table = normalise_columns(table)
    if table.empty:
        raise DataValidationError(f"{path}: the file holds no rows")
    detected = detect_kind(table) if kind == "auto" else kind
    if detected == "snapshots":
        snapshots = snapshots_from_table(table, str(path), row_offset, tz)
        return PreparedImport(snapshots, "snapshots", len(table), None, None)
    if detected == "candles":
        validated = validate_candles(table, str(path), row_offset, tz, interval)
        snapshots = candles_to_snapshots(validated.candles, validated.interval)
        return PreparedImport(snapshots, "candles", len(table), validated.interval, validated.interval_note)
    raise DataValidationError(
        f"{path}: cannot tell the kind of file: expected a 'price' column (snapshots) or "
        f"open/high/low/close columns (candles); found {', '.join(table.columns)}"
    )


def covered_days(snapshots: pd.DataFrame) -> tuple[str, str, int]:
    """(first UTC day, last UTC day, distinct UTC days with data) of a non-empty snapshot frame."""
    days = np.unique(ts_to_us(snapshots["ts"]) // US_PER_DAY)
    as_dates = pd.to_datetime(days[[0, -1]], unit="D")
    return as_dates[0].date().isoformat(), as_dates[1].date().isoformat(), len(days)


def import_quote_file(
    store: QuoteStore,
    market: Market,
    path: Path,
    kind: str = "auto",
    interval: timedelta | None = None,
    tz: str | None = None,
    *,
    bar_interval: timedelta | None = None,
) -> ImportResult:
    """Validate the whole file, then write it in one store call: a bad file writes nothing. With
    the market's ``bar_interval``, candles coarser than it are refused too (the pipeline would
    have to invent the finer bars)."""
    prepared = prepare_import(Path(path), kind, interval, tz)
    coarse = prepared.candle_interval
    if bar_interval is not None and coarse is not None and bar_interval < coarse:
        candles, bars = duration_text(coarse), duration_text(bar_interval)
        raise BarIntervalTooFine(
            f"{path}: {candles} candles cannot feed {market}'s {bars} bars (bars finer than the data "
            f"would be invented); nothing was written. Give the market its own bar interval in "
            f'config.yaml, e.g. storage.markets: - {{market: "{market}", bar_interval: "{candles}"}}, '
            f"then import again"
        )
    snapshots = prepared.snapshots
    first_day, last_day, days = covered_days(snapshots)
    written = store.write(market, snapshots)
    return ImportResult(
        market=market.key,
        kind=prepared.kind,
        rows_in_file=prepared.rows_in_file,
        snapshots_written=written,
        first_ts=str(snapshots["ts"].min()),
        last_ts=str(snapshots["ts"].max()),
        candle_interval=duration_text(prepared.candle_interval) if prepared.candle_interval else None,
        first_day=first_day,
        last_day=last_day,
        days=days,
        candle_interval_note=prepared.candle_interval_note,
    )
