"""Reading a market's window from the quote store: one range query covering the window and its
indicator warm-up, then :func:`rof_pipelines.core.window_frame.assemble_frame`.

One query, whatever the window's length: two years of daily candles or seven days of one-minute
klines are each a single read, not hundreds of per-day loads.
"""

from datetime import datetime

from rof_pipelines.adapters.quote_stores.base import QuoteStore
from rof_pipelines.core.indicators import IndicatorWindows
from rof_pipelines.core.market import MarketProfile
from rof_pipelines.core.window_frame import WindowFrame, assemble_frame, warmup_bars


def window_start(profile: MarketProfile, end: datetime) -> datetime:
    """Where the market's window ending at ``end`` begins: a span back in time, or as far back
    as the calendar needs for the window's number of bars."""
    if profile.window.bars is not None:
        return profile.calendar.start_for_bars(end, profile.window.bars, profile.bar_interval)
    return end - profile.window.span


def read_frame(
    store: QuoteStore,
    profile: MarketProfile,
    start: datetime,
    end: datetime,
    *,
    windows: IndicatorWindows | None = None,
) -> WindowFrame:
    """The indicator frame of ``[start, end)`` with every indicator warmed up on earlier bars
    (as many earlier days as the calendar needs: a weekend, a holiday, months at 1d)."""
    windows = windows or IndicatorWindows()
    calendar = profile.calendar
    read_from = calendar.start_for_bars(start, warmup_bars(windows), profile.bar_interval)
    snapshots = store.read(profile.market, read_from, end)
    return assemble_frame(
        snapshots,
        interval=profile.bar_interval,
        calendar=calendar,
        start=start,
        end=end,
        bars_per_year=profile.bars_per_year,
        windows=windows,
        what=profile.market.key,
    )


def read_window(store: QuoteStore, profile: MarketProfile, end: datetime) -> WindowFrame:
    """The window the agent, the GA and the A/B test see for the partition ending at ``end``."""
    return read_frame(store, profile, window_start(profile, end), end)
