"""Markets (dynamic) crossed with days, and the mappings that read windows longer than a day.

Read a key's parts with :func:`market_and_day`; the dimension order inside a multi-partition key
string is alphabetical (``date|markets``) and must never be split by hand.
"""

import warnings
from datetime import UTC, date, datetime, timedelta

from dagster import (
    DailyPartitionsDefinition,
    DimensionPartitionMapping,
    DynamicPartitionsDefinition,
    IdentityPartitionMapping,
    MultiPartitionKey,
    MultiPartitionMapping,
    MultiPartitionsDefinition,
    TimeWindowPartitionMapping,
)

from rof_pipelines.core.market import Market

# MultiPartitionMapping and partitioned asset checks are Dagster beta/preview features this project
# relies on deliberately; their warnings would otherwise repeat on every load.
warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview)")

MARKETS_PARTITION = "markets"
DATE_DIMENSION = "date"
HISTORY_START = "2024-01-01"

markets_partitions = DynamicPartitionsDefinition(name=MARKETS_PARTITION)
daily_partitions = DailyPartitionsDefinition(start_date=HISTORY_START, timezone="UTC")
market_day_partitions = MultiPartitionsDefinition(
    {DATE_DIMENSION: daily_partitions, MARKETS_PARTITION: markets_partitions}
)


def trailing_days(days: int) -> MultiPartitionMapping:
    """Same market, this day and the ``days - 1`` before it (days before HISTORY_START are skipped)."""
    return MultiPartitionMapping(
        {
            DATE_DIMENSION: DimensionPartitionMapping(
                DATE_DIMENSION,
                TimeWindowPartitionMapping(
                    start_offset=-(days - 1), end_offset=0, allow_nonexistent_upstream_partitions=True
                ),
            ),
            MARKETS_PARTITION: DimensionPartitionMapping(MARKETS_PARTITION, IdentityPartitionMapping()),
        }
    )


def market_day_key(market: Market | str, day: date | str) -> MultiPartitionKey:
    market_key = market.key if isinstance(market, Market) else Market.parse(market).key
    day_key = day.isoformat() if isinstance(day, date) else date.fromisoformat(day).isoformat()
    return MultiPartitionKey({DATE_DIMENSION: day_key, MARKETS_PARTITION: market_key})


def market_and_day(key: str | MultiPartitionKey) -> tuple[Market, date]:
    """Parse a partition key of :data:`market_day_partitions` through its dimensions."""
    if not isinstance(key, MultiPartitionKey):
        key = market_day_partitions.get_partition_key_from_str(key)
    dims = key.keys_by_dimension
    return Market.parse(dims[MARKETS_PARTITION]), date.fromisoformat(dims[DATE_DIMENSION])


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)
