"""Window frames: stored candles tell their interval, finer bars are refused, closed time has no
bars, gaps are counted over open bars only (across midnight too), and the frame carries the
calendar's annualisation."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from rof_pipelines.core.calendars import calendar_for
from rof_pipelines.core.market import Market, ts_to_us
from rof_pipelines.core.quotes import candles_to_snapshots, generate_quotes
from rof_pipelines.core.rl.env import StateSpace, build_env
from rof_pipelines.core.window_frame import (
    assemble_frame,
    bar_gaps,
    check_bar_interval,
    session_bars,
    stored_candle_interval,
)
from rof_pipelines.errors import BarIntervalTooFine

HOUR = timedelta(hours=1)


def hourly_candles(start: str, hours: int, skip=lambda ts: False) -> pd.DataFrame:
    times = pd.date_range(pd.Timestamp(start, tz="UTC"), periods=hours, freq="h")
    times = times[[not skip(t) for t in times]]
    close = 1.1 + np.cumsum(np.full(len(times), 0.0001))
    return pd.DataFrame(
        {
            "ts_us": ts_to_us(times),
            "open": close - 0.00005,
            "high": close + 0.0002,
            "low": close - 0.0002,
            "close": close,
            "volume": 1.0,
        }
    )


def fx_weekend(ts: pd.Timestamp) -> bool:
    """Closed from Friday 21:00 to Sunday 21:00 UTC (New York 17:00 in summer time)."""
    return (
        ts.day_of_week == 5
        or (ts.day_of_week == 4 and ts.hour >= 21)
        or (ts.day_of_week == 6 and ts.hour < 21)
    )


def test_candle_snapshots_tell_their_interval_and_ticks_do_not():
    for interval in (timedelta(minutes=1), timedelta(minutes=5), HOUR, timedelta(days=1)):
        frame = hourly_candles("2024-06-03", 48)
        frame["ts_us"] = ts_to_us(pd.date_range("2024-06-03", periods=48, freq=interval, tz="UTC"))
        snapshots = candles_to_snapshots(frame, interval)
        assert stored_candle_interval(ts_to_us(snapshots["ts"])) == interval
    ticks = generate_quotes(
        Market.parse("binance:TONUSDT"), datetime(2024, 6, 3, tzinfo=UTC), datetime(2024, 6, 4, tzinfo=UTC)
    )
    assert stored_candle_interval(ts_to_us(ticks["ts"])) is None


def test_bars_finer_than_the_candles_are_refused_with_both_numbers():
    snapshots = candles_to_snapshots(hourly_candles("2024-06-03", 24), HOUR)
    ts = ts_to_us(snapshots["ts"])
    with pytest.raises(BarIntervalTooFine, match=r"bar_interval 15m is finer than the stored 1h candles"):
        check_bar_interval(ts, timedelta(minutes=15), "oanda:EURUSD")
    assert check_bar_interval(ts, HOUR, "oanda:EURUSD") == HOUR
    assert check_bar_interval(ts, timedelta(hours=4), "oanda:EURUSD") == HOUR  # coarser is fine


def test_the_fx_weekend_has_no_bars_and_a_quiet_open_hour_keeps_its_bar():
    fx = calendar_for("FX")
    # 2024-06-07 is a Friday; 2024-06-10 a Monday. Hour 2024-06-10 03:00 has no candle (quiet).
    candles = hourly_candles(
        "2024-06-06", 24 * 5, skip=lambda t: fx_weekend(t) or t == pd.Timestamp("2024-06-10 03:00", tz="UTC")
    )
    bars = session_bars(candles_to_snapshots(candles, HOUR), HOUR, fx)
    saturday = bars.loc["2024-06-08"]
    assert saturday.empty
    assert pd.Timestamp("2024-06-10 03:00", tz="UTC") in bars.index  # open: carried, not dropped
    assert bars.loc[pd.Timestamp("2024-06-10 03:00", tz="UTC"), "n_ticks"] == 0
    assert len(bars.loc["2024-06-07"]) == 21  # Friday until the 21:00 UTC close


def test_gaps_count_open_bars_only_and_span_midnight():
    fx = calendar_for("FX")
    # Missing: Monday 2024-06-10 22:00 .. Tuesday 02:00 (4 open hours across midnight); the weekend
    # is closed and is no gap.
    hole = pd.date_range("2024-06-10 22:00", periods=4, freq="h", tz="UTC")
    candles = hourly_candles("2024-06-06", 24 * 6, skip=lambda t: fx_weekend(t) or t in hole)
    ts = ts_to_us(candles_to_snapshots(candles, HOUR)["ts"])
    tuesday = datetime(2024, 6, 11, tzinfo=UTC)
    gaps = bar_gaps(ts, fx, HOUR, tuesday, tuesday + timedelta(days=1), min_bars=1)
    assert [(str(a), str(b), n) for a, b, n in gaps] == [
        ("2024-06-10 22:00:00+00:00", "2024-06-11 02:00:00+00:00", 4)
    ]
    monday = datetime(2024, 6, 10, tzinfo=UTC)
    # Seen from Monday too (the run ends on Tuesday, so Monday's check reports what it has seen).
    sunday = datetime(2024, 6, 9, tzinfo=UTC)
    assert bar_gaps(ts, fx, HOUR, sunday, monday, min_bars=1) == []  # Sunday: only the closed weekend


def test_equity_daily_gap_is_a_missing_session_not_a_holiday():
    xnys = calendar_for("XNYS")
    sessions = [d for d in pd.date_range("2024-06-24", "2024-07-12", tz="UTC") if xnys.is_open_day(d.date())]
    kept = [d for d in sessions if d != pd.Timestamp("2024-07-09", tz="UTC")]  # one missing session
    candles = pd.DataFrame(
        {
            "ts_us": ts_to_us(pd.DatetimeIndex(kept)),
            "open": 1.0,
            "high": 1.1,
            "low": 0.9,
            "close": 1.0,
            "volume": 1.0,
        }
    )
    ts = ts_to_us(candles_to_snapshots(candles, timedelta(days=1))["ts"])
    day = timedelta(days=1)
    july4 = datetime(2024, 7, 4, tzinfo=UTC)
    assert bar_gaps(ts, xnys, day, july4, july4 + day * 2, min_bars=1) == []  # the holiday is closed
    july10 = datetime(2024, 7, 10, tzinfo=UTC)
    gaps = bar_gaps(ts, xnys, day, july10 - day, july10, min_bars=1)
    assert [(a.date().isoformat(), n) for a, _, n in gaps] == [("2024-07-09", 1)]


def test_assembled_frame_is_warmed_up_and_annualised_by_its_calendar():
    fx = calendar_for("FX")
    candles = hourly_candles("2024-05-01", 24 * 40, skip=fx_weekend)
    snapshots = candles_to_snapshots(candles, HOUR)
    monday = datetime(2024, 6, 3, tzinfo=UTC)
    built = assemble_frame(
        snapshots,
        interval=HOUR,
        calendar=fx,
        start=monday,
        end=monday + timedelta(days=1),
        bars_per_year=fx.bars_per_year(HOUR),
    )
    frame = built.frame
    assert len(frame) == 24 and built.candle_interval == HOUR
    assert not frame[["macd", "macd_signal", "adx", "rsi"]].isna().any().any()  # Monday is warm
    assert frame.attrs["bars_per_year"] == pytest.approx(6258.0)
    env = build_env(frame, StateSpace.fit(frame))
    assert env.bars_per_year() == pytest.approx(6258.0)  # not 8766: the FX week is closed 2 days
