"""``indicator_frame``: OHLCV bars at the configured interval with indicators and features."""

from typing import Optional

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    Config,
    Failure,
    MetadataValue,
    Output,
    asset,
)

from rof_pipelines.adapters.resources import RofSettings
from rof_pipelines.core.indicators import INDICATOR_COLUMNS, IndicatorWindows, build_indicator_frame
from rof_pipelines.core.quotes import resample_bars
from rof_pipelines.errors import ConfigError
from rof_pipelines.partitions import day_bounds, market_and_day, market_day_partitions, trailing_days
from rof_pipelines.settings import parse_duration

ASSET = "indicator_frame"
# The previous day's snapshots warm the indicators up, so the day starts with every column defined.
WARMUP_DAYS = 2
# A quiet minute without a tick happens; many of them mean a feed problem.
MAX_EMPTY_BAR_SHARE = 0.01


class IndicatorFrameConfig(Config):
    """Run-time overrides, e.g. to build frames from imported 5-minute candles at their own interval."""

    bar_interval: Optional[str] = None  # noqa: UP045 - Dagster's config schema needs Optional


@asset(
    partitions_def=market_day_partitions,
    group_name="indicators",
    io_manager_key="frame_io_manager",
    kinds={"pandas", "parquet"},
    ins={"quote_snapshots": AssetIn(partition_mapping=trailing_days(WARMUP_DAYS))},
    check_specs=[
        AssetCheckSpec("ohlc_consistent", asset=ASSET, partitions_def=market_day_partitions),
        AssetCheckSpec("indicators_defined", asset=ASSET, partitions_def=market_day_partitions),
        AssetCheckSpec("bars_complete", asset=ASSET, partitions_def=market_day_partitions),
    ],
)
def indicator_frame(
    context: AssetExecutionContext,
    config: IndicatorFrameConfig,
    settings: RofSettings,
    quote_snapshots: pd.DataFrame,
):
    """OHLCV bars for the day at ``storage.bar_interval`` with RSI, MACD, ATR, Bollinger Bands (from
    ``ta``), ADX, EMAs, volatility, trend and a composite signal. The previous day's snapshots are read
    through a partition mapping to warm the indicators up."""
    market, day = market_and_day(context.partition_key)
    start, end = day_bounds(day)
    try:
        interval = (
            parse_duration(config.bar_interval)
            if config.bar_interval
            else settings.load().storage.bar_interval
        )
    except (ValueError, ConfigError) as exc:
        raise Failure(description=f"bar_interval: {exc}", allow_retries=False) from exc
    windows = IndicatorWindows()
    bars = resample_bars(quote_snapshots, interval)
    frame = build_indicator_frame(bars, windows)
    day_frame = frame.loc[(frame.index >= pd.Timestamp(start)) & (frame.index < pd.Timestamp(end))]
    if day_frame.empty:
        raise Failure(
            description=f"no bars for {market} on {day}: quote_snapshots holds nothing for that day",
            allow_retries=False,
        )
    expected_bars = int(pd.Timedelta(days=1) / pd.Timedelta(interval))
    last = day_frame.iloc[-1]
    yield Output(
        day_frame,
        metadata={
            "market": market.key,
            "date": day.isoformat(),
            "bar_interval": str(pd.Timedelta(interval)),
            "dagster/row_count": len(day_frame),
            "warmup_bars_available": int(len(frame) - len(day_frame)),
            "last_close": float(last["close"]),
            "last_rsi": _finite(last["rsi"]),
            "last_macd_hist": _finite(last["macd_hist"]),
            "last_atr_pct": _finite(last["atr_pct"]),
            "mean_volatility": _finite(day_frame["volatility"].mean()),
            "trend_at_close": _finite(last["trend"]),
            "signal_counts": MetadataValue.json(
                {str(int(k)): int(v) for k, v in day_frame["signal"].value_counts().items()}
            ),
            "tail": MetadataValue.md(day_frame.tail(5).round(6).to_markdown()),
        },
    )
    yield from frame_checks(day_frame, expected_bars)


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
        description="every indicator defined on every bar (needs the previous day for warm-up)",
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
