"""Reading a user's quote file (CSV or Parquet) for ``rof quotes import``.

Two kinds are understood: snapshot files (ts, price, optional bid/ask/volume) and OHLCV candle files
(ts/open_time, open, high, low, close, volume), including an exchange's header-less kline CSV export.
The whole file is validated before the store sees any of it, and the store writes it in one
transaction, so a bad file writes nothing.
"""

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd

from rof_pipelines.adapters.quote_stores.base import QuoteStore
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import (
    candles_from_table,
    candles_to_snapshots,
    detect_kind,
    infer_candle_interval,
    snapshots_from_table,
)
from rof_pipelines.errors import DataValidationError

# Column order of a header-less kline export (open time first, in milliseconds).
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


def _looks_headerless(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = handle.readline().strip()
    fields = [field.strip() for field in first.split(",")]
    try:
        [float(field) for field in fields if field]
    except ValueError:
        return False
    return bool(fields)


def read_quote_table(path: Path) -> tuple[pd.DataFrame, int]:
    """The file as a table of strings/values, and the file line number of its first data row."""
    if not path.exists():
        raise DataValidationError(f"{path}: no such file")
    suffixes = "".join(path.suffixes).lower()
    try:
        if suffixes.endswith(".parquet") or suffixes.endswith(".pq"):
            return pd.read_parquet(path), 1
        if any(suffixes.endswith(ext) for ext in (".csv", ".csv.gz", ".txt", ".tsv")):
            sep = "\t" if suffixes.endswith(".tsv") else ","
            if _looks_headerless(path):
                table = pd.read_csv(path, header=None, dtype=str, sep=sep, keep_default_na=False)
                if table.shape[1] > len(KLINE_COLUMNS) or table.shape[1] < 5:
                    raise DataValidationError(
                        f"{path}: the file has no header and {table.shape[1]} columns; a header-less "
                        "file must be a kline export (open_time, open, high, low, close, volume, ...)"
                    )
                table.columns = list(KLINE_COLUMNS[: table.shape[1]])
                return table, 1
            return pd.read_csv(path, dtype=str, sep=sep, keep_default_na=False), 2
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise DataValidationError(f"{path}: cannot be parsed: {exc}") from exc
    raise DataValidationError(f"{path}: unsupported file type {suffixes or '(none)'}; use .csv or .parquet")


def prepare_import(
    path: Path, kind: str = "auto", interval: timedelta | None = None
) -> tuple[pd.DataFrame, str, int, timedelta | None]:
    """Validated canonical snapshots for a file: (snapshots, kind, rows in file, candle interval)."""
    table, row_offset = read_quote_table(path)
    table = table.rename(columns=lambda c: str(c).strip().lower())
    if table.empty:
        raise DataValidationError(f"{path}: the file holds no rows")
    detected = detect_kind(table) if kind == "auto" else kind
    if detected == "snapshots":
        return snapshots_from_table(table, str(path), row_offset), "snapshots", len(table), None
    if detected == "candles":
        candles = candles_from_table(table, str(path), row_offset)
        interval = interval or infer_candle_interval(candles)
        return candles_to_snapshots(candles, interval), "candles", len(table), interval
    raise DataValidationError(
        f"{path}: cannot tell the kind of file: expected a 'price' column (snapshots) or "
        f"open/high/low/close columns (candles); found {', '.join(table.columns)}"
    )


def import_quote_file(
    store: QuoteStore,
    market: Market,
    path: Path,
    kind: str = "auto",
    interval: timedelta | None = None,
) -> ImportResult:
    snapshots, detected, rows, candle_interval = prepare_import(Path(path), kind, interval)
    written = store.write(market, snapshots)
    return ImportResult(
        market=market.key,
        kind=detected,
        rows_in_file=rows,
        snapshots_written=written,
        first_ts=str(snapshots["ts"].min()),
        last_ts=str(snapshots["ts"].max()),
        candle_interval=str(candle_interval) if candle_interval else None,
    )
