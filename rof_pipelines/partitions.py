"""Markets (dynamic) crossed with days from ``storage.history_start``.

Windows longer than a day are not read through partition mappings (hundreds of per-day loads for a
long window) but in one store query (rof_pipelines.adapters.windows).

Read a key's parts with :func:`market_and_day`; the dimension order inside a multi-partition key
string is alphabetical (``date|markets``) and must never be split by hand.
"""

import warnings
from datetime import UTC, date, datetime, timedelta

from dagster import (
    DailyPartitionsDefinition,
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
)

from rof_pipelines.core.market import Market

# Partitioned asset checks are a Dagster beta/preview feature this project
# relies on deliberately; their warnings would otherwise repeat on every load.
warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview)")

MARKETS_PARTITION = "markets"
DATE_DIMENSION = "date"


def _history_start() -> date:
    """``storage.history_start``, fixed when the code location loads (Dagster needs the partition set
    before any run); an invalid config falls back to the default, and the runs say why."""
    from rof_pipelines.errors import ConfigError
    from rof_pipelines.settings import StorageConfig, load_settings

    try:
        return load_settings().storage.history_start
    except ConfigError:
        return StorageConfig.model_fields["history_start"].default


HISTORY_START = _history_start()

markets_partitions = DynamicPartitionsDefinition(name=MARKETS_PARTITION)
daily_partitions = DailyPartitionsDefinition(start_date=HISTORY_START.isoformat(), timezone="UTC")
market_day_partitions = MultiPartitionsDefinition(
    {DATE_DIMENSION: daily_partitions, MARKETS_PARTITION: markets_partitions}
)


def market_day_key(market: Market | str, day: date | str) -> MultiPartitionKey:
    market_key = market.key if isinstance(market, Market) else Market.parse(market).key
    day = day if isinstance(day, date) else date.fromisoformat(day)
    if day < HISTORY_START:
        check_partition_day(day)
    return MultiPartitionKey({DATE_DIMENSION: day.isoformat(), MARKETS_PARTITION: market_key})


def check_partition_day(day: date) -> date:
    """Refuse a day outside the `date` partitions with what to change, instead of Dagster's
    "PartitionsDefinition containing the passed partition key"."""
    from rof_pipelines.errors import PartitionOutOfRange

    if day < HISTORY_START:
        raise PartitionOutOfRange(
            f"{day} is before the first partition day {HISTORY_START} (storage.history_start); set "
            f"storage.history_start to {day} or earlier in config.yaml and reload the code location "
            f"(restart `rof ui` / the daemon)"
        )
    last = last_partition_day()
    if day > last:
        raise PartitionOutOfRange(
            f"{day} has no partition yet: the last `date` partition is {last} (a UTC day gets its "
            f"partition once it is over)"
        )
    return day


def last_partition_day() -> date:
    """The last `date` partition Dagster accepts now: yesterday UTC (today's exists once it is over)."""
    last = daily_partitions.get_last_partition_key()
    return date.fromisoformat(last) if last else HISTORY_START - timedelta(days=1)


def market_and_day(key: str | MultiPartitionKey) -> tuple[Market, date]:
    """Parse a partition key of :data:`market_day_partitions` through its dimensions."""
    if not isinstance(key, MultiPartitionKey):
        key = market_day_partitions.get_partition_key_from_str(key)
    dims = key.keys_by_dimension
    return Market.parse(dims[MARKETS_PARTITION]), date.fromisoformat(dims[DATE_DIMENSION])


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)
