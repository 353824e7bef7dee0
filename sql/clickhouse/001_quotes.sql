-- Quote snapshots per market. {database} and {table} are validated identifiers filled in (backquoted)
-- by the code. The same text runs on a ClickHouse server and on chDB. Idempotent.
--
-- Absent bid/ask/volume are stored as NaN (plain Float64, cheaper than Nullable). write_id tags the
-- rows of one write so a replace-range write can insert first and then delete only the older rows
-- (ClickHouse has no transactions); readers never select it.
CREATE DATABASE IF NOT EXISTS `{database}`;

CREATE TABLE IF NOT EXISTS `{database}`.`{table}` (
    exchange LowCardinality(String),
    pair LowCardinality(String),
    ts DateTime64(6, 'UTC'),
    price Float64,
    bid Float64,
    ask Float64,
    volume Float64,
    write_id UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (exchange, pair, ts);
