"""Markets (``exchange:PAIR``) and the canonical quote-snapshot schema shared by every store."""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

# exchange:PAIR, each part 1-64 characters that start with a letter or digit, then letters, digits,
# "_", "." or "-", and never "..": markets name directories and partitions, so no ".", "..", "-x".
MARKET_RE = re.compile(r"^(?!.*\.\.)[a-z0-9][a-z0-9_.-]{0,63}:[A-Z0-9][A-Z0-9_.-]{0,63}$")

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
        """``"Binance:tonusdt"`` -> ``binance:TONUSDT``; case and surrounding blanks are normalised.

        The pattern (``MARKET_RE``): exchange and pair are each 1-64 characters, start with a letter or
        digit, then letters, digits, ``_``, ``.`` or ``-``, and never contain ``..``. So ``..:..``,
        ``binance:-rf`` or ``.x:Y`` are refused: a market names directories and partition keys.
        """
        if not isinstance(key, str) or key.count(":") != 1:
            raise ValueError(f"market must look like 'exchange:PAIR', got {key!r:.80}")
        exchange, pair = (part.strip() for part in key.split(":"))
        market = cls(exchange.lower(), pair.upper())
        if not MARKET_RE.match(market.key):
            raise ValueError(
                "market must look like 'exchange:PAIR': each part starts with a letter or digit, then "
                f"letters, digits, _ . - (no '..', at most 64 characters); got {key!r:.80}"
            )
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


def duration_text(value: timedelta) -> str:
    """``1:00:00`` -> ``1h``: durations the way config.yaml writes them."""
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# --- what a market trades like ---------------------------------------------------------------------

_BARS_RE = re.compile(r"^\s*(\d+)\s*(?:bars?|b)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class WindowLength:
    """How much history an agent, the optimiser and an A/B test see: a time span (``90d``, ``2y``)
    or a number of bars (``500 bars``), whichever the analyst finds natural for the market."""

    span: timedelta | None = None
    bars: int | None = None

    def __post_init__(self) -> None:
        if (self.span is None) == (self.bars is None):
            raise ValueError("a window is either a time span or a number of bars")
        if self.bars is not None and self.bars < 1:
            raise ValueError(f"a window needs at least one bar, got {self.bars}")
        if self.span is not None and self.span <= timedelta(0):
            raise ValueError(f"a window span must be positive, got {self.span}")

    @classmethod
    def parse(cls, value: "WindowLength | timedelta | str | int | float", parse_span) -> "WindowLength":
        """``"500 bars"``/``"500b"`` -> bars; anything ``parse_span`` understands -> a span."""
        if isinstance(value, WindowLength):
            return value
        if isinstance(value, str) and (match := _BARS_RE.match(value)):
            return cls(bars=int(match.group(1)))
        return cls(span=parse_span(value))

    def expected_bars(self, bars_per_year: float) -> int:
        """Bars the window holds on a market with ``bars_per_year`` (exact for a bar count)."""
        if self.bars is not None:
            return self.bars
        return int(bars_per_year * self.span.total_seconds() / (365.25 * 86400))

    def __str__(self) -> str:
        if self.bars is not None:
            return f"{self.bars} bars"
        days = self.span.total_seconds() / 86400
        return f"{days:g}d" if days >= 1 else f"{self.span.total_seconds() / 3600:g}h"


@dataclass(frozen=True)
class MarketProfile:
    """Everything that differs between a crypto pair, an FX pair and a stock: the trading calendar,
    the bar interval, the window and the costs. Built by the settings from config and defaults."""

    market: Market
    calendar_name: str
    asset_class: str
    bar_interval: timedelta
    window: WindowLength
    fee: float
    slippage: float

    @property
    def calendar(self):
        from rof_pipelines.core.calendars import calendar_for

        return calendar_for(self.calendar_name)

    @property
    def bars_per_year(self) -> float:
        return self.calendar.bars_per_year(self.bar_interval)

    @property
    def cost(self) -> float:
        """Fraction of the traded notional lost per unit traded (fee + slippage, one side)."""
        return self.fee + self.slippage

    def costs_text(self) -> str:
        return f"fee {self.fee * 1e4:.2f} bp + slippage {self.slippage * 1e4:.2f} bp per side"

    def as_dict(self) -> dict[str, object]:
        return {
            "market": self.market.key,
            "calendar": self.calendar_name,
            "asset_class": self.asset_class,
            "bar_interval": duration_text(self.bar_interval),
            "window": str(self.window),
            "fee": self.fee,
            "slippage": self.slippage,
        }
