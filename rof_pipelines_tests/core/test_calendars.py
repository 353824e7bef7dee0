"""Market calendars: hand-counted open time, bar slots and annualisation for crypto, FX and XNYS."""

import math
import pickle
import time as clock
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from rof_pipelines.core.backtest import sharpe_ratio
from rof_pipelines.core.calendars import (
    MarketCalendar,
    asset_class_of,
    calendar_for,
    calendar_gaps,
    default_calendar_name,
)
from rof_pipelines.core.knowledge import market_features
from rof_pipelines.core.rl.env import StateSpace, build_env

MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def best_seconds(run, repeat: int = 3) -> float:
    """Fastest of a few runs, so a busy machine does not fail a timing check."""
    times = []
    for _ in range(repeat):
        started = clock.perf_counter()
        run()
        times.append(clock.perf_counter() - started)
    return min(times)


# --- 24/7 ---------------------------------------------------------------------------------------------


def test_always_open_bars_per_year_is_365_25_days_of_bars():
    crypto = calendar_for("24/7")
    assert crypto.bars_per_year(MINUTE) == 365.25 * 1440 == 525_960
    assert crypto.bars_per_year(HOUR) == 8766
    assert crypto.bars_per_year(DAY) == 365.25


def test_always_open_counts_every_bar_and_day():
    crypto = calendar_for("crypto")
    assert crypto is calendar_for("24/7") and crypto.name == "24/7"
    # Bars starting in [00:00:30, 00:03): 00:01 and 00:02.
    assert crypto.bar_slots(utc(2024, 1, 1, 0, 0, 30), utc(2024, 1, 1, 0, 3), MINUTE) == 2
    assert crypto.open_seconds(utc(2024, 1, 1), utc(2024, 1, 2)) == 86_400
    assert len(crypto.open_days(date(2024, 1, 1), date(2024, 12, 31))) == 366
    assert crypto.closed_reason(date(2024, 12, 25)) is None
    assert crypto.start_for_bars(utc(2024, 1, 2), 60, MINUTE) == utc(2024, 1, 1, 23)


# --- FX -----------------------------------------------------------------------------------------------


def test_fx_bars_per_year_from_the_weekly_rule():
    """Sunday 17:00 to Friday 17:00 New York is 120 whole UTC hours every week (a DST change falls on
    a Sunday at 02:00, before the roll). 2021-01-01 is a Friday: that week adds its last 22 hours
    (to 22:00 UTC, EST); the weeks opening Sunday 2021-01-03 .. 2024-12-22 are whole (1449 days / 7
    + 1 = 208); the week opening Sunday 2024-12-29 22:00 UTC adds 2 + 48 hours before 2025."""
    fx = calendar_for("FX")
    hours = 22 + 208 * 120 + 50
    assert fx.bars_per_year(HOUR) == hours / 4 == 6258
    assert fx.bars_per_year(MINUTE) == hours * 60 / 4
    # UTC days: 1461, less 209 Saturdays (2021-01-02 .. 2024-12-28); Sundays open from 21/22:00 UTC.
    assert fx.bars_per_year(DAY) == (1461 - 209) / 4 == 313


def test_fx_saturday_closed_sunday_open_across_the_spring_dst_change():
    fx = calendar_for("forex")
    assert fx is calendar_for("FX") and fx.name == "FX"
    saturday, sunday = date(2024, 3, 9), date(2024, 3, 10)  # US DST starts Sunday 2024-03-10 02:00
    assert not fx.is_open_day(saturday)
    assert fx.closed_reason(saturday) == (
        "Saturday: the FX market is closed (Friday 17:00 to Sunday 17:00 New York)"
    )
    assert fx.is_open_day(sunday) and fx.closed_reason(sunday) is None
    weekend = fx.open_intervals(utc(2024, 3, 8), utc(2024, 3, 11))
    # Friday closes 17:00 EST = 22:00 UTC; Sunday opens 17:00 EDT = 21:00 UTC.
    assert weekend.tolist() == [
        [us(utc(2024, 3, 8)), us(utc(2024, 3, 8, 22))],
        [us(utc(2024, 3, 10, 21)), us(utc(2024, 3, 11))],
    ]
    assert fx.open_intervals(utc(2024, 3, 3), utc(2024, 3, 4))[0, 0] == us(utc(2024, 3, 3, 22))
    assert fx.open_intervals(utc(2024, 3, 15), utc(2024, 3, 16))[-1, 1] == us(utc(2024, 3, 15, 21))


def test_fx_autumn_dst_change_and_no_holidays():
    fx = calendar_for("FX")
    # Friday 2024-11-01 closes 21:00 UTC (EDT); DST ends Sunday 2024-11-03, which opens 22:00 UTC.
    assert fx.open_intervals(utc(2024, 11, 1), utc(2024, 11, 4)).tolist() == [
        [us(utc(2024, 11, 1)), us(utc(2024, 11, 1, 21))],
        [us(utc(2024, 11, 3, 22)), us(utc(2024, 11, 4))],
    ]
    assert fx.open_seconds(utc(2024, 11, 3), utc(2024, 11, 10)) == 120 * 3600
    assert fx.is_open_day(date(2024, 12, 25))  # holidays are not modelled
    assert fx.open_days(date(2024, 12, 23), date(2024, 12, 29)) == [
        date(2024, 12, d) for d in (23, 24, 25, 26, 27, 29)
    ]


# --- XNYS ---------------------------------------------------------------------------------------------

# NYSE full-day holidays falling on weekdays, 2021-2024 (1 Jan 2022, a Saturday, is not observed).
XNYS_HOLIDAYS = [
    date(*d)
    for d in [
        (2021, 1, 1), (2021, 1, 18), (2021, 2, 15), (2021, 4, 2), (2021, 5, 31),
        (2021, 7, 5), (2021, 9, 6), (2021, 11, 25), (2021, 12, 24),
        (2022, 1, 17), (2022, 2, 21), (2022, 4, 15), (2022, 5, 30), (2022, 6, 20),
        (2022, 7, 4), (2022, 9, 5), (2022, 11, 24), (2022, 12, 26),
        (2023, 1, 2), (2023, 1, 16), (2023, 2, 20), (2023, 4, 7), (2023, 5, 29),
        (2023, 6, 19), (2023, 7, 4), (2023, 9, 4), (2023, 11, 23), (2023, 12, 25),
        (2024, 1, 1), (2024, 1, 15), (2024, 2, 19), (2024, 3, 29), (2024, 5, 27),
        (2024, 6, 19), (2024, 7, 4), (2024, 9, 2), (2024, 11, 28), (2024, 12, 25),
    ]
]  # fmt: skip
# 13:00 New York closes: 3.5 hours instead of 6.5.
XNYS_HALF_DAYS = [
    date(*d)
    for d in [
        (2021, 11, 26), (2022, 11, 25), (2023, 7, 3), (2023, 11, 24),
        (2024, 7, 3), (2024, 11, 29), (2024, 12, 24),
    ]
]  # fmt: skip


def weekdays(start: date, end: date) -> list[date]:
    days = (start + timedelta(days=i) for i in range((end - start).days + 1))
    return [d for d in days if d.weekday() < 5]


def test_xnys_sessions_are_weekdays_less_holidays():
    sessions = calendar_for("XNYS").open_days(date(2021, 1, 1), date(2024, 12, 31))
    expected = [d for d in weekdays(date(2021, 1, 1), date(2024, 12, 31)) if d not in XNYS_HOLIDAYS]
    assert sessions == expected
    assert len(sessions) == 252 + 251 + 250 + 252 == 1005


def test_xnys_bars_per_year():
    xnys = calendar_for("XNYS")
    sessions, half = 1005, len(XNYS_HALF_DAYS)
    assert xnys.bars_per_year(DAY) == sessions / 4 == 251.25
    minutes = (sessions - half) * 390 + half * 210
    assert xnys.bars_per_year(MINUTE) == minutes / 4 == 97_672.5
    assert abs(xnys.bars_per_year(MINUTE) / (252 * 390) - 1) < 0.01
    # A 14:30-21:00 UTC session (6.5 h from a half hour) touches 7 one-hour UTC bars, 14:00..20:00;
    # a 14:30-18:00 half day touches 4. Summer sessions, 13:30-20:00 UTC, also touch 7.
    assert xnys.bars_per_year(HOUR) == (7 * sessions - 3 * half) / 4 == 1753.5


def test_xnys_regular_day_half_day_and_holidays():
    xnys = calendar_for("NYSE")
    assert xnys is calendar_for("XNYS") and calendar_for("xnas") is xnys and xnys.name == "XNYS"
    winter = xnys.open_intervals(utc(2024, 12, 2), utc(2024, 12, 3))
    assert winter.tolist() == [[us(utc(2024, 12, 2, 14, 30)), us(utc(2024, 12, 2, 21))]]
    assert xnys.bar_slots(utc(2024, 12, 2), utc(2024, 12, 3), HOUR) == 7
    assert xnys.bar_slots(utc(2024, 7, 1), utc(2024, 7, 2), HOUR) == 7  # 13:30-20:00 UTC
    # The day after Thanksgiving closes at 13:00 New York.
    half_day = xnys.open_intervals(utc(2024, 11, 29), utc(2024, 11, 30))
    assert half_day.tolist() == [[us(utc(2024, 11, 29, 14, 30)), us(utc(2024, 11, 29, 18))]]
    assert xnys.open_seconds(utc(2024, 11, 29), utc(2024, 11, 30)) == 3.5 * 3600
    assert xnys.bar_slots(utc(2024, 11, 29), utc(2024, 11, 30), MINUTE) == 210
    assert xnys.bar_slots(utc(2024, 11, 29), utc(2024, 11, 30), HOUR) == 4
    for holiday in (date(2024, 12, 25), date(2024, 3, 29)):  # Christmas, Good Friday
        assert not xnys.is_open_day(holiday)
    assert xnys.closed_reason(date(2024, 12, 25)) == "2024-12-25 is not a XNYS session (holiday or weekend)"
    assert xnys.closed_reason(date(2024, 12, 28)) == "2024-12-28 is not a XNYS session (holiday or weekend)"
    assert xnys.closed_reason(date(2024, 12, 24)) is None


def test_xnys_open_days_of_holiday_weeks():
    xnys = calendar_for("XNYS")
    assert xnys.open_days(date(2024, 12, 23), date(2024, 12, 29)) == [
        date(2024, 12, d) for d in (23, 24, 26, 27)
    ]
    assert xnys.open_days(date(2024, 3, 25), date(2024, 3, 31)) == [
        date(2024, 3, d) for d in (25, 26, 27, 28)
    ]
    assert xnys.open_days(date(2024, 1, 2), date(2024, 1, 1)) == []


def test_xnys_start_for_bars_walks_back_sessions():
    xnys = calendar_for("XNYS")
    end = utc(2025, 1, 1)
    sessions = xnys.open_days(date(2024, 1, 1), date(2024, 12, 31))
    start = xnys.start_for_bars(end, 60, DAY)
    assert start == datetime.combine(sessions[-60], datetime.min.time(), UTC)
    assert xnys.bar_slots(start, end, DAY) == 60
    assert xnys.bar_slots(start + DAY, end, DAY) == 59
    # Unaligned end: the bar starting 2024-12-31 00:00 is before it, so it counts.
    assert xnys.start_for_bars(utc(2024, 12, 31, 12), 1, DAY) == utc(2024, 12, 31)


def test_start_for_bars_is_latest_aligned_start_for_many_minute_bars():
    end = utc(2024, 6, 3, 15, 7, 30)
    for name in ("24/7", "FX", "XNYS"):
        calendar = calendar_for(name)
        start = calendar.start_for_bars(end, 100_000, MINUTE)
        assert us(start) % 60_000_000 == 0
        assert calendar.bar_slots(start, end, MINUTE) == 100_000
        assert calendar.bar_slots(start + MINUTE, end, MINUTE) == 99_999
        assert best_seconds(lambda c=calendar: c.start_for_bars(end, 100_000, MINUTE)) < 0.05
    with pytest.raises(ValueError, match="holds only"):
        calendar_for("XNYS").start_for_bars(utc(1991, 1, 1), 1000, DAY)
    with pytest.raises(ValueError, match="n_bars"):
        calendar_for("XNYS").start_for_bars(end, 0, DAY)


def test_exchange_break_is_closed_time():
    xhkg = calendar_for("XHKG")  # 09:30-12:00 and 13:00-16:00 Hong Kong (UTC+8)
    assert xhkg.open_intervals(utc(2024, 12, 2), utc(2024, 12, 3)).tolist() == [
        [us(utc(2024, 12, 2, 1, 30)), us(utc(2024, 12, 2, 4))],
        [us(utc(2024, 12, 2, 5)), us(utc(2024, 12, 2, 8))],
    ]
    assert xhkg.bar_slots(utc(2024, 12, 2), utc(2024, 12, 3), HOUR) == 6


def test_exchange_calendar_refuses_dates_it_does_not_cover():
    with pytest.raises(ValueError, match="covers 1990-01-01"):
        calendar_for("XNYS").open_days(date(1989, 12, 1), date(1990, 1, 31))
    xtks = calendar_for("XTKS")  # exchange_calendars knows Tokyo from 1997 only
    assert xtks.open_days(date(1997, 1, 1), date(1997, 1, 7)) == [date(1997, 1, 6), date(1997, 1, 7)]
    with pytest.raises(ValueError, match="covers 1997-01-01"):
        xtks.is_open_day(date(1996, 12, 31))


# --- naming -------------------------------------------------------------------------------------------


def test_calendar_for_names_and_errors():
    assert calendar_for("XLON").name == "XLON"
    assert isinstance(calendar_for("xlon"), MarketCalendar)
    with pytest.raises(ValueError, match="XNYS") as raised:
        calendar_for("moon")
    assert "24/7" in str(raised.value) and "FX" in str(raised.value)
    with pytest.raises(ValueError):
        calendar_for("24/5")


def test_calendars_are_shared_and_immutable():
    xnys = calendar_for("XNYS")
    assert pickle.loads(pickle.dumps(xnys)) is xnys
    with pytest.raises(AttributeError):
        xnys.name = "XLON"  # type: ignore[misc]
    day = xnys.open_intervals(utc(2024, 1, 2), utc(2024, 1, 3))
    day[0, 0] = 0  # a copy: the calendar is unchanged
    assert xnys.open_intervals(utc(2024, 1, 2), utc(2024, 1, 3))[0, 0] == us(utc(2024, 1, 2, 14, 30))


@pytest.mark.parametrize(
    ("exchange", "calendar"),
    [
        ("binance", "24/7"),
        ("Bybit", "24/7"),
        ("okx", "24/7"),
        ("coinbase", "24/7"),
        ("kraken", "24/7"),
        ("mexc", "24/7"),
        ("binance-futures", "24/7"),
        ("oanda", "FX"),
        ("fxcm", "FX"),
        ("dukascopy", "FX"),
        ("IG", "FX"),
        ("saxo", "FX"),
        ("oanda_practice", "FX"),
        ("nasdaq", "XNYS"),
        ("nyse", "XNYS"),
        ("amex", "XNYS"),
        ("us", "XNYS"),
        ("arca", "XNYS"),
        ("lse", "XLON"),
        ("london", "XLON"),
        ("xetra", "XETR"),
        ("fra", "XETR"),
        ("tse", "XTKS"),
        ("jpx", "XTKS"),
        ("xnys", "XNYS"),
        ("xhkg", "XHKG"),
        ("somewhere-new", "24/7"),
    ],
)
def test_default_calendar_name(exchange: str, calendar: str):
    assert default_calendar_name(exchange) == calendar


def test_asset_class_of():
    assert asset_class_of("24/7") == asset_class_of("crypto") == "crypto"
    assert asset_class_of("FX") == asset_class_of("forex") == "fx"
    assert asset_class_of("XNYS") == asset_class_of("NYSE") == "equity"
    with pytest.raises(ValueError):
        asset_class_of("moon")


# --- gaps ---------------------------------------------------------------------------------------------


def test_gap_across_utc_midnight_is_found_with_since():
    ts = np.array([us(utc(2024, 5, 2, 0, m)) for m in (20, 21, 22, 40)], dtype=np.int64)
    since = us(utc(2024, 5, 1, 23, 50))
    gaps = calendar_gaps(ts, calendar_for("24/7"), timedelta(minutes=10), since_us=since)
    assert gaps == [(since, int(ts[0]), 1800.0), (int(ts[2]), int(ts[3]), 1080.0)]
    assert calendar_gaps(ts, calendar_for("24/7"), timedelta(minutes=10)) == [
        (int(ts[2]), int(ts[3]), 1080.0)
    ]
    fx_gaps = calendar_gaps(ts, calendar_for("FX"), timedelta(minutes=10), since_us=since)  # a Thursday
    assert fx_gaps[0] == (since, int(ts[0]), 1800.0)


def test_gaps_ignore_weekend_and_overnight_close():
    xnys = calendar_for("XNYS")
    snapshots = [
        utc(2024, 12, 6, 20, 58),  # Friday, before the 21:00 UTC close
        utc(2024, 12, 6, 20, 59),
        utc(2024, 12, 9, 14, 31),  # Monday after the weekend: 1 + 1 open minutes apart
        utc(2024, 12, 9, 20, 59),  # 6 h 28 min of open time later: a gap
        utc(2024, 12, 10, 14, 32),  # overnight: 1 + 2 open minutes
        utc(2024, 12, 10, 14, 35),
    ]
    ts = np.array([us(s) for s in snapshots], dtype=np.int64)
    gaps = calendar_gaps(ts, xnys, timedelta(minutes=5))
    assert gaps == [(int(ts[2]), int(ts[3]), (6 * 60 + 28) * 60.0)]
    fx = calendar_for("FX")
    weekend = np.array([us(utc(2024, 3, 8, 21, 58)), us(utc(2024, 3, 10, 21, 2))], dtype=np.int64)
    assert calendar_gaps(weekend, fx, timedelta(minutes=5)) == []
    assert calendar_gaps(weekend, fx, timedelta(minutes=3)) == [(int(weekend[0]), int(weekend[1]), 240.0)]
    with pytest.raises(ValueError, match="sorted"):
        calendar_gaps(ts[::-1], xnys, timedelta(minutes=5))
    assert calendar_gaps(ts[:1], xnys, timedelta(minutes=5)) == []


def test_gaps_over_a_million_snapshots_are_fast():
    rng = np.random.default_rng(7)
    ts = np.sort(rng.integers(us(utc(2023, 1, 1)), us(utc(2024, 1, 1)), 1_000_000))
    for name in ("24/7", "FX", "XNYS"):
        calendar = calendar_for(name)
        assert best_seconds(lambda c=calendar: calendar_gaps(ts, c, timedelta(minutes=5))) < 0.2


def test_day_and_bar_queries_are_fast():
    xnys = calendar_for("XNYS")
    assert len(xnys.open_days(date(2000, 1, 1), date(2025, 12, 31))) > 6500
    assert best_seconds(lambda: xnys.open_days(date(2000, 1, 1), date(2025, 12, 31))) < 0.05
    assert best_seconds(lambda: xnys.open_intervals(utc(2000, 1, 1), utc(2025, 1, 1))) < 0.05
    for name in ("24/7", "FX", "XNYS"):
        calendar = calendar_for(name)
        assert best_seconds(lambda c=calendar: c.bar_slots(utc(2022, 1, 1), utc(2024, 1, 1), MINUTE)) < 0.05


# --- annualisation ------------------------------------------------------------------------------------


def test_sharpe_of_daily_xnys_returns_uses_the_session_count():
    """Mean 0.01 and sample sd sqrt(4e-4 / 3) give sqrt(3) / 2 a bar; a year holds 251.25 sessions."""
    returns = np.array([0.02, 0.0, 0.02, 0.0])
    per_year = calendar_for("XNYS").bars_per_year(DAY)
    assert sharpe_ratio(returns, per_year) == pytest.approx(math.sqrt(3) / 2 * math.sqrt(251.25), rel=1e-12)
    assert sharpe_ratio(returns, per_year) == pytest.approx(13.7272, abs=1e-4)
    assert sharpe_ratio(returns, calendar_for("24/7").bars_per_year(DAY)) == pytest.approx(16.5511, abs=1e-4)


def _daily_frame(per_year: float | None) -> pd.DataFrame:
    index = pd.DatetimeIndex(calendar_for("XNYS").open_days(date(2024, 1, 1), date(2024, 3, 31)))
    closes = 100 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.01, len(index))))
    frame = pd.DataFrame({"open": closes * 0.999, "close": closes, "volume": 1000.0}, index=index)
    if per_year is not None:
        frame.attrs["bars_per_year"] = per_year
    return frame


def test_frame_attrs_survive_slicing_sorting_and_pickling():
    """``attrs`` carry the calendar's figure with the frame. pandas 3.1 keeps them through these;
    it drops them for ``DataFrame(frame)``, rolling / ewm aggregations and a concat of frames whose
    attrs differ, so set them on the frame handed to ``build_env`` / ``market_features``."""
    frame = _daily_frame(251.25)
    for derived in (
        frame.iloc[5:30],
        frame.loc["2024-02-01":],
        frame.sort_index(),
        frame.sort_index(ascending=False),
        frame[["open", "close"]],
        pickle.loads(pickle.dumps(frame)),
    ):
        assert derived.attrs.get("bars_per_year") == 251.25


def test_build_env_annualises_by_the_frame_calendar():
    space = StateSpace(())
    calendar_env = build_env(_daily_frame(251.25).iloc[1:], space)
    assert calendar_env.bars_per_year() == 251.25
    assert pickle.loads(pickle.dumps(calendar_env)).bars_per_year() == 251.25
    plain_env = build_env(_daily_frame(None), space)
    assert plain_env.calendar_bars_per_year is None
    assert plain_env.bars_per_year() == 365.25  # median spacing of one day, round-the-clock rule


def test_market_features_default_to_the_frame_calendar():
    with_attrs, without = _daily_frame(251.25), _daily_frame(None)
    assert market_features(with_attrs) == market_features(without, bars_per_year=251.25)
    assert market_features(without) == market_features(without, bars_per_year=365.25)
    assert market_features(with_attrs, bars_per_year=365.25) == market_features(without)
