"""ClickHouse quote store: a server over HTTP, or chDB (ClickHouse in-process) when ``dsn`` is set.

Columns travel as Arrow both ways (``insert_arrow`` / ``query_arrow``), never as Python rows.

chDB hosts one data directory per process: while any client on one path is open, opening another path
raises (clients on the same path share the engine), and a directory can be used by one process at a time.
"""

import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import clickhouse_connect
import numpy as np
import pandas as pd
import pyarrow as pa
from clickhouse_connect.driver import exceptions as ch_errors
from clickhouse_connect.driver.client import Client

from rof_pipelines.adapters.quote_stores.base import QuoteStore
from rof_pipelines.adapters.quote_stores.connection import GuardedConnection
from rof_pipelines.core.market import (
    QUOTE_COLUMNS,
    Market,
    datetime_to_us,
    empty_quotes,
    ts_to_us,
    us_to_datetime,
)
from rof_pipelines.errors import (
    DataValidationError,
    ErrorMap,
    ErrorRule,
    PermanentError,
    StoreUnavailableError,
)
from rof_pipelines.settings import (
    PROJECT_ROOT,
    CircuitBreakerConfig,
    ClickHouseConfig,
    Settings,
    validate_sql_identifier,
)

SERVICE = "clickhouse"
DDL_PATH = PROJECT_ROOT / "sql" / "clickhouse" / "001_quotes.sql"

# DateTime64 covers 1900-01-01 .. 2299-12-31; outside it ClickHouse would silently clamp.
MIN_TS_US = datetime_to_us(datetime(1900, 1, 1))
MAX_TS_US = datetime_to_us(datetime(2300, 1, 1))

# Server error codes worth retrying: timeouts, overload, network, Keeper.
TRANSIENT_CODES = frozenset({159, 160, 202, 203, 209, 210, 236, 241, 242, 252, 319, 394, 425, 473, 999})
# Server error codes that mean the data itself was refused.
DATA_CODES = frozenset({6, 27, 38, 53, 69, 70, 72, 321})


def _server_code_in(codes: frozenset[int], what: str) -> Callable[[BaseException], bool]:
    """A rule matcher on the server's error code (clickhouse-connect puts it on ``exc.code``)."""

    def matches(exc: BaseException) -> bool:
        return getattr(exc, "code", None) in codes

    matches.__doc__ = f"server error code in {what}"
    return matches


# clickhouse-connect's (and chDB's) exceptions -> the project's: refused data first, then lost
# connections, timeouts and overload as the transient ones; chDB's own errors are permanent.
CLICKHOUSE_ERRORS = ErrorMap(
    "clickhouse",
    [
        ErrorRule((ch_errors.DataError,), DataValidationError),
        ErrorRule(_server_code_in(DATA_CODES, "DATA_CODES"), DataValidationError),
        ErrorRule(_server_code_in(TRANSIENT_CODES, "TRANSIENT_CODES"), StoreUnavailableError),
        ErrorRule((ch_errors.OperationalError, OSError), StoreUnavailableError),
    ],
    default=PermanentError,
)

# Arrow output uncompressed (it is in-process or loopback) and strings as strings, set once per client:
# per-query settings cost chDB extra round trips.
CLIENT_SETTINGS = {
    "output_format_arrow_compression_method": "none",
    "output_format_arrow_string_as_string": 1,
}


class ClickHouseConnection(GuardedConnection[Client]):
    """One clickhouse-connect client (HTTP, or chDB in-process when ``dsn`` is set); dropped after a
    lost connection."""

    def __init__(self, config: ClickHouseConfig, breaker: CircuitBreakerConfig, label: Callable[[], str]):
        super().__init__(SERVICE, breaker, CLICKHOUSE_ERRORS, label, [config.db_password.get_secret_value()])
        self._config = config

    def _open(self) -> Client:
        timeout = self.timeout_s
        settings = {**CLIENT_SETTINGS, "max_execution_time": max(1, int(timeout))}
        if self._config.dsn:
            return clickhouse_connect.get_client(dsn=self._config.dsn, settings=settings)
        return clickhouse_connect.get_client(
            host=self._config.host,
            port=self._config.http_port,
            username=self._config.db_user,
            password=self._config.db_password.get_secret_value(),
            secure=self._config.secure,
            connect_timeout=timeout,
            send_receive_timeout=timeout,
            settings=settings,
        )

    def _close(self, conn: Client) -> None:
        conn.close()

    def _spoiled_by(self, conn: Client, exc: BaseException) -> bool:
        return isinstance(exc, ch_errors.OperationalError | OSError)


class ClickHouseQuoteStore(QuoteStore):
    """Quotes in one MergeTree table; every call goes through the ``clickhouse`` circuit breaker.

    ClickHouse has no transactions, so ``write`` is not atomic. It validates the whole frame first,
    inserts the new rows tagged with a fresh, increasing ``write_id``, then deletes the market's older
    rows (smaller ``write_id``) in [first ts, last ts]. A failure therefore never loses the old rows: a
    failed insert is cleaned up best-effort, and re-running the write converges. Until the delete has
    run, readers may see old and new rows side by side (duplicates, never a gap). Writes of the same
    market must not run concurrently.
    """

    name = "clickhouse"

    def __init__(self, config: ClickHouseConfig, breaker: CircuitBreakerConfig | None = None):
        self._config = config
        # Settings validated these already; they are pasted into SQL, so check again right here.
        self._database = validate_sql_identifier(config.db_name)
        self._qualified = f"`{self._database}`.`{validate_sql_identifier(config.table)}`"
        self._connection = ClickHouseConnection(config, breaker or CircuitBreakerConfig(), self.describe)

    @classmethod
    def from_settings(cls, settings: Settings) -> "ClickHouseQuoteStore":
        return cls(settings.storage.clickhouse, settings.system_setup.circuit_breaker)

    def describe(self) -> str:
        return f"{self._config.describe()} table={self._config.table}"

    def __repr__(self) -> str:
        return f"ClickHouseQuoteStore({self.describe()!r})"

    def close(self) -> None:
        self._connection.close()

    def _market_filter(self, market: Market) -> tuple[str, dict[str, Any]]:
        return "exchange = {exchange:String} AND pair = {pair:String}", {
            "exchange": market.exchange,
            "pair": market.pair,
        }

    # -- the store's part of the contract ------------------------------------------------------------

    def ensure_schema(self) -> None:
        text = DDL_PATH.read_text().format(database=self._database, table=self._config.table)
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        statements = [part.strip() for part in code.split(";") if part.strip()]  # one per call

        def run(client: Client) -> None:
            for statement in statements:
                client.command(statement)

        self._connection.run(run, operation="ensure_schema")

    def _write(self, market: Market, frame: pd.DataFrame) -> None:
        ts_us = ts_to_us(frame["ts"])
        low, high = int(ts_us.min()), int(ts_us.max())
        if low < MIN_TS_US or high >= MAX_TS_US:
            raise DataValidationError(f"{market}: ts must lie in 1900..2299 for ClickHouse").with_context(
                SERVICE, "write"
            )
        write_id = time.time_ns()
        table = _arrow_quotes(market, frame, ts_us, write_id)
        where, params = self._market_filter(market)
        params |= {"low": low, "high": high, "write_id": write_id}
        in_range = (
            f"{where} AND ts >= fromUnixTimestamp64Micro({{low:Int64}}, 'UTC')"
            " AND ts <= fromUnixTimestamp64Micro({high:Int64}, 'UTC')"
        )

        def run(client: Client) -> None:
            try:
                client.insert_arrow(self._qualified, table)
            except Exception:
                with contextlib.suppress(Exception):  # best effort: the failure itself is what counts
                    client.command(
                        f"DELETE FROM {self._qualified} WHERE write_id = {{write_id:UInt64}}", params
                    )
                raise
            client.command(
                f"DELETE FROM {self._qualified} WHERE {in_range} AND write_id < {{write_id:UInt64}}", params
            )

        self._connection.run(run, operation="write")

    def _read(self, market: Market, start_us: int, end_us: int) -> pd.DataFrame:
        where, params = self._market_filter(market)
        params |= {"start": start_us, "end": end_us}
        query = (
            f"SELECT ts, price, bid, ask, volume FROM {self._qualified} WHERE {where}"
            " AND ts >= fromUnixTimestamp64Micro({start:Int64}, 'UTC')"
            " AND ts < fromUnixTimestamp64Micro({end:Int64}, 'UTC') ORDER BY ts"
        )

        def run(client: Client) -> pa.Table:
            return client.query_arrow(query, parameters=params)

        table = self._connection.run(run, operation="read")
        if table.num_rows == 0:
            return empty_quotes()
        return table.cast(READ_SCHEMA).to_pandas()

    def _markets(self) -> list[Market]:
        def run(client: Client) -> list[tuple[str, str]]:
            return client.query(f"SELECT DISTINCT exchange, pair FROM {self._qualified}").result_rows

        return [Market(exchange, pair) for exchange, pair in self._connection.run(run, operation="markets")]

    def _time_range(self, market: Market) -> tuple[datetime, datetime] | None:
        where, params = self._market_filter(market)
        query = (
            "SELECT count(), toUnixTimestamp64Micro(min(ts)), toUnixTimestamp64Micro(max(ts))"
            f" FROM {self._qualified} WHERE {where}"
        )

        def run(client: Client) -> tuple[int, int, int]:
            return client.query(query, parameters=params).first_row

        count, first, last = self._connection.run(run, operation="time_range")
        if not count:
            return None
        return us_to_datetime(first), us_to_datetime(last)


READ_SCHEMA = pa.schema(
    [("ts", pa.timestamp("us", tz="UTC"))] + [(col, pa.float64()) for col in QUOTE_COLUMNS[1:]]
)


def _arrow_quotes(market: Market, frame: pd.DataFrame, ts_us: np.ndarray, write_id: int) -> pa.Table:
    """The insert block: market columns dictionary-encoded (one string each, not one per row)."""
    n = len(frame)
    codes = pa.array(np.zeros(n, dtype=np.int32))
    columns = {
        "exchange": pa.DictionaryArray.from_arrays(codes, pa.array([market.exchange])),
        "pair": pa.DictionaryArray.from_arrays(codes, pa.array([market.pair])),
        "ts": pa.array(ts_us, type=pa.timestamp("us", tz="UTC")),
        **{col: pa.array(frame[col].to_numpy()) for col in QUOTE_COLUMNS[1:]},
        "write_id": pa.array(np.full(n, write_id, dtype=np.uint64)),
    }
    return pa.table(columns)
