"""Market calendars: when a market trades, so gaps, bar counts and annualisation follow its hours.

A calendar is a sorted table of non-overlapping ``[open, close)`` stretches in UTC epoch
microseconds; every query is a ``searchsorted`` over that table, so 25 years cost no Python loop.

* ``"24/7"`` (alias ``"crypto"``): always open.
* ``"FX"`` (alias ``"forex"``): Sunday 17:00 to Friday 17:00 America/New_York every week, the
  interbank roll, DST-aware through zoneinfo. Holidays are not modelled: FX venues quote through
  them (thinly), so a Christmas or New Year's day counts as open.
* Exchange calendars (``"XNYS"``, aliases such as ``"NYSE"``): the sessions of ``exchange_calendars``
  from 1990 (or the calendar's earliest date) to the end of its window, about a year ahead. Early
  closes and late opens come with the sessions; a lunch break is closed time.

Days are UTC days: a day is open when any open moment falls inside ``[00:00, 24:00)`` UTC. Bars
lie on the UTC grid of their interval counted from the epoch: bar ``k`` covers
``[k * interval, (k + 1) * interval)`` and counts as a slot when it holds any open moment.
Naive datetimes are read as UTC.
"""

import re
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

__all__ = [
    "MarketCalendar",
    "asset_class_of",
    "calendar_for",
    "calendar_gaps",
    "default_calendar_name",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(1970, 1, 1)
_ONE_US = timedelta(microseconds=1)
_DAY_US = 86_400_000_000
_YEAR_US = int(365.25 * _DAY_US)

# bars_per_year averages these 4 years (one of them leap): 365.25 days a year on average.
_REFERENCE_START = datetime(2021, 1, 1, tzinfo=UTC)
_REFERENCE_END = datetime(2025, 1, 1, tzinfo=UTC)
_REFERENCE_YEARS = 4

_EXCHANGE_START = date(1990, 1, 1)
_FX_FIRST_SUNDAY = date(1969, 12, 28)
_FX_END = date(2100, 1, 1)
_FX_ROLL = time(17, 0)
_NEW_YORK = ZoneInfo("America/New_York")

ALWAYS_OPEN = "24/7"
FX = "FX"
_OWN_NAMES = {"24/7": ALWAYS_OPEN, "CRYPTO": ALWAYS_OPEN, "FX": FX, "FOREX": FX}
# exchange_calendars' own 24/5 and 24/7 clash with the names above; "FX" is the 24/5 market here.
_SHADOWED_EXCHANGE_NAMES = {"24/5", "24/7"}


class MarketCalendar(ABC):
    """When one market trades. Instances come from :func:`calendar_for`, are shared and immutable."""

    __slots__ = ("_bars_per_year", "_closes", "_coverage", "_intervals", "_name", "_opens")

    def __init__(self, name: str, intervals: np.ndarray, coverage: tuple[int, int]) -> None:
        intervals = _merged(np.asarray(intervals, dtype=np.int64).reshape(-1, 2))
        opens, closes = np.ascontiguousarray(intervals[:, 0]), np.ascontiguousarray(intervals[:, 1])
        for table in (intervals, opens, closes):
            table.flags.writeable = False
        for slot, value in (
            ("_name", name),
            ("_intervals", intervals),
            ("_opens", opens),
            ("_closes", closes),
            ("_coverage", coverage),
            ("_bars_per_year", {}),
        ):
            object.__setattr__(self, slot, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        """Unpickle to the shared instance instead of shipping the session table."""
        return calendar_for, (self._name,)

    def __repr__(self) -> str:
        return f"calendar_for({self._name!r})"

    @property
    def name(self) -> str:
        return self._name

    # -- days --------------------------------------------------------------------------------------

    def is_open_day(self, day: date) -> bool:
        lo = _day_number(day) * _DAY_US
        return self._clipped(lo, lo + _DAY_US).shape[0] > 0

    def closed_reason(self, day: date) -> str | None:
        """None for an open UTC day, else why it is closed (for gap reports and logs)."""
        if self.is_open_day(day):
            return None
        return self._closed_message(_utc_date(day))

    def open_days(self, start: date, end: date) -> list[date]:
        """The open UTC days of ``start..end`` (both included)."""
        first, last = _day_number(start), _day_number(end)
        if last < first:
            return []
        stretches = self._clipped(first * _DAY_US, (last + 1) * _DAY_US)
        n_days = last - first + 1
        first_day = stretches[:, 0] // _DAY_US - first
        last_day = (stretches[:, 1] - 1) // _DAY_US - first
        marks = np.bincount(first_day, minlength=n_days + 1) - np.bincount(last_day + 1, minlength=n_days + 1)
        days = np.flatnonzero(np.cumsum(marks[:n_days]) > 0) + first
        return days.astype("datetime64[D]").tolist()

    # -- time ----------------------------------------------------------------------------------------

    def open_intervals(self, start: datetime, end: datetime) -> np.ndarray:
        """``(n, 2)`` int64 UTC microseconds, the sorted ``[open, close)`` stretches inside ``[start, end)``."""
        return self._clipped(_to_us(start), _to_us(end))

    def open_seconds(self, start: datetime, end: datetime) -> float:
        stretches = self.open_intervals(start, end)
        return float((stretches[:, 1] - stretches[:, 0]).sum()) / 1e6

    # -- bars ----------------------------------------------------------------------------------------

    def bar_slots(self, start: datetime, end: datetime, interval: timedelta) -> int:
        """Bars of the ``interval`` grid starting in ``[start, end)`` that hold an open moment."""
        step = _interval_us(interval)
        first, stop = -(-_to_us(start) // step), -(-_to_us(end) // step)
        if stop <= first:
            return 0
        lo, hi = _bar_ranges(self._clipped(first * step, stop * step), step)
        return int((hi - lo + 1).sum())

    def bars_per_year(self, interval: timedelta) -> float:
        """Average bar slots a year over 2021-2024: the annualisation factor for this bar interval."""
        step = _interval_us(interval)
        value = self._bars_per_year.get(step)
        if value is None:
            value = self.bar_slots(_REFERENCE_START, _REFERENCE_END, interval) / _REFERENCE_YEARS
            self._bars_per_year[step] = value
        return value

    def start_for_bars(self, end: datetime, n_bars: int, interval: timedelta) -> datetime:
        """The latest grid-aligned start with ``bar_slots(start, end, interval) >= n_bars``: where to
        begin loading so that a window holds ``n_bars`` bars of this market."""
        if n_bars < 1:
            raise ValueError(f"n_bars must be >= 1, got {n_bars}")
        step = _interval_us(interval)
        stop = -(-_to_us(end) // step)  # bars k < stop start before `end`
        earliest = -(-self._coverage[0] // step)
        per_year = max(self.bars_per_year(interval), 1e-9)
        span_bars = int(n_bars / per_year * _YEAR_US * 1.25 // step) + int(14 * _DAY_US // step) + 1
        while True:
            first = max(stop - span_bars, earliest)
            lo, hi = _bar_ranges(self._clipped(first * step, stop * step), step)
            lengths = hi - lo + 1
            from_end = np.cumsum(lengths[::-1])[::-1]  # bars in ranges i.. of this window
            if from_end.size and from_end[0] >= n_bars:
                row = int(np.flatnonzero(from_end >= n_bars)[-1])
                later = int(from_end[row + 1]) if row + 1 < from_end.size else 0
                bar = int(hi[row]) - (n_bars - later) + 1
                return _from_us(bar * step)
            if first == earliest:
                found = int(from_end[0]) if from_end.size else 0
                raise ValueError(
                    f"the {self._name} calendar holds only {found} bars of {interval} before {end} "
                    f"(it starts {_from_us(self._coverage[0]):%Y-%m-%d}); {n_bars} were asked for"
                )
            span_bars *= 2

    # -- internals -------------------------------------------------------------------------------------

    @abstractmethod
    def _closed_message(self, day: date) -> str:
        """Why this closed UTC day has no trading."""

    def _clipped(self, lo: int, hi: int) -> np.ndarray:
        """The open stretches inside ``[lo, hi)``, clipped to it."""
        if hi <= lo:
            return np.empty((0, 2), dtype=np.int64)
        self._check_coverage(lo, hi)
        first = int(np.searchsorted(self._closes, lo, side="right"))
        stop = int(np.searchsorted(self._opens, hi, side="left"))
        return np.clip(self._intervals[first:stop], lo, hi)

    def _check_coverage(self, lo: int, hi: int) -> None:
        cover_lo, cover_hi = self._coverage
        if lo < cover_lo or hi > cover_hi:
            raise ValueError(
                f"the {self._name} calendar covers {_from_us(cover_lo):%Y-%m-%d} to "
                f"{_from_us(cover_hi):%Y-%m-%d}; asked for {_from_us(lo)} to {_from_us(hi)}"
            )

    def _open_time_at(self, ts_us: np.ndarray) -> np.ndarray:
        """Open microseconds between ``ts_us[0]`` and each of the sorted ``ts_us``."""
        stretches = self._clipped(int(ts_us[0]), int(ts_us[-1]) + 1)
        if stretches.shape[0] == 0:
            return np.zeros(ts_us.shape[0], dtype=np.int64)
        opens = stretches[:, 0]
        lengths = stretches[:, 1] - opens
        before = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        row = np.searchsorted(opens, ts_us, side="right") - 1
        inside = np.maximum(row, 0)
        elapsed = before[inside] + np.clip(ts_us - opens[inside], 0, lengths[inside])
        return np.where(row >= 0, elapsed, 0)


class _AlwaysOpen(MarketCalendar):
    """Crypto venues: no close, no weekend."""

    __slots__ = ()

    def __init__(self) -> None:
        coverage = (_to_us(datetime(1900, 1, 1)), _to_us(datetime(2200, 1, 1)))
        super().__init__(ALWAYS_OPEN, np.array([coverage], dtype=np.int64), coverage)

    def _closed_message(self, day: date) -> str:  # pragma: no cover - never closed
        return f"{day} is closed on the 24/7 calendar"


class _ForexWeek(MarketCalendar):
    """The interbank week, Sunday 17:00 to Friday 17:00 New York; holidays are not modelled."""

    __slots__ = ()

    def __init__(self) -> None:
        # A DST change falls on a Sunday at 02:00, before the roll, so each week keeps one UTC offset.
        rows = []
        sunday = _FX_FIRST_SUNDAY
        while sunday < _FX_END:
            rows.append((_new_york_roll(sunday), _new_york_roll(sunday + timedelta(days=5))))
            sunday += timedelta(days=7)
        coverage = (_to_us(datetime(1970, 1, 1)), _to_us(datetime.combine(_FX_END, time())))
        super().__init__(FX, np.array(rows, dtype=np.int64), coverage)

    def _closed_message(self, day: date) -> str:
        return f"{day:%A}: the FX market is closed (Friday 17:00 to Sunday 17:00 New York)"


class _ExchangeSessions(MarketCalendar):
    """An exchange's sessions from exchange_calendars, breaks taken out."""

    __slots__ = ("_session_days",)

    def __init__(self, code: str) -> None:
        schedule, start = _exchange_schedule(code)
        opens, closes = _column_us(schedule["open"]), _column_us(schedule["close"])
        break_starts, break_ends = _column_us(schedule["break_start"]), _column_us(schedule["break_end"])
        has_break = (break_starts != _NAT) & (break_ends != _NAT)
        starts = np.concatenate([opens, break_ends[has_break]])
        stops = np.concatenate([np.where(has_break, break_starts, closes), closes[has_break]])
        order = np.argsort(starts, kind="stable")
        intervals = np.stack([starts[order], stops[order]], axis=1)
        labels = schedule.index.to_numpy().astype("datetime64[D]").astype(np.int64)
        coverage = (_day_number(start) * _DAY_US, (int(labels[-1]) + 1) * _DAY_US)
        super().__init__(code, intervals, coverage)
        labels.flags.writeable = False
        object.__setattr__(self, "_session_days", labels)

    def _closed_message(self, day: date) -> str:
        number = _day_number(day)
        index = int(np.searchsorted(self._session_days, number))
        is_session = index < self._session_days.shape[0] and self._session_days[index] == number
        if not is_session:
            return f"{day.isoformat()} is not a {self._name} session (holiday or weekend)"
        return f"{day.isoformat()}: the {self._name} session falls outside this UTC day"


# --- choosing a calendar ------------------------------------------------------------------------------

_CALENDARS: dict[str, MarketCalendar] = {}
_CALENDARS_LOCK = threading.Lock()


def calendar_for(name: str) -> MarketCalendar:
    """The shared calendar for ``"24/7"``/``"crypto"``, ``"FX"``/``"forex"`` or an exchange_calendars
    name or alias (``"XNYS"``, ``"NYSE"``, ``"XLON"``, ...); exchange tables take ~0.1-0.3 s once."""
    canonical = _canonical_name(name)
    found = _CALENDARS.get(canonical)
    if found is not None:
        return found
    with _CALENDARS_LOCK:
        found = _CALENDARS.get(canonical)
        if found is None:
            if canonical == ALWAYS_OPEN:
                found = _AlwaysOpen()
            elif canonical == FX:
                found = _ForexWeek()
            else:
                found = _ExchangeSessions(canonical)
            _CALENDARS[canonical] = found
    return found


def asset_class_of(calendar_name: str) -> str:
    """``"crypto"`` for 24/7, ``"fx"`` for FX, ``"equity"`` for exchange calendars."""
    canonical = _canonical_name(calendar_name)
    if canonical == ALWAYS_OPEN:
        return "crypto"
    if canonical == FX:
        return "fx"
    return "equity"


_CRYPTO_VENUES = frozenset(
    [
        "binance",
        "binanceus",
        "bybit",
        "okx",
        "okex",
        "coinbase",
        "coinbasepro",
        "coinbaseexchange",
        "kraken",
        "krakenfutures",
        "bitfinex",
        "kucoin",
        "huobi",
        "htx",
        "gate",
        "gateio",
        "bitstamp",
        "mexc",
        "bitget",
        "bingx",
        "bitmex",
        "deribit",
        "gemini",
        "cryptocom",
        "upbit",
        "bithumb",
        "poloniex",
        "phemex",
        "bitmart",
        "lbank",
        "whitebit",
        "hyperliquid",
        "dydx",
        "bitflyer",
        "bitvavo",
    ]
)
_FX_VENUES = frozenset(
    [
        "oanda",
        "fxcm",
        "forex",
        "fx",
        "dukascopy",
        "ig",
        "saxo",
        "lmax",
        "fxpro",
        "pepperstone",
        "icmarkets",
        "truefx",
        "histdata",
    ]
)
_EXCHANGE_VENUES = {
    "nasdaq": "XNYS",
    "nyse": "XNYS",
    "amex": "XNYS",
    "us": "XNYS",
    "arca": "XNYS",
    "lse": "XLON",
    "london": "XLON",
    "xetra": "XETR",
    "fra": "XETR",
    "tse": "XTKS",
    "jpx": "XTKS",
}


def default_calendar_name(exchange: str) -> str:
    """The calendar a quote source's exchange trades on; unknown venues are taken as crypto (24/7).

    Suffixed venue names (``"binance-futures"``, ``"oanda_practice"``) go by their first word.
    """
    key = exchange.strip().lower()
    head = re.split(r"[^a-z0-9]+", key, maxsplit=1)[0]
    for candidate in dict.fromkeys((key, head)):
        if candidate in _CRYPTO_VENUES:
            return ALWAYS_OPEN
        if candidate in _FX_VENUES:
            return FX
        if candidate in _EXCHANGE_VENUES:
            return _EXCHANGE_VENUES[candidate]
    for candidate in dict.fromkeys((key, head)):
        code = _exchange_codes().get(candidate.upper())
        if code is not None:
            return code
    return ALWAYS_OPEN


def _canonical_name(name: str) -> str:
    key = name.strip().upper()
    if key in _OWN_NAMES:
        return _OWN_NAMES[key]
    code = _exchange_codes().get(key)
    if code is None:
        raise ValueError(
            f"unknown market calendar {name!r}; choose '24/7' (alias 'crypto'), 'FX' (alias 'forex') "
            f"or an exchange_calendars name: {', '.join(sorted(_exchange_codes()))}"
        )
    return code


@cache
def _exchange_codes() -> dict[str, str]:
    """Upper-cased exchange_calendars names and aliases -> canonical code (imported on first use)."""
    with _quiet_pandas_deprecations():
        import exchange_calendars as xc

    names = set(xc.get_calendar_names(include_aliases=True)) - _SHADOWED_EXCHANGE_NAMES
    return {name.upper(): xc.resolve_alias(name) for name in names}


def _exchange_schedule(code: str) -> tuple[Any, date]:
    """The session table and its first date: 1990, or the earliest date the calendar knows."""
    with _quiet_pandas_deprecations():
        import exchange_calendars as xc

        start = _EXCHANGE_START
        try:
            try:
                calendar = xc.get_calendar(code, start=start.isoformat())
            except ValueError:
                bound = type(xc.get_calendar(code)).bound_min()
                if bound is None or bound.date() <= start:
                    raise
                start = bound.date()
                calendar = xc.get_calendar(code, start=start.isoformat())
        except (ValueError, NotImplementedError) as exc:
            raise ValueError(f"exchange_calendars cannot build the {code} calendar: {exc}") from exc
    return calendar.schedule, start


@contextmanager
def _quiet_pandas_deprecations() -> Iterator[None]:
    """exchange_calendars 4.13 uses pandas APIs that pandas 3.1 deprecates (tz-aware
    ``Series.values``, ``DatetimeIndex.weekday``); those warnings are about the library, not us."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


# --- gaps ----------------------------------------------------------------------------------------------


def calendar_gaps(
    ts_us: np.ndarray, calendar: MarketCalendar, max_gap: timedelta, *, since_us: int | None = None
) -> list[tuple[int, int, float]]:
    """``(gap_start_us, gap_end_us, open_seconds_inside)`` for each pair of consecutive snapshots
    more than ``max_gap`` of *open* time apart: nights, weekends and holidays are not gaps.

    ``since_us``, the last snapshot before ``ts_us``, lets a gap across the previous boundary show.
    """
    times = np.asarray(ts_us, dtype=np.int64)
    if since_us is not None:
        times = np.concatenate((np.array([since_us], dtype=np.int64), times))
    if times.shape[0] < 2:
        return []
    if bool((np.diff(times) < 0).any()):
        raise ValueError("snapshot times must be sorted")
    open_inside = np.diff(calendar._open_time_at(times))
    hits = np.flatnonzero(open_inside > _interval_us(max_gap, allow_zero=True))
    return [(int(times[i]), int(times[i + 1]), float(open_inside[i]) / 1e6) for i in hits]


# --- helpers -------------------------------------------------------------------------------------------

_NAT = np.iinfo(np.int64).min


def _to_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_US


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


def _utc_date(day: date) -> date:
    if isinstance(day, datetime):
        return (day if day.tzinfo is None else day.astimezone(UTC)).date()
    return day


def _day_number(day: date) -> int:
    return (_utc_date(day) - _EPOCH_DAY).days


def _interval_us(interval: timedelta, *, allow_zero: bool = False) -> int:
    step = interval // _ONE_US
    if step < 0 or (step == 0 and not allow_zero):
        raise ValueError(f"interval must be positive, got {interval}")
    return step


def _new_york_roll(day: date) -> int:
    return _to_us(datetime.combine(day, _FX_ROLL, _NEW_YORK))


def _column_us(column: Any) -> np.ndarray:
    """A tz-aware datetime column as int64 UTC microseconds, NaT kept as ``_NAT``."""
    values = column.to_numpy(dtype="datetime64[us]", na_value=np.datetime64("NaT"))
    return values.astype(np.int64)


def _merged(intervals: np.ndarray) -> np.ndarray:
    """Sorted stretches with empty ones dropped and touching or overlapping ones joined."""
    intervals = intervals[intervals[:, 1] > intervals[:, 0]]
    if intervals.shape[0] < 2:
        return intervals.copy()
    intervals = intervals[np.argsort(intervals[:, 0], kind="stable")]
    reach = np.maximum.accumulate(intervals[:, 1])
    starts_group = np.concatenate(([True], intervals[1:, 0] > reach[:-1]))
    heads = np.flatnonzero(starts_group)
    return np.stack([intervals[heads, 0], np.maximum.reduceat(intervals[:, 1], heads)], axis=1)


def _bar_ranges(stretches: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint inclusive ranges ``lo..hi`` of the bar numbers the sorted stretches touch."""
    lo = stretches[:, 0] // step
    hi = (stretches[:, 1] - 1) // step
    if lo.shape[0] > 1:
        lo[1:] += lo[1:] == hi[:-1]  # a bar shared with the previous stretch counts once
    keep = lo <= hi
    return lo[keep], hi[keep]
