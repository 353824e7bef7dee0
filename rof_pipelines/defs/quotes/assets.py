"""``quote_snapshots``: the day's snapshots from the configured store, cleaned, with checks."""

from datetime import timedelta

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    Failure,
    MetadataValue,
    Output,
)

from rof_pipelines.adapters.resources import QuoteStoreResource, RofSettings
from rof_pipelines.core.market import duration_text, ts_to_us
from rof_pipelines.core.quotes import CleaningConfig, clean_quotes
from rof_pipelines.core.window_frame import GAP_LOOKBACK_BARS, bar_gaps, gap_bars_for
from rof_pipelines.defs.load_time import step_tags
from rof_pipelines.defs.market_day import closed_day_checks, market_day, market_day_asset, skipped_closed_day
from rof_pipelines.defs.resilience import step_errors

ASSET = "quote_snapshots"
MAX_SANE_JUMP = 0.2  # a 20 % move between two consecutive snapshots is not a market, it is a bug
CHECKS = ("unique_ordered_timestamps", "price_sanity", "gaps")


@market_day_asset(
    group_name="quotes", kinds={"pandas", "parquet"}, checks=CHECKS, op_tags=step_tags("task_worker")
)
def quote_snapshots(context: AssetExecutionContext, settings: RofSettings, quote_store: QuoteStoreResource):
    """One market's quote snapshots for one UTC day, read from the configured quote store and cleaned:
    duplicates, out-of-order deliveries, NaN and non-positive prices, isolated spikes and crossed
    quotes are removed or repaired. Gaps are runs of open bars (the market's calendar and bar
    interval) without a snapshot, seen across the day boundary too. On a day the market's calendar
    is closed (an FX Saturday, an exchange holiday) nothing is materialised and the checks say why."""
    md = market_day(context, settings)
    if skipped_closed_day(context, md):
        yield from closed_day_checks(md.closed_reason or "", CHECKS)
        return
    interval = md.profile.bar_interval
    gap_bars = gap_bars_for(interval)
    lookback = md.profile.calendar.start_for_bars(md.start, max(gap_bars, GAP_LOOKBACK_BARS), interval)
    with step_errors(), quote_store.open() as store:
        described = store.describe()
        raw = store.read(md.market, lookback, md.end)
    before = raw["ts"] < pd.Timestamp(md.start)
    day_raw = raw.loc[~before]
    if day_raw.empty:
        raise Failure(
            description=(
                f"no quote snapshots for {md.market} on {md.day} ({md.profile.calendar_name} calendar: "
                f"a trading day) in {described}; load some with `rof quotes generate` or "
                f"`rof quotes import`"
            ),
            allow_retries=False,
        )
    clean, report = clean_quotes(day_raw, CleaningConfig())
    counts = report.as_dict()
    for name in ("gap_starts", "gaps", "max_gap_seconds"):  # gaps below come from the calendar
        counts.pop(name)
    ts_all = np.concatenate([ts_to_us(raw.loc[before, "ts"]), ts_to_us(clean["ts"])])
    gaps = bar_gaps(ts_all, md.profile.calendar, interval, md.start, md.end, gap_bars)
    yield Output(
        clean,
        metadata={
            **md.profile_metadata(),
            "store": described,
            "dagster/row_count": len(clean),
            "first_ts": str(clean["ts"].iloc[0]),
            "last_ts": str(clean["ts"].iloc[-1]),
            **{f"cleaning/{name}": value for name, value in counts.items()},
            "preview": MetadataValue.md(clean.head(10).to_markdown(index=False)),
        },
    )
    yield from snapshot_checks(clean, report.duplicates, report.outliers, gaps, gap_bars, interval)


def snapshot_checks(
    clean: pd.DataFrame,
    raw_duplicates: int,
    raw_outliers: int,
    gaps: list[tuple[pd.Timestamp, pd.Timestamp, int]],
    gap_bars: int,
    interval: timedelta,
):
    """Checks on the cleaned output (what downstream relies on), with the raw feed's counts attached."""
    ts = ts_to_us(clean["ts"])
    increasing = bool(np.all(np.diff(ts) > 0))
    yield AssetCheckResult(
        check_name="unique_ordered_timestamps",
        passed=increasing,
        metadata={"duplicates_in_feed": raw_duplicates},
        description="timestamps strictly increasing after cleaning",
    )
    price = clean["price"].to_numpy()
    bid, ask = clean["bid"].to_numpy(), clean["ask"].to_numpy()
    jumps = np.abs(np.diff(np.log(price))) if len(price) > 1 else np.zeros(0)
    problems = {
        "non_positive_or_nan_price": int(np.sum(~np.isfinite(price) | (price <= 0))),
        "crossed_bid_ask": int(np.sum(np.isfinite(bid) & np.isfinite(ask) & (bid > ask))),
        "jumps_over_20pct": int(np.sum(jumps > np.log1p(MAX_SANE_JUMP))),
    }
    yield AssetCheckResult(
        check_name="price_sanity",
        passed=not any(problems.values()),
        metadata={**problems, "outliers_removed": raw_outliers},
    )
    longest = max((n for _, _, n in gaps), default=0)
    yield AssetCheckResult(
        check_name="gaps",
        passed=not gaps,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "gaps": len(gaps),
            "longest_gap_bars": longest,
            "longest_gap_seconds": longest * interval.total_seconds(),
            "gap_starts": MetadataValue.json([f"{a} .. {b} ({n} bars)" for a, b, n in gaps[:20]]),
        },
        description=(
            f"no run of {gap_bars} or more open {duration_text(interval)} bars without a snapshot "
            "(the market's calendar; closed time does not count)"
        ),
    )
