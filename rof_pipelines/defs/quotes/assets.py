"""``quote_snapshots``: the day's snapshots from the configured store, cleaned, with checks."""

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Backoff,
    Failure,
    MetadataValue,
    Output,
    RetryPolicy,
    asset,
)

from rof_pipelines.adapters.resources import QuoteStoreResource
from rof_pipelines.core.market import ts_to_us
from rof_pipelines.core.quotes import CleaningConfig, clean_quotes
from rof_pipelines.errors import PermanentError
from rof_pipelines.partitions import day_bounds, market_and_day, market_day_partitions

ASSET = "quote_snapshots"
MAX_SANE_JUMP = 0.2  # a 20 % move between two consecutive snapshots is not a market, it is a bug

# Transient failures (a lost connection, an open circuit) retry with backoff; permanent ones do not.
STORE_RETRY = RetryPolicy(max_retries=3, delay=5, backoff=Backoff.EXPONENTIAL)


@asset(
    partitions_def=market_day_partitions,
    group_name="quotes",
    io_manager_key="frame_io_manager",
    kinds={"pandas", "parquet"},
    retry_policy=STORE_RETRY,
    check_specs=[
        AssetCheckSpec("unique_ordered_timestamps", asset=ASSET, partitions_def=market_day_partitions),
        AssetCheckSpec("price_sanity", asset=ASSET, partitions_def=market_day_partitions),
        AssetCheckSpec("gaps", asset=ASSET, partitions_def=market_day_partitions),
    ],
)
def quote_snapshots(context: AssetExecutionContext, quote_store: QuoteStoreResource):
    """One market's quote snapshots for one UTC day, read from the configured quote store and cleaned:
    duplicates, out-of-order deliveries, NaN and non-positive prices, isolated spikes and crossed
    quotes are removed or repaired, and gaps are counted. The counts are in the metadata."""
    market, day = market_and_day(context.partition_key)
    start, end = day_bounds(day)
    try:
        with quote_store.open() as store:
            described = store.describe()
            raw = store.read(market, start, end)
    except PermanentError as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc
    if raw.empty:
        raise Failure(
            description=(
                f"no quote snapshots for {market} on {day} in {described}; load some with "
                f"`rof quotes generate` or `rof quotes import`"
            ),
            allow_retries=False,
        )
    clean, report = clean_quotes(raw, CleaningConfig())
    counts = report.as_dict()
    gap_starts = counts.pop("gap_starts")
    yield Output(
        clean,
        metadata={
            "market": market.key,
            "date": day.isoformat(),
            "store": described,
            "dagster/row_count": len(clean),
            "first_ts": str(clean["ts"].iloc[0]),
            "last_ts": str(clean["ts"].iloc[-1]),
            **{f"cleaning/{name}": value for name, value in counts.items()},
            "preview": MetadataValue.md(clean.head(10).to_markdown(index=False)),
        },
    )
    yield from snapshot_checks(
        clean, report.duplicates, report.outliers, report.gaps, report.max_gap_seconds, gap_starts
    )


def snapshot_checks(
    clean: pd.DataFrame,
    raw_duplicates: int,
    raw_outliers: int,
    gaps: int,
    max_gap_seconds: float,
    gap_starts: list[str],
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
    yield AssetCheckResult(
        check_name="gaps",
        passed=gaps == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "gaps": gaps,
            "max_gap_seconds": max_gap_seconds,
            "gap_starts": MetadataValue.json(gap_starts),
        },
    )
