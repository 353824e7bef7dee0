"""Quote snapshots: synthetic generation, cleaning, validation of imports and resampling to OHLCV bars.

Everything here works on the canonical frame of :mod:`rof_pipelines.core.market` and is pure
numpy/pandas, so it is unit-tested without any store or Dagster.
"""

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from rof_pipelines.core.market import (
    QUOTE_COLUMNS,
    TS_DTYPE,
    Market,
    datetime_to_us,
    empty_quotes,
    ts_to_us,
)
from rof_pipelines.errors import DataValidationError

US_PER_SECOND = 1_000_000

# --- synthetic quotes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Regime:
    drift_per_hour: float  # log-return drift
    vol_per_sqrt_hour: float


# Calm, bull trend, bear trend, turbulent: a Markov chain moves between them.
REGIMES = (
    Regime(0.0, 0.004),
    Regime(0.0015, 0.006),
    Regime(-0.0015, 0.006),
    Regime(0.0, 0.015),
)
REGIME_TRANSITIONS = np.array(
    [
        [0.990, 0.004, 0.004, 0.002],
        [0.010, 0.985, 0.002, 0.003],
        [0.010, 0.002, 0.985, 0.003],
        [0.020, 0.005, 0.005, 0.970],
    ]
)


@dataclass(frozen=True)
class GeneratorConfig:
    """Knobs of the synthetic feed; defaults look like a liquid crypto pair sampled every ~10 s."""

    mean_interval_seconds: float = 10.0
    base_price: float | None = None  # None: derived from the market name, deterministically
    spread_bps: float = 4.0
    mean_volume: float = 50.0
    # A little of the dirt real feeds carry, so cleaning has something to do.
    duplicate_rate: float = 0.001
    out_of_order_rate: float = 0.0005
    nan_rate: float = 0.0002
    outlier_rate: float = 0.0001


def _market_seed(market: Market, seed: int) -> int:
    digest = hashlib.sha256(f"{market.key}|{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


KNOWN_BASE_PRICES = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0, "TON": 5.5, "BNB": 600.0, "XRP": 0.6}


def _default_base_price(market: Market) -> float:
    for symbol, price in KNOWN_BASE_PRICES.items():
        if market.pair.startswith(symbol):
            return price
    digest = hashlib.sha256(market.pair.encode()).digest()
    return float(10 ** (int(digest[0]) % 6 - 1) * (1 + digest[1] / 64))  # 0.1 .. 50_000


def generate_quotes(
    market: Market,
    start: datetime,
    end: datetime,
    seed: int = 0,
    config: GeneratorConfig | None = None,
) -> pd.DataFrame:
    """Realistic snapshots in ``[start, end)``: regime-switching returns, intraday (U-shaped) volatility,
    a bid/ask spread that widens with volatility, lognormal volume; deterministic for (market, seed)."""
    config = config or GeneratorConfig()
    start_us = datetime_to_us(start)
    end_us = datetime_to_us(end)
    if end_us <= start_us:
        return empty_quotes()
    rng = np.random.default_rng(_market_seed(market, seed))
    span_s = (end_us - start_us) / US_PER_SECOND
    n_guess = int(span_s / config.mean_interval_seconds * 1.2) + 16
    gaps = rng.exponential(config.mean_interval_seconds, n_guess)
    offsets_s = np.cumsum(gaps)
    offsets_s = offsets_s[offsets_s < span_s]
    n = len(offsets_s)
    ts_us = start_us + (offsets_s * US_PER_SECOND).astype(np.int64)
    dt_hours = np.diff(np.concatenate([[0.0], offsets_s])) / 3600.0

    # Regime path: one Markov step per ~minute of feed time keeps regimes lasting hours.
    steps = max(1, int(span_s // 60) + 1)
    regime = np.empty(steps, dtype=np.int64)
    regime[0] = rng.integers(len(REGIMES))
    cumulative = np.cumsum(REGIME_TRANSITIONS, axis=1)
    draws = rng.random(steps)
    for i in range(1, steps):
        regime[i] = int(np.searchsorted(cumulative[regime[i - 1]], draws[i]))
    regime_at = regime[np.minimum((offsets_s // 60).astype(np.int64), steps - 1)]
    drift = np.array([r.drift_per_hour for r in REGIMES])[regime_at]
    vol = np.array([r.vol_per_sqrt_hour for r in REGIMES])[regime_at]

    hour_of_day = ((ts_us // US_PER_SECOND) % 86400) / 3600.0
    intraday = 0.7 + 0.6 * np.cos(2 * np.pi * (hour_of_day - 14.0) / 24.0) ** 2  # busiest mid-day UTC
    sigma = vol * intraday * np.sqrt(np.maximum(dt_hours, 1e-9))
    log_returns = drift * dt_hours + sigma * rng.standard_t(5, n) / np.sqrt(5 / 3)
    base = config.base_price or _default_base_price(market)
    price = base * np.exp(np.cumsum(log_returns))

    half_spread = price * (config.spread_bps / 2e4) * (vol / REGIMES[0].vol_per_sqrt_hour) ** 0.5
    half_spread *= rng.uniform(0.7, 1.3, n)
    bid = price - half_spread
    ask = price + half_spread
    volume = rng.lognormal(np.log(config.mean_volume) - 0.5, 1.0, n) * intraday * (vol / 0.006)

    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime(ts_us, unit="us", utc=True).astype(TS_DTYPE),
            "price": price,
            "bid": bid,
            "ask": ask,
            "volume": volume,
        }
    )
    return _add_feed_dirt(frame, rng, config)


def _add_feed_dirt(frame: pd.DataFrame, rng: np.random.Generator, config: GeneratorConfig) -> pd.DataFrame:
    n = len(frame)
    if n < 10:
        return frame
    frame = frame.copy()
    outliers = rng.random(n) < config.outlier_rate
    frame.loc[outliers, "price"] *= rng.choice([0.8, 1.25], int(outliers.sum()))
    nans = rng.random(n) < config.nan_rate  # a missing side of the book; stores refuse NaN prices
    frame.loc[nans, ["bid", "ask"]] = np.nan
    dup_idx = np.flatnonzero(rng.random(n) < config.duplicate_rate)
    order = np.arange(n, dtype=np.float64)
    swaps = np.flatnonzero(rng.random(n - 1) < config.out_of_order_rate)
    order[swaps], order[swaps + 1] = order[swaps + 1], order[swaps]  # delivered out of order
    frame = frame.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)
    if len(dup_idx):  # a duplicate arrives right after its original
        frame = pd.concat([frame, frame.iloc[dup_idx]]).sort_index(kind="stable")
    return frame.reset_index(drop=True)


# --- cleaning -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CleaningConfig:
    """Thresholds for :func:`clean_quotes`; the defaults suit both ~10 s snapshots and candle imports."""

    gap_threshold: timedelta = timedelta(minutes=5)
    # A spike: a jump away and straight back, each leg larger than both of these.
    outlier_sigmas: float = 12.0
    outlier_min_jump: float = 0.03


@dataclass
class CleaningReport:
    input_rows: int = 0
    out_of_order: int = 0
    duplicates: int = 0
    nan_price: int = 0
    non_positive_price: int = 0
    outliers: int = 0
    crossed_quotes: int = 0
    gaps: int = 0
    max_gap_seconds: float = 0.0
    output_rows: int = 0
    gap_starts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, float | int | list[str]]:
        return asdict(self)


def clean_quotes(
    raw: pd.DataFrame, config: CleaningConfig | None = None
) -> tuple[pd.DataFrame, CleaningReport]:
    """Sort, de-duplicate (last delivery wins), drop NaN / non-positive prices and isolated spikes,
    blank crossed bid/ask, and count gaps. Returns the clean frame and what was done to it."""
    config = config or CleaningConfig()
    report = CleaningReport(input_rows=len(raw))
    if raw.empty:
        return empty_quotes(), report
    frame = raw.loc[:, list(QUOTE_COLUMNS)].reset_index(drop=True)

    ts = ts_to_us(frame["ts"])
    report.out_of_order = int(np.sum(ts[1:] < np.maximum.accumulate(ts)[:-1]))
    frame = frame.sort_values("ts", kind="stable")
    before = len(frame)
    frame = frame.drop_duplicates(subset="ts", keep="last")
    report.duplicates = before - len(frame)

    price = frame["price"].to_numpy()
    nan_mask = ~np.isfinite(price)
    report.nan_price = int(nan_mask.sum())
    nonpos_mask = ~nan_mask & (price <= 0)
    report.non_positive_price = int(nonpos_mask.sum())
    frame = frame.loc[~(nan_mask | nonpos_mask)]

    spikes = _spike_mask(frame["price"].to_numpy(), config)
    report.outliers = int(spikes.sum())
    frame = frame.loc[~spikes].reset_index(drop=True)

    bid = frame["bid"].to_numpy()
    ask = frame["ask"].to_numpy()
    crossed = np.isfinite(bid) & np.isfinite(ask) & (bid > ask)
    report.crossed_quotes = int(crossed.sum())
    if crossed.any():
        frame.loc[crossed, ["bid", "ask"]] = np.nan

    if len(frame) > 1:
        ts_us = ts_to_us(frame["ts"])
        diffs = np.diff(ts_us)
        median_gap = float(np.median(diffs))
        threshold = max(config.gap_threshold.total_seconds() * US_PER_SECOND, 10 * median_gap)
        gap_idx = np.flatnonzero(diffs > threshold)
        report.gaps = len(gap_idx)
        report.max_gap_seconds = float(diffs.max()) / US_PER_SECOND
        report.gap_starts = [str(frame["ts"].iloc[i]) for i in gap_idx[:20]]
    report.output_rows = len(frame)
    return frame, report


def _spike_mask(price: np.ndarray, config: CleaningConfig) -> np.ndarray:
    """An isolated spike jumps away from its neighbours and straight back, by far more than usual."""
    mask = np.zeros(len(price), dtype=bool)
    if len(price) < 5:
        return mask
    log_ret = np.diff(np.log(price))
    centred = log_ret - np.median(log_ret)
    robust_sigma = 1.4826 * float(np.median(np.abs(centred)))
    threshold = max(config.outlier_sigmas * robust_sigma, config.outlier_min_jump)
    into, out_of = log_ret[:-1], log_ret[1:]
    # Leaving and coming back: opposite signs, and the two legs nearly cancel.
    spike = (
        (np.abs(into) > threshold)
        & (np.abs(out_of) > threshold)
        & (np.sign(into) != np.sign(out_of))
        & (np.abs(into + out_of) < 0.5 * np.minimum(np.abs(into), np.abs(out_of)))
    )
    mask[1:-1] = spike
    return mask


# --- bars -----------------------------------------------------------------------------------------

BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "n_ticks")


def resample_bars(
    snapshots: pd.DataFrame,
    interval: timedelta,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pd.DataFrame:
    """OHLCV bars indexed by bar open time. Bars without ticks between the first and last tick carry
    the previous close (volume 0, n_ticks 0) so indicators see a regular grid; ``start``/``end`` trim
    the result to ``[start, end)``."""
    step_us = int(interval.total_seconds() * US_PER_SECOND)
    if snapshots.empty:
        return _empty_bars()
    ts_us = ts_to_us(snapshots["ts"])
    order = np.argsort(ts_us, kind="stable")
    ts_us = ts_us[order]
    price = snapshots["price"].to_numpy()[order]
    volume = np.nan_to_num(snapshots["volume"].to_numpy()[order], nan=0.0)

    bucket = ts_us // step_us
    first, last = bucket[0], bucket[-1]
    n_bars = int(last - first + 1)
    slot = (bucket - first).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]])
    ends = np.r_[starts[1:], len(slot)]
    occupied = slot[starts]

    opens = np.full(n_bars, np.nan)
    highs = np.full(n_bars, np.nan)
    lows = np.full(n_bars, np.nan)
    closes = np.full(n_bars, np.nan)
    opens[occupied] = price[starts]
    closes[occupied] = price[ends - 1]
    highs[occupied] = np.maximum.reduceat(price, starts)
    lows[occupied] = np.minimum.reduceat(price, starts)
    volumes = np.zeros(n_bars)
    volumes[occupied] = np.add.reduceat(volume, starts)
    ticks = np.zeros(n_bars)
    ticks[occupied] = ends - starts

    # Empty bars carry the last close.
    filled_close = pd.Series(closes).ffill().to_numpy()
    empty = ticks == 0
    opens[empty] = highs[empty] = lows[empty] = closes[empty] = filled_close[empty]

    index = pd.DatetimeIndex(
        pd.to_datetime((first + np.arange(n_bars)) * step_us, unit="us", utc=True), name="ts"
    ).as_unit("us")
    bars = pd.DataFrame(
        {
            "open": opens,
            "high": highs,
            "low": lows,
            "close": closes,
            "volume": volumes,
            "n_ticks": ticks,
        },
        index=index,
    )
    if start is not None:
        bars = bars.loc[bars.index >= pd.Timestamp(start)]
    if end is not None:
        bars = bars.loc[bars.index < pd.Timestamp(end)]
    return bars


def _empty_bars() -> pd.DataFrame:
    index = pd.DatetimeIndex([], dtype=TS_DTYPE, name="ts")
    return pd.DataFrame({col: pd.Series([], dtype="float64") for col in BAR_COLUMNS}, index=index)


# --- imports: validation and candles --------------------------------------------------------------


def _fail(row: int | None, column: str | None, problem: str, source: str, row_offset: int) -> None:
    where = []
    if row is not None:
        where.append(f"row {row + 1} (file line {row + row_offset})")
    if column is not None:
        where.append(f"column {column!r}")
    raise DataValidationError(f"{source}: {', '.join(where)}: {problem}" if where else f"{source}: {problem}")


def _numeric_column(
    frame: pd.DataFrame, column: str, source: str, row_offset: int, required: bool
) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype="float64")
    raw = frame[column]
    bad = np.isnan(values) & raw.notna().to_numpy() & (raw.astype(str).str.strip() != "").to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        _fail(row, column, f"{raw.iloc[row]!r} is not a number", source, row_offset)
    if required and np.isnan(values).any():
        row = int(np.flatnonzero(np.isnan(values))[0])
        _fail(row, column, "value is missing", source, row_offset)
    if np.isinf(values).any():
        row = int(np.flatnonzero(np.isinf(values))[0])
        _fail(row, column, "value is infinite", source, row_offset)
    return values


def parse_timestamps(values: pd.Series, source: str, column: str, row_offset: int) -> np.ndarray:
    """ISO strings or epoch numbers (seconds, milliseconds or microseconds, told apart by size) -> UTC us."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and len(values):
        as_float = numeric.to_numpy(dtype="float64")
        magnitude = np.nanmedian(np.abs(as_float))
        scale = 1e6 if magnitude < 1e11 else (1e3 if magnitude < 1e14 else 1.0)
        return np.round(as_float * scale).astype(np.int64)
    parsed = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        _fail(row, column, f"{values.iloc[row]!r} is not a timestamp", source, row_offset)
    return parsed.dt.as_unit("us").astype("int64").to_numpy()


TS_ALIASES = ("ts", "timestamp", "time", "datetime", "date", "open_time", "opentime")


def _find_ts_column(frame: pd.DataFrame, source: str) -> str:
    for alias in TS_ALIASES:
        if alias in frame.columns:
            return alias
    raise DataValidationError(
        f"{source}: no timestamp column; expected one of {', '.join(TS_ALIASES)} "
        f"(columns found: {', '.join(map(str, frame.columns))})"
    )


def detect_kind(frame: pd.DataFrame) -> str:
    columns = set(frame.columns)
    if {"open", "high", "low", "close"} <= columns:
        return "candles"
    if "price" in columns:
        return "snapshots"
    return "unknown"


def snapshots_from_table(frame: pd.DataFrame, source: str = "input", row_offset: int = 2) -> pd.DataFrame:
    """Validate a user's snapshot table (ts, price, optional bid/ask/volume) into the canonical frame.

    Every row is checked before anything is returned; the first problem raises DataValidationError
    naming the row, the file line and the column."""
    frame = frame.rename(columns=lambda c: str(c).strip().lower())
    ts_col = _find_ts_column(frame, source)
    if "price" not in frame.columns:
        raise DataValidationError(f"{source}: no 'price' column (columns found: {', '.join(frame.columns)})")
    ts_us = parse_timestamps(frame[ts_col], source, ts_col, row_offset)
    price = _numeric_column(frame, "price", source, row_offset, required=True)
    if (price <= 0).any():
        row = int(np.flatnonzero(price <= 0)[0])
        _fail(row, "price", f"price must be positive, got {price[row]}", source, row_offset)
    optional = {
        col: (
            _numeric_column(frame, col, source, row_offset, required=False)
            if col in frame.columns
            else np.full(len(frame), np.nan)
        )
        for col in ("bid", "ask", "volume")
    }
    if (optional["volume"] < 0).any():
        row = int(np.flatnonzero(optional["volume"] < 0)[0])
        _fail(row, "volume", "volume must not be negative", source, row_offset)
    return pd.DataFrame(
        {
            "ts": pd.to_datetime(ts_us, unit="us", utc=True).astype(TS_DTYPE),
            "price": price,
            **optional,
        }
    )


def candles_from_table(frame: pd.DataFrame, source: str = "input", row_offset: int = 2) -> pd.DataFrame:
    """Validate an OHLCV candle table; returns ts (open time, UTC us), open, high, low, close, volume."""
    frame = frame.rename(columns=lambda c: str(c).strip().lower())
    ts_col = _find_ts_column(frame, source)
    missing = [c for c in ("open", "high", "low", "close") if c not in frame.columns]
    if missing:
        raise DataValidationError(f"{source}: candle file lacks column(s) {', '.join(missing)}")
    ts_us = parse_timestamps(frame[ts_col], source, ts_col, row_offset)
    values = {
        c: _numeric_column(frame, c, source, row_offset, required=True)
        for c in ("open", "high", "low", "close")
    }
    volume = (
        _numeric_column(frame, "volume", source, row_offset, required=False)
        if "volume" in frame.columns
        else np.zeros(len(frame))
    )
    for col in ("open", "high", "low", "close"):
        if (values[col] <= 0).any():
            row = int(np.flatnonzero(values[col] <= 0)[0])
            _fail(row, col, f"price must be positive, got {values[col][row]}", source, row_offset)
    top = np.maximum(values["open"], values["close"])
    bottom = np.minimum(values["open"], values["close"])
    bad_high = values["high"] < top
    if bad_high.any():
        row = int(np.flatnonzero(bad_high)[0])
        _fail(row, "high", "high is below open or close", source, row_offset)
    bad_low = values["low"] > bottom
    if bad_low.any():
        row = int(np.flatnonzero(bad_low)[0])
        _fail(row, "low", "low is above open or close", source, row_offset)
    if (np.nan_to_num(volume) < 0).any():
        row = int(np.flatnonzero(np.nan_to_num(volume) < 0)[0])
        _fail(row, "volume", "volume must not be negative", source, row_offset)
    dup = pd.Series(ts_us).duplicated().to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        _fail(row, ts_col, "duplicate candle open time", source, row_offset)
    return pd.DataFrame({"ts_us": ts_us, **values, "volume": np.nan_to_num(volume)}).sort_values(
        "ts_us", kind="stable"
    )


def infer_candle_interval(candles: pd.DataFrame) -> timedelta:
    diffs = np.diff(np.sort(candles["ts_us"].to_numpy()))
    if not len(diffs):
        raise DataValidationError("a single candle does not tell its interval; pass --interval")
    return timedelta(microseconds=int(np.min(diffs[diffs > 0])))


def candles_to_snapshots(candles: pd.DataFrame, interval: timedelta) -> pd.DataFrame:
    """Store a candle as four snapshots inside its interval: open at the open time, high at 1/4,
    low at 1/2, close (carrying the whole volume) one microsecond before the interval ends.

    Resampling these at the candle's own interval gives back exactly the same OHLCV bar, so one
    snapshot table serves both kinds of import."""
    step = int(interval.total_seconds() * US_PER_SECOND)
    t0 = candles["ts_us"].to_numpy()
    n = len(t0)
    ts = np.stack([t0, t0 + step // 4, t0 + step // 2, t0 + step - 1], axis=1).ravel()
    price = np.stack([candles["open"], candles["high"], candles["low"], candles["close"]], axis=1).ravel()
    volume = np.zeros((n, 4))
    volume[:, 3] = candles["volume"].to_numpy()
    return pd.DataFrame(
        {
            "ts": pd.to_datetime(ts, unit="us", utc=True).astype(TS_DTYPE),
            "price": price.astype("float64"),
            "bid": np.nan,
            "ask": np.nan,
            "volume": volume.ravel(),
        }
    )
