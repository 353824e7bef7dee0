"""``indicator_frame``: OHLCV bars at the configured interval with indicators and features."""

from dataclasses import replace
from typing import Optional

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetDep,
    AssetExecutionContext,
    Config,
    Failure,
    MetadataValue,
    Output,
)

from rof_pipelines.adapters.resources import QuoteStoreResource, RofSettings
from rof_pipelines.core.indicators import INDICATOR_COLUMNS
from rof_pipelines.core.market import duration_text
from rof_pipelines.defs.load_time import step_tags
from rof_pipelines.defs.market_day import (
    closed_day_checks,
    day_frame,
    market_day,
    market_day_asset,
    skipped_closed_day,
)
from rof_pipelines.settings import parse_duration, validate_bar_interval

ASSET = "indicator_frame"
# A quiet bar without a tick happens; many of them mean a feed problem.
MAX_EMPTY_BAR_SHARE = 0.01
CHECKS = ("ohlc_consistent", "indicators_defined", "bars_complete")


class IndicatorFrameConfig(Config):
    """Run-time overrides, e.g. to build frames at a coarser interval than the market's own."""

    bar_interval: Optional[str] = None  # noqa: UP045 - Dagster's config schema needs Optional


@market_day_asset(
    group_name="indicators",
    kinds={"pandas", "parquet"},
    deps=[AssetDep("quote_snapshots")],
    checks=CHECKS,
    op_tags=step_tags("task_worker"),
)
def indicator_frame(
    context: AssetExecutionContext,
    config: IndicatorFrameConfig,
    settings: RofSettings,
    quote_store: QuoteStoreResource,
):
    """OHLCV bars for the day at the market's bar interval (its `bar_interval` in storage.markets,
    else storage.bar_interval) with RSI, MACD, ATR, Bollinger Bands (from ``ta``), ADX, EMAs,
    volatility, trend and a composite signal. Closed time (nights, weekends, holidays) has no bars.
    The indicators warm up on as many earlier bars as they need, read in the same store query (a
    Monday's MACD is defined at 1h, a January day's at 1d). A bar interval finer than stored
    candles is refused."""
    md = market_day(context, settings)
    if config.bar_interval:
        try:
            interval = validate_bar_interval(parse_duration(config.bar_interval))
        except ValueError as exc:
            raise Failure(description=f"bar_interval: {exc}", allow_retries=False) from exc
        md = replace(md, profile=replace(md.profile, bar_interval=interval))
    if skipped_closed_day(context, md):
        yield from closed_day_checks(md.closed_reason or "", CHECKS)
        return
    built = day_frame(context, md, quote_store)
    day = built.frame
    if day.empty:
        raise Failure(
            description=f"no bars for {md.market} on {md.day}: the quote store holds nothing for that day",
            allow_retries=False,
        )
    expected_bars = md.profile.calendar.bar_slots(md.start, md.end, md.profile.bar_interval)
    last = day.iloc[-1]
    yield Output(
        day,
        metadata={
            **md.profile_metadata(),
            "bar_interval": duration_text(md.profile.bar_interval),
            "stored_candles": duration_text(built.candle_interval) if built.candle_interval else "none",
            "dagster/row_count": len(day),
            "warmup_bars_available": built.warmup_bars,
            "last_close": float(last["close"]),
            "last_rsi": _finite(last["rsi"]),
            "last_macd_hist": _finite(last["macd_hist"]),
            "last_atr_pct": _finite(last["atr_pct"]),
            "mean_volatility": _finite(day["volatility"].mean()),
            "trend_at_close": _finite(last["trend"]),
            "signal_counts": MetadataValue.json(
                {str(int(k)): int(v) for k, v in day["signal"].value_counts().items()}
            ),
            "tail": MetadataValue.md(day.tail(5).round(6).to_markdown()),
        },
    )
    yield from frame_checks(day, expected_bars)


def frame_checks(frame: pd.DataFrame, expected_bars: int):
    highs_ok = frame["high"] >= frame[["open", "close"]].max(axis=1)
    lows_ok = frame["low"] <= frame[["open", "close"]].min(axis=1)
    bad = int((~(highs_ok & lows_ok)).sum())
    yield AssetCheckResult(check_name="ohlc_consistent", passed=bad == 0, metadata={"inconsistent_bars": bad})
    nan_counts = {col: int(frame[col].isna().sum()) for col in INDICATOR_COLUMNS}
    undefined = {col: n for col, n in nan_counts.items() if n}
    yield AssetCheckResult(
        check_name="indicators_defined",
        passed=not undefined,
        severity=AssetCheckSeverity.WARN,
        metadata={"undefined_values": MetadataValue.json(undefined)},
        description="every indicator defined on every bar (warmed up on the bars before the day)",
    )
    empty_bars = int((frame["n_ticks"] == 0).sum())
    yield AssetCheckResult(
        check_name="bars_complete",
        passed=len(frame) == expected_bars and empty_bars <= MAX_EMPTY_BAR_SHARE * expected_bars,
        severity=AssetCheckSeverity.WARN,
        metadata={"bars": len(frame), "expected_bars": expected_bars, "bars_without_ticks": empty_bars},
        description=f"every bar of the day present, at most {MAX_EMPTY_BAR_SHARE:.0%} of them without ticks",
    )


def _finite(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
