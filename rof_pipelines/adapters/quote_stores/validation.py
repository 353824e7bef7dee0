"""The input checks every quote store relies on: one place, so every store refuses the same frames with
the same messages. :meth:`QuoteStore.write` runs them before a store touches anything."""

import numpy as np
import pandas as pd

from rof_pipelines.core.market import MARKET_RE, QUOTE_COLUMNS, TS_DTYPE, Market, to_canonical
from rof_pipelines.errors import DataValidationError


def validated_market(market: Market) -> Market:
    """``market`` itself, or DataValidationError: a market names directories and SQL parameters."""
    if not isinstance(market, Market) or not MARKET_RE.match(market.key):
        raise DataValidationError(f"not a valid market: {market!r}")
    return market


def validated_quotes(market: Market, quotes: pd.DataFrame) -> pd.DataFrame:
    """The frame in canonical form, or DataValidationError naming the column and row.

    Runs before a store touches anything, so a refused frame leaves the store as it was.
    """
    validated_market(market)
    if not isinstance(quotes, pd.DataFrame):
        raise DataValidationError(f"{market}: quotes must be a DataFrame, got {type(quotes).__name__}")
    missing = [col for col in ("ts", "price") if col not in quotes.columns]
    if missing:
        raise DataValidationError(f"{market}: quotes lack required column(s) {missing}")
    try:
        frame = _canonical(quotes)
    except (ValueError, TypeError, OverflowError) as exc:
        column = _failing_column(quotes)
        raise DataValidationError(f"{market}: column {column!r} is not valid: {exc}") from None
    if frame.empty:
        return frame
    ts_missing = frame["ts"].isna().to_numpy()
    if ts_missing.any():
        raise DataValidationError(f"{market}: row {_first_bad_row(ts_missing)}: ts is missing")
    price = frame["price"].to_numpy()
    if not np.isfinite(price).all():
        row = _first_bad_row(~np.isfinite(price))
        raise DataValidationError(f"{market}: row {row}: price must be a finite number, got {price[row]}")
    for col in QUOTE_COLUMNS[2:]:
        values = frame[col].to_numpy()
        if np.isinf(values).any():
            raise DataValidationError(f"{market}: row {_first_bad_row(np.isinf(values))}: {col} is infinite")
    return frame


def _first_bad_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _canonical(quotes: pd.DataFrame) -> pd.DataFrame:
    """``to_canonical``, skipped when the frame already is canonical: converting a tz-aware column
    goes through Python objects and costs seconds per million rows."""
    canonical = all(col in quotes.columns for col in QUOTE_COLUMNS) and (
        str(quotes["ts"].dtype) == TS_DTYPE
        and all(quotes[col].dtype == np.float64 for col in QUOTE_COLUMNS[1:])
    )
    if canonical:
        return quotes.loc[:, list(QUOTE_COLUMNS)].reset_index(drop=True)
    return to_canonical(quotes)


def _failing_column(quotes: pd.DataFrame) -> str:
    """Which column made ``to_canonical`` fail (only called on the error path)."""
    try:
        pd.to_datetime(quotes["ts"].to_numpy(), utc=True)
    except (ValueError, TypeError, OverflowError):
        return "ts"
    for col in QUOTE_COLUMNS[1:]:
        if col in quotes.columns:
            try:
                pd.to_numeric(pd.Series(quotes[col].to_numpy()), errors="raise").astype("float64")
            except (ValueError, TypeError, OverflowError):
                return col
    return "?"
