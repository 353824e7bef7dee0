"""Markets (``exchange:PAIR``) and the canonical quote-snapshot schema shared by every store."""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

MARKET_RE = re.compile(r"^[a-z0-9_.-]+:[A-Z0-9_.-]+$")

# Canonical in-memory layout of quote snapshots: UTC microsecond timestamps, float64 values.
QUOTE_COLUMNS: tuple[str, ...] = ("ts", "price", "bid", "ask", "volume")
TS_DTYPE = "datetime64[us, UTC]"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, order=True)
class Market:
    exchange: str
    pair: str

    @classmethod
    def parse(cls, key: str) -> "Market":
        """``"binance:TONUSDT"`` -> Market; case is normalised, anything else is refused."""
        if not isinstance(key, str) or key.count(":") != 1:
            raise ValueError(f"market must look like 'exchange:PAIR', got {key!r}")
        exchange, pair = (part.strip() for part in key.split(":"))
        market = cls(exchange.lower(), pair.upper())
        if not MARKET_RE.match(market.key):
            raise ValueError(f"market must look like 'exchange:PAIR' (letters, digits, _ . -), got {key!r}")
        return market

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.pair}"

    def __str__(self) -> str:
        return self.key


def empty_quotes() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts": pd.Series([], dtype=TS_DTYPE),
            **{col: pd.Series([], dtype="float64") for col in QUOTE_COLUMNS[1:]},
        }
    )


def to_canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce a frame to the canonical schema (column order, dtypes, UTC microseconds)."""
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    ts = pd.to_datetime(frame["ts"], utc=True) if "ts" in frame else pd.Series([], dtype=TS_DTYPE)
    # Stay tz-aware all the way: .to_numpy() on a tz-aware column would build Python objects.
    out["ts"] = ts.astype(TS_DTYPE).reset_index(drop=True)
    for col in QUOTE_COLUMNS[1:]:
        if col in frame:
            out[col] = pd.to_numeric(pd.Series(frame[col].to_numpy()), errors="raise").astype("float64")
        else:
            out[col] = np.nan
    return out


def ts_to_us(ts: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """UTC epoch microseconds of a tz-aware timestamp column (no copy when already in us)."""
    values = ts.dt.as_unit("us") if isinstance(ts, pd.Series) else ts.as_unit("us")
    return np.asarray(values.astype("int64"))


def datetime_to_us(moment: datetime) -> int:
    """A datetime (naive means UTC) as epoch microseconds, exactly."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


def us_to_datetime(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(value))
