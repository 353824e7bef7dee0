"""The indicator frame of any stretch of a market's history, assembled the same way for a day and
for a two-year window: calendar-aware bars (closed time is not filled with flat bars), enough
earlier bars to warm every indicator up, and never bars finer than the stored data.

Candle imports store each candle as four snapshots (open at the open time, high at 1/4, low at 1/2,
close one microsecond before the candle ends; see :func:`rof_pipelines.core.quotes.candles_to_snapshots`).
That pattern tells the candle interval back, so a bar interval finer than the candles is refused
instead of inventing sub-bars in a fixed open-high-low-close order.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from rof_pipelines.core.calendars import MarketCalendar
from rof_pipelines.core.indicators import IndicatorWindows, build_indicator_frame
from rof_pipelines.core.market import datetime_to_us, duration_text, ts_to_us
from rof_pipelines.core.quotes import CleaningConfig, clean_quotes, resample_bars
from rof_pipelines.errors import BarIntervalTooFine

US = 1_000_000
# Candle intervals a file can carry, coarsest first: a daily candle also fits the hourly pattern.
CANDLE_INTERVALS = tuple(
    timedelta(seconds=s)
    for s in (86400, 43200, 28800, 21600, 14400, 7200, 3600, 1800, 900, 300, 180, 60, 30, 15, 5, 1)
)
# Indicators built from exponential averages (MACD, ADX) keep changing long after they are first
# defined; this many times the longest window makes a day's frame agree with a long window's.
WARMUP_FACTOR = 3
DEFAULT_GAP_THRESHOLD = timedelta(minutes=5)
# How far before a day the gap check looks, so a gap that began the day before is reported whole.
GAP_LOOKBACK_BARS = 60


def warmup_bars(windows: IndicatorWindows) -> int:
    return WARMUP_FACTOR * windows.warmup_bars


def stored_candle_interval(ts_us: np.ndarray) -> timedelta | None:
    """The candle interval of snapshots written by a candle import, or None for other data (a
    tick feed, generated snapshots). Every snapshot must sit on the four-point pattern, and some
    must be candle closes, for the data to count as candles."""
    if len(ts_us) < 4:
        return None
    for interval in CANDLE_INTERVALS:
        step = int(interval.total_seconds() * US)
        offsets = ts_us % step
        closes = offsets == step - 1
        if closes.any() and np.isin(offsets, (0, step // 4, step // 2, step - 1)).all():
            return interval
    return None


def check_bar_interval(ts_us: np.ndarray, interval: timedelta, what: str) -> timedelta | None:
    """Refuse bars finer than the stored candles; returns the candle interval (None: not candles)."""
    candles = stored_candle_interval(ts_us)
    if candles is not None and interval < candles:
        raise BarIntervalTooFine(
            f"{what}: bar_interval {duration_text(interval)} is finer than the stored {duration_text(candles)} candles; "
            f"bars finer than the data would be invented. Use bar_interval {duration_text(candles)} or coarser "
            f"for this market (its `bar_interval` in storage.markets), or import finer candles"
        )
    return candles


def open_slot_mask(slot_us: np.ndarray, step_us: int, intervals: np.ndarray) -> np.ndarray:
    """For bar slots starting at ``slot_us`` (each ``step_us`` long): does the calendar trade at
    any moment inside the slot? ``intervals`` are sorted [open, close) pairs in UTC microseconds."""
    if len(intervals) == 0:
        return np.zeros(len(slot_us), dtype=bool)
    first_ending_after = np.searchsorted(intervals[:, 1], slot_us, side="right")
    inside = first_ending_after < len(intervals)
    opens = intervals[np.minimum(first_ending_after, len(intervals) - 1), 0]
    return inside & (opens < slot_us + step_us)


def session_bars(snapshots: pd.DataFrame, interval: timedelta, calendar: MarketCalendar) -> pd.DataFrame:
    """OHLCV bars with closed time left out: a bar is kept when it holds ticks or the market was
    open during it (so a quiet open minute carries the previous close, a weekend does not)."""
    bars = resample_bars(snapshots, interval)
    if bars.empty:
        return bars
    step = int(interval.total_seconds() * US)
    slots = ts_to_us(bars.index)
    first, last = bars.index[0].to_pydatetime(), bars.index[-1].to_pydatetime() + interval
    keep = (bars["n_ticks"].to_numpy() > 0) | open_slot_mask(
        slots, step, calendar.open_intervals(first, last)
    )
    return bars.loc[keep]


@dataclass(frozen=True)
class WindowFrame:
    """An assembled frame and what went into it (for metadata)."""

    frame: pd.DataFrame
    warmup_bars: int
    candle_interval: timedelta | None
    rows_read: int


def assemble_frame(
    snapshots: pd.DataFrame,
    *,
    interval: timedelta,
    calendar: MarketCalendar,
    start: datetime,
    end: datetime,
    bars_per_year: float,
    windows: IndicatorWindows | None = None,
    what: str = "market",
) -> WindowFrame:
    """Indicator frame for ``[start, end)`` from snapshots that also cover the warm-up before
    ``start``. The frame carries ``attrs["bars_per_year"]`` (from the calendar) so every Sharpe
    computed from it is annualised for this market."""
    windows = windows or IndicatorWindows()
    ts_us = ts_to_us(snapshots["ts"]) if len(snapshots) else np.zeros(0, dtype=np.int64)
    candles = check_bar_interval(ts_us, interval, what)
    # A candle's high and low are real prices, not spikes to remove.
    cleaning = CleaningConfig(outlier_sigmas=math.inf) if candles is not None else CleaningConfig()
    clean, _ = clean_quotes(snapshots, cleaning)
    bars = session_bars(clean, interval, calendar)
    frame = build_indicator_frame(bars, windows)
    inside = (frame.index >= pd.Timestamp(start)) & (frame.index < pd.Timestamp(end))
    out = frame.loc[inside].copy()
    out.attrs["bars_per_year"] = float(bars_per_year)
    return WindowFrame(
        frame=out,
        warmup_bars=int((frame.index < pd.Timestamp(start)).sum()),
        candle_interval=candles,
        rows_read=len(snapshots),
    )


def gap_bars_for(interval: timedelta, threshold: timedelta = DEFAULT_GAP_THRESHOLD) -> int:
    """Consecutive open bars without a snapshot that make a gap: 5 minutes' worth at 1m, one bar
    from 5m up."""
    return max(1, round(threshold / interval))


def bar_gaps(
    ts_us: np.ndarray,
    calendar: MarketCalendar,
    interval: timedelta,
    start: datetime,
    end: datetime,
    min_bars: int,
    lookback_bars: int = GAP_LOOKBACK_BARS,
) -> list[tuple[pd.Timestamp, pd.Timestamp, int]]:
    """Runs of at least ``min_bars`` consecutive *open* bar slots without a snapshot that end
    inside ``[start, end)``: (first empty slot, end of the run, slots). Closed time (nights,
    weekends, holidays) neither makes nor breaks a gap, and a run may have begun the day before
    (pass snapshots from ``lookback_bars`` open bars before ``start`` to see where)."""
    step = int(interval.total_seconds() * US)
    lo = calendar.start_for_bars(start, max(min_bars, lookback_bars), interval)
    grid = np.arange(
        _floor(lo, step), _floor(end, step) + (0 if datetime_to_us(end) % step == 0 else step), step
    )
    if len(grid) == 0:
        return []
    open_slots = grid[open_slot_mask(grid, step, calendar.open_intervals(lo, end))]
    if len(open_slots) == 0:
        return []
    filled = np.isin(open_slots, np.unique(ts_us // step * step))
    empty = ~filled
    # Runs of empty open slots, counted over open slots only (closed slots are skipped over).
    edges = np.diff(np.r_[0, empty.astype(np.int8), 0])
    run_starts, run_ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    start_us = datetime_to_us(start)
    gaps = []
    for a, b in zip(run_starts, run_ends, strict=True):
        last_slot = open_slots[b - 1]
        if b - a >= min_bars and last_slot >= start_us:
            gaps.append(
                (
                    pd.Timestamp(int(open_slots[a]), unit="us", tz="UTC"),
                    pd.Timestamp(int(last_slot + step), unit="us", tz="UTC"),
                    int(b - a),
                )
            )
    return gaps


def _floor(moment: datetime, step: int) -> int:
    return datetime_to_us(moment) // step * step
