"""ClickHouse quote store: a server over HTTP, or chDB (ClickHouse in-process) when ``dsn`` is set.

Columns travel as Arrow both ways (``insert_arrow`` / ``query_arrow``), never as Python rows.

chDB hosts one data directory per process: while any client on one path is open, opening another path
raises (clients on the same path share the engine), and a directory can be used by one process at a time.
"""

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import clickhouse_connect
import numpy as np
import pandas as pd
import pyarrow as pa
from clickhouse_connect.driver import exceptions as ch_errors
from clickhouse_connect.driver.client import Client

from rof_pipelines.adapters.breakers import error_message, guarded_call
from rof_pipelines.adapters.quote_stores import validated_quotes
from rof_pipelines.adapters.quote_stores.base import QuoteStore
from rof_pipelines.core.market import (
    QUOTE_COLUMNS,
    Market,
    datetime_to_us,
    empty_quotes,
    ts_to_us,
    us_to_datetime,
)
from rof_pipelines.errors import DataValidationError, PermanentError, RofError, StoreUnavailableError
from rof_pipelines.settings import (
    PROJECT_ROOT,
    CircuitBreakerConfig,
    ClickHouseConfig,
    validate_sql_identifier,
)

R = TypeVar("R")

SERVICE = "clickhouse"
DDL_PATH = PROJECT_ROOT / "sql" / "clickhouse" / "001_quotes.sql"

# DateTime64 covers 1900-01-01 .. 2299-12-31; outside it ClickHouse would silently clamp.
MIN_TS_US = datetime_to_us(datetime(1900, 1, 1))
MAX_TS_US = datetime_to_us(datetime(2300, 1, 1))

# Server error codes worth retrying: timeouts, overload, network, Keeper.
TRANSIENT_CODES = frozenset({159, 160, 202, 203, 209, 210, 236, 241, 242, 252, 319, 394, 425, 473, 999})
# Server error codes that mean the data itself was refused.
DATA_CODES = frozenset({6, 27, 38, 53, 69, 70, 72, 321})

# Arrow output uncompressed (it is in-process or loopback) and strings as strings, set once per client:
# per-query settings cost chDB extra round trips.
CLIENT_SETTINGS = {
    "output_format_arrow_compression_method": "none",
    "output_format_arrow_string_as_string": 1,
}


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
        self._breaker = breaker or CircuitBreakerConfig()
        # Settings validated these already; they are pasted into SQL, so check again right here.
        self._database = validate_sql_identifier(config.db_name)
        self._qualified = f"`{self._database}`.`{validate_sql_identifier(config.table)}`"
        self._client: Client | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"{self._config.describe()} table={self._config.table}"

    def __repr__(self) -> str:
        return f"ClickHouseQuoteStore({self.describe()!r})"

    # -- plumbing ----------------------------------------------------------------------------------

    def _connection(self) -> Client:
        if self._client is None:
            timeout = self._breaker.call_timeout.total_seconds()
            settings = {**CLIENT_SETTINGS, "max_execution_time": max(1, int(timeout))}
            if self._config.dsn:
                self._client = clickhouse_connect.get_client(dsn=self._config.dsn, settings=settings)
            else:
                self._client = clickhouse_connect.get_client(
                    host=self._config.host,
                    port=self._config.http_port,
                    username=self._config.db_user,
                    password=self._config.db_password.get_secret_value(),
                    secure=self._config.secure,
                    connect_timeout=timeout,
                    send_receive_timeout=timeout,
                    settings=settings,
                )
        return self._client

    def _discard(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _on_client(self, fn: Callable[..., R], *args: Any) -> R:
        client = self._connection()
        try:
            return fn(client, *args)
        except (ch_errors.OperationalError, OSError):
            self._discard()
            raise

    def _run(self, fn: Callable[..., R], *args: Any) -> R:
        with self._lock:
            return guarded_call(SERVICE, self._breaker, self._translate, self._on_client, fn, *args)

    def _translate(self, exc: BaseException) -> RofError:
        """Driver errors -> project errors; lost connections, timeouts and overload are transient."""
        message = error_message(self.describe(), exc, self._config.db_password.get_secret_value())
        code = getattr(exc, "code", None)
        if isinstance(exc, ch_errors.DataError) or code in DATA_CODES:
            return DataValidationError(message)
        if code in TRANSIENT_CODES or isinstance(exc, ch_errors.OperationalError | OSError):
            return StoreUnavailableError(message)
        return PermanentError(message)

    def _market_filter(self, market: Market) -> tuple[str, dict[str, Any]]:
        return "exchange = {exchange:String} AND pair = {pair:String}", {
            "exchange": market.exchange,
            "pair": market.pair,
        }

    # -- interface ---------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        text = DDL_PATH.read_text().format(database=self._database, table=self._config.table)
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        statements = [part.strip() for part in code.split(";") if part.strip()]  # one per call

        def run(client: Client) -> None:
            for statement in statements:
                client.command(statement)

        self._run(run)

    def write(self, market: Market, quotes: pd.DataFrame) -> int:
        frame = validated_quotes(market, quotes)
        if frame.empty:
            return 0
        ts_us = ts_to_us(frame["ts"])
        low, high = int(ts_us.min()), int(ts_us.max())
        if low < MIN_TS_US or high >= MAX_TS_US:
            raise DataValidationError(f"{market}: ts must lie in 1900..2299 for ClickHouse")
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

        self._run(run)
        return len(frame)

    def read(self, market: Market, start: datetime, end: datetime) -> pd.DataFrame:
        start_us, end_us = datetime_to_us(start), datetime_to_us(end)
        if start_us >= end_us:
            return empty_quotes()
        where, params = self._market_filter(market)
        params |= {"start": start_us, "end": end_us}
        query = (
            f"SELECT ts, price, bid, ask, volume FROM {self._qualified} WHERE {where}"
            " AND ts >= fromUnixTimestamp64Micro({start:Int64}, 'UTC')"
            " AND ts < fromUnixTimestamp64Micro({end:Int64}, 'UTC') ORDER BY ts"
        )

        def run(client: Client) -> pa.Table:
            return client.query_arrow(query, parameters=params)

        table = self._run(run)
        if table.num_rows == 0:
            return empty_quotes()
        return table.cast(READ_SCHEMA).to_pandas()

    def markets(self) -> list[Market]:
        def run(client: Client) -> list[tuple[str, str]]:
            return client.query(f"SELECT DISTINCT exchange, pair FROM {self._qualified}").result_rows

        return sorted(Market(exchange, pair) for exchange, pair in self._run(run))

    def time_range(self, market: Market) -> tuple[datetime, datetime] | None:
        where, params = self._market_filter(market)
        query = (
            "SELECT count(), toUnixTimestamp64Micro(min(ts)), toUnixTimestamp64Micro(max(ts))"
            f" FROM {self._qualified} WHERE {where}"
        )

        def run(client: Client) -> tuple[int, int, int]:
            return client.query(query, parameters=params).first_row

        count, first, last = self._run(run)
        if not count:
            return None
        return us_to_datetime(first), us_to_datetime(last)

    def close(self) -> None:
        with self._lock:
            self._discard()


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
