"""Quote snapshots: synthetic generation, cleaning, validation of imports and resampling to OHLCV bars.

Everything here works on the canonical frame of :mod:`rof_pipelines.core.market` and is pure
numpy/pandas, so it is unit-tested without any store or Dagster.
"""

import hashlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
    # A planted pattern an agent can learn (see PATTERNS); "none" is the plain regime-switching walk.
    pattern: str = "none"
    pattern_strength: float = 0.25  # momentum: drift per minute, in units of that minute's volatility
    trend_minutes: float = 480.0  # momentum: mean length of a trend

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}; known: {', '.join(PATTERNS)}")
        if not self.pattern_strength >= 0:
            raise ValueError(f"pattern_strength must be >= 0, got {self.pattern_strength}")
        if not self.trend_minutes >= 1:
            raise ValueError(f"trend_minutes must be >= 1, got {self.trend_minutes}")


# What each pattern plants (`rof quotes generate --pattern NAME`); generate_quotes says how strongly.
PATTERNS = {
    "none": "a random walk, nothing for the indicators to predict",
    "momentum": "persistent up- and down-trends (~8 h) that the EMA trend and MACD reveal",
}
MOMENTUM_SEED_SALT = 0x6D6F6D656E74756D  # its own draws: the walk underneath stays the "none" walk


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
    a bid/ask spread that widens with volatility, lognormal volume; deterministic for (market, seed).

    ``config.pattern`` plants something an agent can learn (``PATTERNS``); ``"none"`` (the default)
    leaves the walk exactly as it is, since the pattern draws from a generator of its own.

    ``"momentum"``: a hidden trend direction, +1 or -1, alternates in runs whose lengths are geometric
    with mean ``trend_minutes`` (480: eight hours). Every minute drifts by ``pattern_strength`` x that
    minute's volatility (regime x intraday) in the trend's direction. The trend is visible only through
    the prices, as the indicators see them. At the defaults (0.25, 480) the EMA trend
    (``ema12 / ema26 - 1``) points the hidden way about 3 bars in 4 on 15-minute bars (9 in 10 on
    1-minute bars), and the mean next-bar return of up-trend bars exceeds that of down-trend bars by
    about half a bar's volatility on 15-minute bars (t ~ 11 over 18 days; t ~ 9-12 over three days of
    1-minute bars; ``none`` gives |t| < 2). That is far stronger than any real market: enough for a
    trend-following agent to pay crypto costs (15 bp per side) and for the A/B test to tell. The
    trends also make the price swing: about 10 % a day instead of the walk's 2 %.
    """
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
    if config.pattern == "momentum" and n:
        pattern_rng = np.random.default_rng(_market_seed(market, seed) ^ MOMENTUM_SEED_SALT)
        minute = (ts_us // (60 * US_PER_SECOND)) - (start_us // (60 * US_PER_SECOND))
        direction = _trend_directions(pattern_rng, int(minute[-1]) + 1, config.trend_minutes)
        minute_vol = vol * intraday / np.sqrt(60.0)  # one minute's volatility, at each snapshot
        drift_share = dt_hours * 60.0  # the part of a minute each snapshot's return covers
        log_returns = log_returns + direction[minute] * config.pattern_strength * minute_vol * drift_share
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


def _trend_directions(rng: np.random.Generator, n_minutes: int, mean_minutes: float) -> np.ndarray:
    """+1 / -1 per minute: trends whose lengths are geometric with mean ``mean_minutes``, each
    direction the opposite of the one before (the first is random)."""
    lengths = rng.geometric(1.0 / mean_minutes, n_minutes // max(1, int(mean_minutes // 4)) + 2)
    while lengths.sum() < n_minutes:  # a rare run of short trends: draw more
        lengths = np.concatenate([lengths, rng.geometric(1.0 / mean_minutes, len(lengths))])
    first = 1.0 if rng.random() < 0.5 else -1.0
    signs = first * (1.0 - 2.0 * (np.arange(len(lengths)) % 2))
    return np.repeat(signs, lengths)[:n_minutes]


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

MAX_PROBLEMS_SHOWN = 20
US_PER_DAY = 86_400 * US_PER_SECOND
# Imported timestamps must fall in [1970-01-01, 2100-01-01): anything else is a unit or typing mistake.
EARLIEST_IMPORT_US = 0
LATEST_IMPORT_US = datetime_to_us(datetime(2100, 1, 1))
MIN_CANDLE_INTERVAL = timedelta(seconds=1)
MAX_CANDLE_INTERVAL = timedelta(days=1)


class ImportProblems:
    """Every problem of one file, so a single refusal lists them all in file order.

    Only the first ``limit`` are kept per check (enough to show the first ``limit`` overall); the
    rest are counted, so a file where every row is bad still gives a short message."""

    def __init__(self, source: str, row_offset: int, limit: int = MAX_PROBLEMS_SHOWN) -> None:
        self.source = source
        self.row_offset = row_offset
        self.limit = limit
        self.count = 0
        self._kept: list[tuple[int, int, str]] = []  # (row, or -1 for the whole file; order; text)

    def __bool__(self) -> bool:
        return self.count > 0

    def _where(self, row: int | None, column: str | None, problem: str) -> str:
        where = []
        if row is not None:
            where.append(f"row {row + 1} (file line {row + self.row_offset})")
        if column is not None:
            where.append(f"column {column!r}")
        return f"{', '.join(where)}: {problem}" if where else problem

    def add(self, problem: str, row: int | None = None, column: str | None = None) -> None:
        self.count += 1
        self._kept.append((-1 if row is None else row, len(self._kept), self._where(row, column, problem)))

    def add_rows(self, rows: np.ndarray, column: str | None, describe: Callable[[int], str]) -> None:
        """One problem per row position in ``rows`` (any order); ``describe(row)`` words it."""
        ordered = np.sort(np.asarray(rows, dtype=np.int64))
        self.count += len(ordered)
        for row in ordered[: self.limit].tolist():
            self._kept.append((row, len(self._kept), self._where(row, column, describe(row))))

    def add_mask(self, mask: np.ndarray, column: str | None, describe: Callable[[int], str]) -> None:
        self.add_rows(np.flatnonzero(mask), column, describe)

    def raise_if_any(self) -> None:
        if not self.count:
            return
        shown = [text for _, _, text in sorted(self._kept)[: self.limit]]
        if self.count == 1:
            raise DataValidationError(f"{self.source}: {shown[0]}")
        lines = [f"{self.source}: {self.count} problems, nothing was imported:"]
        lines += [f"  {text}" for text in shown]
        if self.count > len(shown):
            lines.append(f"  ... and {self.count - len(shown)} more problems")
        raise DataValidationError("\n".join(lines))


def resolve_zone(tz: str | None) -> ZoneInfo | None:
    """The IANA zone naive timestamps are read in; an unknown name is refused before reading the file."""
    if tz is None:
        return None
    name = "UTC" if tz.strip().upper() in ("UTC", "Z") else tz.strip()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise DataValidationError(
            f"unknown time zone {tz!r}: use an IANA name such as UTC, Europe/London or America/New_York"
        ) from exc


def _is_bool(value: object) -> bool:
    return isinstance(value, bool | np.bool_)


def _shown(value: object) -> str:
    """A cell as a message shows it: ``'12x'``, ``True``, ``5`` (not ``np.True_`` or ``np.int64(5)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _present_text(raw: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """A column as stripped strings, with masks of booleans and of present (non-empty) values.

    Booleans are singled out because ``pd.to_numeric`` would read them as 1/0."""
    if pd.api.types.is_bool_dtype(raw.dtype):
        present = raw.notna().to_numpy(dtype=bool)
        return raw.astype(str), present.copy(), present
    if raw.dtype == object:
        is_bool = raw.map(_is_bool).to_numpy(dtype=bool)
        text = raw.map(lambda value: "" if value is None or pd.isna(value) else str(value).strip())
    else:
        is_bool = np.zeros(len(raw), dtype=bool)
        text = raw.astype(str).where(raw.notna(), "").str.strip()
    present = (text != "").to_numpy(dtype=bool)
    is_bool = is_bool | text.str.lower().isin(("true", "false")).to_numpy(dtype=bool)
    return text, is_bool & present, present


def _numeric_column(frame: pd.DataFrame, column: str, problems: ImportProblems, required: bool) -> np.ndarray:
    """A column as floats, NaN where a value is missing or bad; each bad value is a problem."""
    raw = frame[column].reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        values = np.array(raw.to_numpy(dtype="float64", na_value=np.nan))
        present = ~np.isnan(values)
        not_number = np.zeros(len(raw), dtype=bool)
    else:
        text, is_bool, present = _present_text(raw)
        numbers = pd.to_numeric(text.where(~is_bool, ""), errors="coerce")
        values = np.array(numbers.to_numpy(dtype="float64", na_value=np.nan))
        values[is_bool] = np.nan
        not_number = present & np.isnan(values)
    problems.add_mask(not_number, column, lambda row: f"{_shown(raw.iloc[row])} is not a number")
    if required:
        problems.add_mask(~present, column, lambda row: "value is missing")
    infinite = np.isinf(values)
    problems.add_mask(infinite, column, lambda row: "value is infinite")
    values[infinite] = np.nan
    return values


# A zone written after a time: Z, UTC/GMT, or an offset such as +01:00, +0100, -05.
ZONE_SUFFIX_RE = (
    r"(?:\d:\d{2}(?::\d{2})?(?:[.,]\d+)?|T\d{2,6}(?:[.,]\d+)?)"
    r"\s*(?:[zZ]|UTC|GMT|(?:UTC|GMT)?\s*[+-]\d{2}(?::?\d{2})?)$"
)
EPOCH_UNITS = ("seconds", "milliseconds", "microseconds", "nanoseconds")
EPOCH_UNIT_BOUNDS = (1e11, 1e14, 1e17)  # |value| below 1e11 is seconds, below 1e14 milliseconds, ...
EPOCH_TO_US = (1e6, 1e3, 1.0, 1e-3)


def _to_datetime(text: pd.Series, utc: bool) -> pd.Series:
    """Strings -> datetimes in us (NaT where unreadable): fast ISO 8601 first, any other layout after."""
    if text.empty:
        return pd.Series([], dtype=TS_DTYPE if utc else "datetime64[us]", index=text.index)
    parsed = pd.to_datetime(text, format="ISO8601", utc=utc, errors="coerce")
    failed = parsed.isna()
    if failed.any():
        retry = pd.to_datetime(text[failed], format="mixed", utc=utc, errors="coerce")
        if not pd.api.types.is_datetime64_any_dtype(retry.dtype):
            raise ValueError("values with and without a zone in one column")
        parsed = parsed.dt.as_unit("us").where(~failed, retry.dt.as_unit("us"))
    if not pd.api.types.is_datetime64_any_dtype(parsed.dtype):
        raise ValueError("values with and without a zone in one column")
    return parsed.dt.as_unit("us")


# A date part (a four-digit year, or d/m/y-like digits): without one, a lenient parser would fill the
# missing fields from today's date ("10:30", "5", "March" are not timestamps).
DATE_PART_RE = r"\d{4}|\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2}"


def _parse_text(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Date strings split into those carrying a zone (parsed to UTC) and naive ones (parsed as is);
    strings without a date part come back as NaT among the zoned ones."""
    dated = text.str.contains(DATE_PART_RE, regex=True)
    undated = pd.Series(pd.NaT, index=text.index[~dated], dtype=TS_DTYPE)
    text = text[dated]
    has_zone = text.str.contains(ZONE_SUFFIX_RE, regex=True)
    try:
        aware = _to_datetime(text[has_zone], utc=True)
        naive = _to_datetime(text[~has_zone], utc=False)
        if isinstance(naive.dtype, pd.DatetimeTZDtype) or naive.dtype == object:
            raise ValueError("a zone the pattern did not see")
    except (ValueError, TypeError, OverflowError, pd.errors.OutOfBoundsDatetime):
        aware, naive = _parse_text_one_by_one(text)
    return pd.concat([aware, undated]) if len(undated) else aware, naive


def _parse_text_one_by_one(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Slow path for what pandas cannot read in bulk: each value on its own (unreadable -> NaT)."""
    aware: dict[int, pd.Timestamp] = {}
    naive: dict[int, pd.Timestamp] = {}
    for row, value in text.items():
        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError, OverflowError, pd.errors.OutOfBoundsDatetime):
            stamp = pd.NaT
        if stamp is pd.NaT or stamp.tzinfo is not None:
            aware[row] = stamp if stamp is pd.NaT else stamp.tz_convert("UTC")
        else:
            naive[row] = stamp
    return pd.Series(aware, dtype=TS_DTYPE), pd.Series(naive, dtype="datetime64[us]")


def _localise(naive: pd.Series, zone: ZoneInfo, column: str, problems: ImportProblems) -> pd.Series:
    """Naive wall-clock times in ``zone`` -> UTC; times a DST change skips or repeats are problems (NaT)."""
    if zone.key == "UTC":
        return naive.dt.tz_localize("UTC")
    shifted = naive.dt.tz_localize(zone, ambiguous="NaT", nonexistent="shift_forward")
    strict = naive.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
    rows = np.asarray(naive.index, dtype=np.int64)
    ambiguous = shifted.isna().to_numpy()
    nonexistent = strict.isna().to_numpy() & ~ambiguous
    problems.add_rows(
        rows[ambiguous],
        column,
        lambda row: (
            f"{naive.loc[row]} happens twice in {zone.key} (clocks go back), so it is ambiguous; "
            "write it with its UTC offset"
        ),
    )
    problems.add_rows(
        rows[nonexistent],
        column,
        lambda row: f"{naive.loc[row]} does not exist in {zone.key} (clocks go forward past it)",
    )
    return strict.dt.tz_convert("UTC")


def _parse_epochs(
    numbers: np.ndarray,
    integers: np.ndarray | None,
    valid: np.ndarray,
    raw: pd.Series,
    column: str,
    problems: ImportProblems,
) -> tuple[np.ndarray, np.ndarray]:
    """Epoch numbers -> UTC us. The unit is decided once, from the median; rows of another unit are refused.

    ``integers`` (the same values, exactly, when they all are integers) keeps nanoseconds exact,
    which float64 cannot."""
    ts_us = np.zeros(len(numbers), dtype=np.int64)
    if not valid.any():
        return ts_us, valid
    magnitude = np.abs(numbers)
    unit = int(np.searchsorted(EPOCH_UNIT_BOUNDS, np.median(magnitude[valid]), side="right"))
    row_units = np.searchsorted(EPOCH_UNIT_BOUNDS, np.nan_to_num(magnitude), side="right")
    with np.errstate(over="ignore", invalid="ignore"):
        beyond_every_unit = magnitude * EPOCH_TO_US[-1] >= LATEST_IMPORT_US
    wrong_unit = valid & (row_units != unit) & ~beyond_every_unit
    problems.add_mask(
        wrong_unit,
        column,
        lambda row: (
            f"{_shown(raw.iloc[row])} looks like epoch {EPOCH_UNITS[row_units[row]]}, but this file's "
            f"epoch timestamps are {EPOCH_UNITS[unit]} (judged from their median); one file must use one unit"
        ),
    )
    ok = valid & ~wrong_unit
    with np.errstate(over="ignore", invalid="ignore"):
        as_us = np.where(ok, numbers * EPOCH_TO_US[unit], 0.0)
    out_of_range = ok & ((as_us < EARLIEST_IMPORT_US) | (as_us >= LATEST_IMPORT_US))
    problems.add_mask(
        out_of_range,
        column,
        lambda row: (
            f"{_shown(raw.iloc[row])} (epoch {EPOCH_UNITS[unit]}) is out of range: "
            "timestamps must fall between 1970-01-01 and 2100-01-01"
        ),
    )
    ok &= ~out_of_range
    if integers is None:
        ts_us[ok] = np.round(as_us[ok]).astype(np.int64)
    elif EPOCH_TO_US[unit] >= 1:
        ts_us[ok] = integers[ok].astype(np.int64) * int(EPOCH_TO_US[unit])
    else:
        ts_us[ok] = integers[ok].astype(np.int64) // 1_000
    return ts_us, ok


def _parse_timestamps(
    values: pd.Series, column: str, problems: ImportProblems, zone: ZoneInfo | None
) -> tuple[np.ndarray, np.ndarray]:
    """UTC epoch microseconds of a timestamp column and a mask of the rows that parsed."""
    raw = values.reset_index(drop=True)
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        present = raw.notna().to_numpy(dtype=bool)
        problems.add_mask(~present, column, lambda row: "timestamp is missing")
        text = raw.astype(str)
        stamps = raw[present].dt.as_unit("us")
        if stamps.dt.tz is not None:
            aware, naive = stamps.dt.tz_convert("UTC"), pd.Series([], dtype="datetime64[us]")
        else:
            aware, naive = pd.Series([], dtype=TS_DTYPE), stamps
    else:
        text, is_bool, present = _present_text(raw)
        problems.add_mask(
            is_bool, column, lambda row: f"{_shown(raw.iloc[row])} is a boolean, not a timestamp"
        )
        problems.add_mask(~present, column, lambda row: "timestamp is missing")
        present = present & ~is_bool
        if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
            parsed_numbers = raw
        else:
            parsed_numbers = pd.to_numeric(text.where(present, ""), errors="coerce")
        numbers = parsed_numbers.to_numpy(dtype="float64", na_value=np.nan)
        integers = parsed_numbers.to_numpy() if parsed_numbers.dtype.kind in "iu" else None
        numeric = present & ~np.isnan(numbers)
        if numeric.sum() * 2 > present.sum():
            finite = numeric & np.isfinite(numbers)
            problems.add_mask(
                present & ~finite,
                column,
                lambda row: f"{_shown(raw.iloc[row])} is not a timestamp (this column holds epoch numbers)",
            )
            return _parse_epochs(numbers, integers, finite, raw, column, problems)
        aware, naive = _parse_text(text[present])

    unreadable = np.concatenate(
        [np.asarray(part.index[part.isna().to_numpy()], dtype=np.int64) for part in (aware, naive)]
    )
    problems.add_rows(unreadable, column, lambda row: f"{text.iloc[row]!r} is not a timestamp")
    aware, naive = aware.dropna(), naive.dropna()
    if len(naive) and zone is None:
        first = int(naive.index.min())
        problems.add(
            f"timestamp {text.iloc[first]!r} has no time zone ({len(naive)} of {len(raw)} are like it); "
            "pass --tz ZONE naming the zone the file's clock is in, e.g. --tz UTC or "
            "--tz America/New_York (for the dates of daily candles: --tz UTC)",
            first,
            column,
        )
        localised = pd.Series([], dtype=TS_DTYPE)
    elif len(naive):
        localised = _localise(naive, zone, column, problems).dropna()
    else:
        localised = pd.Series([], dtype=TS_DTYPE)

    ts_us = np.zeros(len(raw), dtype=np.int64)
    ok = np.zeros(len(raw), dtype=bool)
    for parsed in (aware, localised):
        if len(parsed):
            rows = np.asarray(parsed.index, dtype=np.int64)
            ts_us[rows] = parsed.dt.as_unit("us").astype("int64").to_numpy()
            ok[rows] = True
    out_of_range = ok & ((ts_us < EARLIEST_IMPORT_US) | (ts_us >= LATEST_IMPORT_US))
    problems.add_mask(
        out_of_range,
        column,
        lambda row: (
            f"{text.iloc[row]!r} is out of range: timestamps must fall between 1970-01-01 and 2100-01-01"
        ),
    )
    return ts_us, ok & ~out_of_range


TS_ALIASES = ("ts", "timestamp", "time", "datetime", "date", "open_time", "opentime")
# What pandas calls an index column written without a name (``df.to_csv()``, ``df.reset_index()``).
UNNAMED_INDEX_COLUMNS = ("", "unnamed: 0", "index")


def normalise_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Lower-cased, stripped column names ("Adj Close" -> "adj close") and positional rows."""
    return frame.rename(columns=lambda c: str(c).strip().lower()).reset_index(drop=True)


def _looks_like_timestamps(values: pd.Series) -> bool:
    """Whether a nameless column holds timestamps, judged from its first values.

    Small integers (a RangeIndex written to CSV) would read as 1970 epoch seconds, so epoch numbers
    only count from 1e9 (September 2001 in seconds, any date in ms/us/ns)."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return True
    text, is_bool, present = _present_text(values.head(200).reset_index(drop=True))
    sample = text[present & ~is_bool].head(20)
    if sample.empty or is_bool.any():
        return False
    numbers = pd.to_numeric(sample, errors="coerce")
    if numbers.notna().all():
        return bool(np.abs(numbers.to_numpy(dtype="float64")).min() >= 1e9)
    try:
        return bool(pd.to_datetime(sample, format="mixed", utc=True, errors="coerce").notna().all())
    except (ValueError, TypeError, OverflowError):
        return False


def find_ts_column(frame: pd.DataFrame, source: str) -> str:
    """The timestamp column: a known name, else an unnamed first column holding timestamps."""
    for alias in TS_ALIASES:
        if alias in frame.columns:
            return alias
    first = str(frame.columns[0]) if len(frame.columns) else None
    unnamed = first is not None and (first in UNNAMED_INDEX_COLUMNS or first.startswith("unnamed:"))
    if unnamed and _looks_like_timestamps(frame[frame.columns[0]]):
        return frame.columns[0]
    raise DataValidationError(
        f"{source}: no timestamp column; expected one of {', '.join(TS_ALIASES)}, or an unnamed first "
        f"column of timestamps as pandas writes an index (columns found: {', '.join(map(str, frame.columns))})"
    )


def detect_kind(frame: pd.DataFrame) -> str:
    columns = set(frame.columns)
    if {"open", "high", "low", "close"} <= columns:
        return "candles"
    if "price" in columns:
        return "snapshots"
    return "unknown"


def _refuse_non_positive(values: np.ndarray, column: str, problems: ImportProblems, what: str) -> None:
    problems.add_mask(values <= 0, column, lambda row: f"{what} must be positive, got {values[row]}")


def snapshots_from_table(
    frame: pd.DataFrame, source: str = "input", row_offset: int = 2, tz: str | None = None
) -> pd.DataFrame:
    """Validate a user's snapshot table (ts, price, optional bid/ask/volume) into the canonical frame.

    Every row is checked before anything is returned; all problems (row, file line, column) are
    raised together as one DataValidationError."""
    zone = resolve_zone(tz)
    frame = normalise_columns(frame)
    ts_col = find_ts_column(frame, source)
    if "price" not in frame.columns:
        raise DataValidationError(f"{source}: no 'price' column (columns found: {', '.join(frame.columns)})")
    problems = ImportProblems(source, row_offset)
    ts_us, _ = _parse_timestamps(frame[ts_col], ts_col, problems, zone)
    price = _numeric_column(frame, "price", problems, required=True)
    _refuse_non_positive(price, "price", problems, "price")
    optional = {
        col: (
            _numeric_column(frame, col, problems, required=False)
            if col in frame.columns
            else np.full(len(frame), np.nan)
        )
        for col in ("bid", "ask", "volume")
    }
    bid, ask, volume = optional["bid"], optional["ask"], optional["volume"]
    _refuse_non_positive(bid, "bid", problems, "bid")
    _refuse_non_positive(ask, "ask", problems, "ask")
    problems.add_mask(bid > ask, "bid", lambda row: f"crossed quote: bid {bid[row]} is above ask {ask[row]}")
    problems.add_mask(volume < 0, "volume", lambda row: f"volume must not be negative, got {volume[row]}")
    problems.raise_if_any()
    return pd.DataFrame(
        {
            "ts": pd.to_datetime(ts_us, unit="us", utc=True).astype(TS_DTYPE),
            "price": price,
            **optional,
        }
    )


CANDLE_PRICES = ("open", "high", "low", "close")


def _validated_candles(
    frame: pd.DataFrame, problems: ImportProblems, zone: ZoneInfo | None, source: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """Candles of every row (positional index) and a mask of the rows without any problem."""
    ts_col = find_ts_column(frame, source)
    missing = [c for c in CANDLE_PRICES if c not in frame.columns]
    if missing:
        raise DataValidationError(f"{source}: candle file lacks column(s) {', '.join(missing)}")
    count_before = problems.count
    ts_us, ts_ok = _parse_timestamps(frame[ts_col], ts_col, problems, zone)
    values = {c: _numeric_column(frame, c, problems, required=True) for c in CANDLE_PRICES}
    volume = (
        _numeric_column(frame, "volume", problems, required=False)
        if "volume" in frame.columns
        else np.zeros(len(frame))
    )
    for col in CANDLE_PRICES:
        _refuse_non_positive(values[col], col, problems, "price")
    top = np.fmax(values["open"], values["close"])
    bottom = np.fmin(values["open"], values["close"])
    bad_high = values["high"] < top
    bad_low = values["low"] > bottom
    problems.add_mask(bad_high, "high", lambda row: "high is below open or close")
    problems.add_mask(bad_low, "low", lambda row: "low is above open or close")
    problems.add_mask(volume < 0, "volume", lambda row: "volume must not be negative")
    duplicate = ts_ok & pd.Series(np.where(ts_ok, ts_us, -1)).duplicated().to_numpy()
    problems.add_mask(duplicate, ts_col, lambda row: "duplicate candle open time")
    candles = pd.DataFrame({"ts_us": ts_us, **values, "volume": np.nan_to_num(volume)})
    if problems.count == count_before:
        return candles, np.ones(len(frame), dtype=bool)
    numbers_ok = np.logical_and.reduce([np.isfinite(values[c]) & (values[c] > 0) for c in CANDLE_PRICES])
    return candles, ts_ok & numbers_ok & ~bad_high & ~bad_low & ~duplicate


def candles_from_table(
    frame: pd.DataFrame, source: str = "input", row_offset: int = 2, tz: str | None = None
) -> pd.DataFrame:
    """Validate an OHLCV candle table; returns ts_us (open time, UTC us), open, high, low, close, volume
    sorted by open time. All problems are raised together."""
    zone = resolve_zone(tz)
    problems = ImportProblems(source, row_offset)
    candles, _ = _validated_candles(normalise_columns(frame), problems, zone, source)
    problems.raise_if_any()
    return candles.sort_values("ts_us", kind="stable")


# --- candle intervals -----------------------------------------------------------------------------

INTERVAL_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86_400}
MONTH_UNITS = ("M", "mo", "mon", "mth", "month", "months")
WEEK_UNITS = ("w", "wk", "week", "weeks")
NOT_BEYOND_A_DAY = "the pipeline builds bars from 1m to 1d, so import the daily candles instead"


def interval_text(interval: timedelta) -> str:
    """``timedelta(hours=4)`` -> ``"4h"``: the way intervals are typed on the command line."""
    seconds = interval.total_seconds()
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return str(interval)


def check_candle_interval(interval: timedelta) -> timedelta:
    """Refuse intervals the pipeline cannot run: weekly, monthly, beyond a day, under 1s, or uneven."""
    if timedelta(days=28) <= interval <= timedelta(days=31):
        raise DataValidationError(f"monthly candles are not supported: {NOT_BEYOND_A_DAY}")
    if interval == timedelta(days=7):
        raise DataValidationError(f"weekly candles are not supported: {NOT_BEYOND_A_DAY}")
    if interval > MAX_CANDLE_INTERVAL:
        raise DataValidationError(
            f"candles of {interval_text(interval)} are not supported: {NOT_BEYOND_A_DAY}"
        )
    if interval < MIN_CANDLE_INTERVAL:
        raise DataValidationError(f"candles of {interval} are not supported: the shortest interval is 1s")
    if US_PER_DAY % (interval // timedelta(microseconds=1)):
        raise DataValidationError(
            f"a candle interval of {interval_text(interval)} does not divide a day evenly; "
            "use e.g. 1m, 5m, 15m, 1h, 4h or 1d"
        )
    return interval


def parse_candle_interval(text: str) -> timedelta:
    """``"5m"``, ``"4h"``, ``"1d"`` -> timedelta. ``1M``/``1mo`` mean a month and ``1w`` a week, both refused."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text or "")
    if not match:
        raise DataValidationError(f"--interval {text!r} is not an interval; use e.g. 1m, 5m, 1h, 4h or 1d")
    number, unit = float(match.group(1)), match.group(2)
    if unit in MONTH_UNITS or unit.lower() in MONTH_UNITS[1:]:
        raise DataValidationError(f"--interval {text!r} means monthly candles: {NOT_BEYOND_A_DAY}")
    if unit.lower() in WEEK_UNITS:
        raise DataValidationError(f"--interval {text!r} means weekly candles: {NOT_BEYOND_A_DAY}")
    size = INTERVAL_UNITS.get(unit.lower() or "s")
    if size is None:
        raise DataValidationError(f"--interval {text!r} is not an interval; use e.g. 1m, 5m, 1h, 4h or 1d")
    return check_candle_interval(timedelta(seconds=number * size))


def _most_common_gap(ts_sorted: np.ndarray) -> tuple[int, int, int]:
    """(gap in us, how many gaps have it, how many gaps there are); ties go to the shorter gap."""
    gaps = np.diff(ts_sorted)
    gaps = gaps[gaps > 0]
    if not len(gaps):
        return 0, 0, 0
    values, counts = np.unique(gaps, return_counts=True)
    best = int(np.argmax(counts))  # np.unique sorts ascending, argmax takes the first (shortest) tie
    return int(values[best]), int(counts[best]), len(gaps)


def infer_candle_interval(candles: pd.DataFrame) -> timedelta:
    """The most common spacing of open times: a few missing candles or a weekend do not change it."""
    gap, _, _ = _most_common_gap(np.sort(candles["ts_us"].to_numpy()))
    if not gap:
        raise DataValidationError("a single candle does not tell its interval; pass --interval")
    return timedelta(microseconds=gap)


def _refuse_off_interval(
    good: pd.DataFrame, interval: timedelta, note: str, ts_col: str, problems: ImportProblems
) -> None:
    """Rows closer to the previous candle than the interval, and rows off the interval's UTC grid."""
    step = interval // timedelta(microseconds=1)
    ts_sorted = good["ts_us"].to_numpy()
    rows = good.index.to_numpy()
    gaps = np.diff(ts_sorted)
    after = np.flatnonzero(gaps < step) + 1
    previous_row = dict(zip(rows[after].tolist(), rows[after - 1].tolist(), strict=True))
    gap_before = dict(zip(rows[after].tolist(), gaps[after - 1].tolist(), strict=True))
    problems.add_rows(
        rows[after],
        ts_col,
        lambda row: (
            f"open time is only {interval_text(timedelta(microseconds=gap_before[row]))} after the "
            f"candle on row {previous_row[row] + 1}, closer than the {interval_text(interval)} interval ({note})"
        ),
    )
    off_grid = ts_sorted % step != 0
    off_grid[after] = False  # already refused for its spacing
    daily_hint = "; read the dates of daily candles with --tz UTC" if interval == MAX_CANDLE_INTERVAL else ""
    problems.add_rows(
        rows[off_grid],
        ts_col,
        lambda row: (
            f"{pd.Timestamp(int(good.at[row, 'ts_us']), unit='us', tz='UTC')} is not on the "
            f"{interval_text(interval)} grid counted from 00:00 UTC, so the candle would straddle "
            f"two bars{daily_hint}"
        ),
    )


@dataclass(frozen=True)
class ValidatedCandles:
    candles: pd.DataFrame  # ts_us, open, high, low, close, volume, sorted by open time
    interval: timedelta
    interval_note: str  # where the interval came from, for the user


def validate_candles(
    frame: pd.DataFrame,
    source: str = "input",
    row_offset: int = 2,
    tz: str | None = None,
    interval: timedelta | None = None,
) -> ValidatedCandles:
    """Candles and their interval, with every problem of the file (rows and spacing) raised at once.

    The interval is ``interval`` when given, which the data must match, else the most common spacing.
    Candles closer than the interval would overlap once stored, and candles off the interval's grid
    (counted from 00:00 UTC) would straddle two bars, so both are refused row by row."""
    zone = resolve_zone(tz)
    if interval is not None:
        check_candle_interval(interval)
    frame = normalise_columns(frame)
    problems = ImportProblems(source, row_offset)
    candles, ok = _validated_candles(frame, problems, zone, source)
    ts_col = find_ts_column(frame, source)
    good = candles[ok].sort_values("ts_us", kind="stable")
    ts_sorted = good["ts_us"].to_numpy()
    gap, gap_count, gaps = _most_common_gap(ts_sorted)
    spacing = (
        f"{interval_text(timedelta(microseconds=gap))} apart ({gap_count} of {gaps} gaps)" if gap else ""
    )
    chosen = interval
    if interval is None and gap:
        note = f"inferred from the most common spacing ({gap_count} of {gaps} gaps)"
        try:
            chosen = check_candle_interval(timedelta(microseconds=gap))
        except DataValidationError as exc:
            problems.add(f"the candles are mostly {spacing}; {exc}")
            chosen = None
    elif interval is None:
        if not problems:
            raise DataValidationError(
                f"{source}: a single candle does not tell its interval; pass --interval"
            )
        note = ""
    else:
        note = "given by --interval"
        if gap and gap != interval // timedelta(microseconds=1):
            relation = "finer" if gap < interval // timedelta(microseconds=1) else "coarser"
            problems.add(
                f"the candles are mostly {spacing}, {relation} than --interval {interval_text(interval)}; "
                f"pass --interval {interval_text(timedelta(microseconds=gap))} or leave it out"
            )
            chosen = None
    if chosen is not None and len(ts_sorted):
        _refuse_off_interval(good, chosen, note, ts_col, problems)
    problems.raise_if_any()
    return ValidatedCandles(good.reset_index(drop=True), chosen, note)


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


def parse_timestamps(
    values: pd.Series, source: str, column: str, row_offset: int, tz: str | None = None
) -> np.ndarray:
    """ISO strings (zones converted to UTC; naive ones read in ``tz``) or epoch numbers -> UTC us.

    The epoch unit (seconds, ms, us, ns) is decided once from the median; all problems raise together."""
    problems = ImportProblems(source, row_offset)
    ts_us, _ = _parse_timestamps(values, column, problems, resolve_zone(tz))
    problems.raise_if_any()
    return ts_us
