"""Indicator frame throughput: ``rof bench indicators --rows N``."""

import time
from datetime import UTC, datetime, timedelta

from rof_pipelines.core.indicators import build_indicator_frame
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import GeneratorConfig, clean_quotes, generate_quotes, resample_bars


def bench_indicators(rows: int) -> dict[str, float | int | str]:
    """Resample + indicators for ``rows`` one-minute bars built from generated snapshots."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    # ~4 snapshots per bar keeps generation cheap while every bar has ticks.
    config = GeneratorConfig(mean_interval_seconds=15.0)
    quotes = generate_quotes(
        Market.parse("bench:BTCUSDT"), start, start + timedelta(minutes=rows), config=config
    )
    began = time.perf_counter()
    clean, _ = clean_quotes(quotes)
    cleaned = time.perf_counter()
    bars = resample_bars(clean, timedelta(minutes=1))
    resampled = time.perf_counter()
    frame = build_indicator_frame(bars)
    finished = time.perf_counter()
    return {
        "bench": "indicators",
        "bars": len(frame),
        "snapshots": len(quotes),
        "clean_seconds": round(cleaned - began, 3),
        "resample_seconds": round(resampled - cleaned, 3),
        "indicator_seconds": round(finished - resampled, 3),
        "total_seconds": round(finished - began, 3),
        "bars_per_second": round(len(frame) / (finished - resampled)),
    }
