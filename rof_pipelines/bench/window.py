"""``rof bench window``: seconds to assemble the window frame the optimiser sees, against one store
query of the same rows.

Candles shaped like each kind of market (1m crypto klines around the clock, 1h FX with the weekend
closed, 1d stock sessions with holidays) are imported into a throwaway embedded store; then the
window ending on the last day is assembled as the assets do (one range read with the indicator
warm-up, cleaning, calendar-aware bars, indicators), and the same rows are read with one query
alone. The ratio says what the assembly costs on top of the read. Goal: under 1 s per window.
"""

import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rof_pipelines.adapters.quote_stores import open_quote_store
from rof_pipelines.adapters.windows import read_window, window_start
from rof_pipelines.core.calendars import calendar_for
from rof_pipelines.core.indicators import IndicatorWindows
from rof_pipelines.core.market import Market, MarketProfile, WindowLength, datetime_to_us, duration_text
from rof_pipelines.core.quotes import candles_to_snapshots
from rof_pipelines.core.window_frame import open_slot_mask, warmup_bars
from rof_pipelines.settings import Settings, parse_duration

US = 1_000_000
REPEATS = 5
# Which kind of market a bar interval stands for in this benchmark.
MARKET_FOR = {
    timedelta(days=1): (Market("nasdaq", "GOOG"), "XNYS"),
    timedelta(hours=1): (Market("oanda", "EURUSD"), "FX"),
}
DEFAULT_MARKET = (Market("binance", "BTCUSDT"), "24/7")
END = datetime(2025, 1, 1, tzinfo=UTC)


def open_candles(calendar_name: str, interval: timedelta, start: datetime, end: datetime, seed: int = 0):
    """A random walk of OHLCV candles on the calendar's open bar slots in ``[start, end)``."""
    step = int(interval.total_seconds() * US)
    first = datetime_to_us(start) // step * step
    slots = np.arange(first, datetime_to_us(end), step, dtype=np.int64)
    slots = slots[open_slot_mask(slots, step, calendar_for(calendar_name).open_intervals(start, end))]
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, len(slots))))
    open_ = np.r_[100.0, close[:-1]]
    wiggle = np.abs(rng.normal(0.0, 0.001, (2, len(slots))))
    return pd.DataFrame(
        {
            "ts_us": slots,
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wiggle[0]),
            "low": np.minimum(open_, close) * (1 - wiggle[1]),
            "close": close,
            "volume": rng.lognormal(3.0, 1.0, len(slots)),
        }
    )


def run(interval: str = "1h", days: int = 90) -> dict[str, Any]:
    bar = parse_duration(interval)
    market, calendar_name = MARKET_FOR.get(bar, DEFAULT_MARKET)
    profile = MarketProfile(
        market=market,
        calendar_name=calendar_name,
        asset_class="bench",
        bar_interval=bar,
        window=WindowLength(span=timedelta(days=days)),
        fee=0.0,
        slippage=0.0,
    )
    directory = Path(tempfile.mkdtemp(prefix="rof-bench-window-"))
    try:
        settings = Settings.model_validate(
            {"storage": {"quote_store": "parquet", "data_dir": str(directory)}}
        )
        start = window_start(profile, END)
        read_from = profile.calendar.start_for_bars(start, warmup_bars(IndicatorWindows()), bar)
        candles = open_candles(calendar_name, bar, read_from - timedelta(days=30), END)
        with open_quote_store(settings) as store:
            store.ensure_schema()
            store.write(market, candles_to_snapshots(candles, bar))
            read_window(store, profile, END)  # warm caches (calendar tables, numba kernels)
            assemble, read = [], []
            for _ in range(REPEATS):
                began = time.perf_counter()
                built = read_window(store, profile, END)
                assemble.append(time.perf_counter() - began)
                began = time.perf_counter()
                rows = store.read(market, read_from, END)
                read.append(time.perf_counter() - began)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    best_assemble, best_read = min(assemble), min(read)
    return {
        "bench": "window",
        "market": market.key,
        "calendar": calendar_name,
        "interval": duration_text(bar),
        "days": days,
        "bars": len(built.frame),
        "warmup_bars": built.warmup_bars,
        "rows_read": len(rows),
        "assemble_seconds": round(best_assemble, 4),
        "one_query_seconds": round(best_read, 4),
        "assemble_over_query": round(best_assemble / best_read, 2) if best_read else None,
        "goal_seconds": 1.0,
        "meets_goal": best_assemble < 1.0,
        "repeats": REPEATS,
    }
