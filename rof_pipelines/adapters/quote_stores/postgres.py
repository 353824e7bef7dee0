"""PostgreSQL quote store: binary COPY in both directions, encoded and decoded with numpy.

Fetching rows as Python tuples costs microseconds per row; ``COPY ... (FORMAT binary)`` hands over
fixed-width big-endian records that numpy turns into columns in one pass, so a million snapshots move at
roughly the speed of ``psql \\copy``.
"""

import select
from collections.abc import Callable
from datetime import datetime
from math import ceil

import numpy as np
import pandas as pd
import psycopg
from psycopg import pq, sql

from rof_pipelines.adapters.quote_stores.base import QuoteStore
from rof_pipelines.adapters.quote_stores.connection import GuardedConnection
from rof_pipelines.core.market import QUOTE_COLUMNS, Market, ts_to_us, us_to_datetime
from rof_pipelines.errors import (
    DataValidationError,
    ErrorMap,
    ErrorRule,
    PermanentError,
    RofError,
    StoreUnavailableError,
)
from rof_pipelines.settings import PROJECT_ROOT, CircuitBreakerConfig, PostgresConfig, Settings

SERVICE = "postgres"
DDL_PATH = PROJECT_ROOT / "sql" / "postgres" / "001_quotes.sql"

# psycopg's exceptions -> the project's: lost connections and timeouts are the transient ones.
PSYCOPG_ERRORS = ErrorMap(
    "psycopg",
    [
        ErrorRule((psycopg.errors.UndefinedTable,), PermanentError, hint="run ensure_schema() first"),
        ErrorRule((psycopg.DataError, psycopg.IntegrityError), DataValidationError),
        ErrorRule((psycopg.OperationalError, psycopg.InterfaceError, OSError), StoreUnavailableError),
    ],
    default=PermanentError,
)

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z: zero of PostgreSQL's binary timestamps
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
COPY_HEADER = COPY_SIGNATURE + bytes(8)  # flags 0, header extension length 0
COPY_TRAILER = b"\xff\xff"
VALUE_COLUMNS = QUOTE_COLUMNS[1:]
OPTIONAL_COLUMNS = QUOTE_COLUMNS[2:]

# One record of the read query below: a field count, then (length, value) pairs; COALESCE makes every
# field 8 bytes wide, so the whole stream is an array of fixed-width records.
READ_RECORD = np.dtype(
    [("nfields", ">i2"), ("ts_len", ">i4"), ("ts", ">i8")]
    + [field for col in VALUE_COLUMNS for field in ((f"{col}_len", ">i4"), (col, ">f8"))]
)


class PostgresConnection(GuardedConnection[psycopg.Connection]):
    """One autocommit psycopg connection; dropped when closed, broken or left inside a transaction."""

    def __init__(self, config: PostgresConfig, breaker: CircuitBreakerConfig, label: Callable[[], str]):
        super().__init__(SERVICE, breaker, PSYCOPG_ERRORS, label, [config.db_password.get_secret_value()])
        self._config = config

    def _open(self) -> psycopg.Connection:
        timeout_s = self.timeout_s
        return psycopg.connect(
            **self._config.conninfo_kwargs(),
            autocommit=True,
            connect_timeout=max(2, ceil(timeout_s)),
            application_name="rof_pipelines",
            options=f"-c statement_timeout={max(1, int(timeout_s * 1000))} -c TimeZone=UTC",
        )

    def _close(self, conn: psycopg.Connection) -> None:
        conn.close()

    def _reusable(self, conn: psycopg.Connection) -> bool:
        return not (conn.closed or conn.broken)

    def _spoiled_by(self, conn: psycopg.Connection, exc: BaseException) -> bool:
        return conn.closed or conn.broken or conn.info.transaction_status != pq.TransactionStatus.IDLE


class PostgresQuoteStore(QuoteStore):
    """Quotes in one PostgreSQL table; every call goes through the ``postgres`` circuit breaker.

    One connection is opened lazily and reused (guarded by a lock, so the store is thread-safe);
    it is dropped after any failure that leaves it unusable, and ``close()`` releases it.
    """

    name = "postgres"

    def __init__(self, config: PostgresConfig, breaker: CircuitBreakerConfig | None = None):
        self._config = config
        self._table = sql.Identifier(config.table)
        self._connection = PostgresConnection(config, breaker or CircuitBreakerConfig(), self.describe)

    @classmethod
    def from_settings(cls, settings: Settings) -> "PostgresQuoteStore":
        return cls(settings.storage.postgres, settings.system_setup.circuit_breaker)

    def describe(self) -> str:
        return f"{self._config.describe()} table={self._config.table}"

    def __repr__(self) -> str:
        return f"PostgresQuoteStore({self.describe()!r})"

    def close(self) -> None:
        self._connection.close()

    # -- the store's part of the contract ------------------------------------------------------------

    def ensure_schema(self) -> None:
        ddl = sql.SQL(DDL_PATH.read_text()).format(
            table=self._table, index=sql.Identifier(f"{self._config.table}_market_ts_idx")
        )
        lock = sql.SQL("SELECT pg_advisory_xact_lock(hashtext({}))").format(
            sql.Literal(f"rof_pipelines.quotes:{self._config.table}")
        )

        def run(conn: psycopg.Connection) -> None:
            with conn.transaction():  # the lock keeps concurrent first runs from racing on CREATE
                conn.execute(lock)
                conn.execute(ddl)

        self._connection.run(run, operation="ensure_schema")

    def _write(self, market: Market, frame: pd.DataFrame) -> None:
        """Replace the market's rows in [first ts, last ts] of ``frame`` in one transaction."""
        ts_us = ts_to_us(frame["ts"])
        low, high = us_to_datetime(ts_us.min()), us_to_datetime(ts_us.max())
        records = encode_records(market, frame, ts_us)
        delete = sql.SQL(
            "DELETE FROM {table} WHERE exchange = %s AND pair = %s AND ts BETWEEN %s AND %s"
        ).format(table=self._table)
        copy_in = sql.SQL(
            "COPY {table} (exchange, pair, ts, price, bid, ask, volume) FROM STDIN (FORMAT binary)"
        ).format(table=self._table)

        def run(conn: psycopg.Connection) -> None:
            with conn.transaction():
                conn.execute(delete, (market.exchange, market.pair, low, high))
                with conn.cursor() as cur, cur.copy(copy_in) as copy:
                    copy.write(COPY_HEADER)
                    copy.write(records.data)
                    copy.write(COPY_TRAILER)

        self._connection.run(run, operation="write")

    def _read(self, market: Market, start_us: int, end_us: int) -> pd.DataFrame:
        query = sql.SQL(
            "COPY (SELECT ts, price, COALESCE(bid, 'NaN'), COALESCE(ask, 'NaN'), COALESCE(volume, 'NaN')"
            " FROM {table} WHERE exchange = %s AND pair = %s AND ts >= %s AND ts < %s ORDER BY ts)"
            " TO STDOUT (FORMAT binary)"
        ).format(table=self._table)
        params = (market.exchange, market.pair, us_to_datetime(start_us), us_to_datetime(end_us))
        timeout_s = self._connection.timeout_s

        def run(conn: psycopg.Connection) -> bytearray:
            with conn.cursor() as cur, cur.copy(query, params) as copy:
                payload = drain_copy_out(conn, timeout_s)
                while copy.read():  # psycopg consumes the end of the COPY and raises its error, if any
                    pass
            return payload

        payload = self._connection.run(run, operation="read")
        try:
            return decode_copy(payload)
        except RofError as exc:
            exc.with_context(SERVICE, "read")
            raise

    def _markets(self) -> list[Market]:
        # A loose index scan: one index probe per market instead of reading every row.
        query = sql.SQL(
            "WITH RECURSIVE m(exchange, pair) AS ("
            " (SELECT exchange, pair FROM {table} ORDER BY exchange, pair LIMIT 1)"
            " UNION ALL"
            " SELECT n.exchange, n.pair FROM m, LATERAL (SELECT exchange, pair FROM {table}"
            "  WHERE (exchange, pair) > (m.exchange, m.pair) ORDER BY exchange, pair LIMIT 1) n"
            ") SELECT exchange, pair FROM m"
        ).format(table=self._table)

        def run(conn: psycopg.Connection) -> list[tuple[str, str]]:
            return conn.execute(query).fetchall()

        return [Market(exchange, pair) for exchange, pair in self._connection.run(run, operation="markets")]

    def _time_range(self, market: Market) -> tuple[datetime, datetime] | None:
        query = sql.SQL("SELECT min(ts), max(ts) FROM {table} WHERE exchange = %s AND pair = %s").format(
            table=self._table
        )

        def run(conn: psycopg.Connection) -> tuple[datetime | None, datetime | None]:
            row = conn.execute(query, (market.exchange, market.pair)).fetchone()
            return (None, None) if row is None else (row[0], row[1])

        first, last = self._connection.run(run, operation="time_range")
        if first is None or last is None:
            return None
        return first, last


def drain_copy_out(conn: psycopg.Connection, timeout_s: float) -> bytearray:
    """Every COPY data message of a running binary ``COPY ... TO STDOUT``, concatenated.

    The server sends one message per row. psycopg's ``Copy.read()`` spends a generator round trip on
    each; calling libpq directly and appending into one bytearray is several times faster and leaves
    no per-row objects behind. It stops at the trailer, the last message, so that psycopg still reads
    the end of the COPY and its status; a COPY that ends without a trailer raises the server's error.
    """
    pgconn = conn.pgconn
    get, consume, fd = pgconn.get_copy_data, pgconn.consume_input, pgconn.socket
    empty_stream = COPY_HEADER + COPY_TRAILER  # no rows: header and trailer come as one message
    buffer = bytearray()
    while True:
        size, data = get(1)
        if size > 0:
            buffer += data
            if size <= len(empty_stream) and (data == COPY_TRAILER or buffer == empty_stream):
                return buffer
        elif size == 0:
            if not select.select([fd], [], [], timeout_s)[0]:
                conn.close()  # a half-read COPY cannot be resumed; the next call reconnects
                raise psycopg.OperationalError(f"no COPY data from the server for {timeout_s:.0f}s")
            consume()
        else:
            result = pgconn.get_result()
            while pgconn.get_result() is not None:
                pass
            if result is None or result.status == pq.ExecStatus.COMMAND_OK:
                raise psycopg.OperationalError("COPY ended without the binary trailer")
            raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)


def decode_copy(payload: bytearray) -> pd.DataFrame:
    """The binary COPY stream of the read query as a canonical frame."""
    if payload[: len(COPY_SIGNATURE)] != COPY_SIGNATURE or len(payload) < len(COPY_HEADER):
        raise PermanentError("postgres: COPY stream does not start with the binary signature")
    start = len(COPY_HEADER) + int.from_bytes(payload[15:19], "big")
    if payload[-2:] != COPY_TRAILER:
        raise StoreUnavailableError("postgres: COPY stream ended before its trailer")
    body = memoryview(payload)[start:-2]
    if len(body) % READ_RECORD.itemsize:
        raise PermanentError("postgres: COPY stream is not a whole number of quote records")
    records = np.frombuffer(body, dtype=READ_RECORD)
    widths_ok = (records["nfields"] == len(QUOTE_COLUMNS)).all() and all(
        (records[f"{col}_len"] == 8).all() for col in QUOTE_COLUMNS
    )
    if not widths_ok:
        raise PermanentError("postgres: unexpected field layout in the COPY stream")
    ts = (records["ts"].astype(np.int64) + PG_EPOCH_US).view("datetime64[us]")
    frame = pd.DataFrame({col: records[col].astype(np.float64) for col in VALUE_COLUMNS})
    frame.insert(0, "ts", pd.DatetimeIndex(ts).tz_localize("UTC"))
    return frame


def encode_records(market: Market, frame: pd.DataFrame, ts_us: np.ndarray) -> np.ndarray:
    """The binary COPY records (without header and trailer) of a canonical frame, as flat uint8.

    Records are built at full width in one structured array; NaN bid/ask/volume must travel as NULL
    (length -1, no value bytes), so their 8 value bytes are masked out of the flat byte view.
    """
    exchange, pair = market.exchange.encode(), market.pair.encode()
    record = np.dtype(
        [
            ("nfields", ">i2"),
            ("exchange_len", ">i4"),
            ("exchange", f"S{len(exchange)}"),
            ("pair_len", ">i4"),
            ("pair", f"S{len(pair)}"),
            ("ts_len", ">i4"),
            ("ts", ">i8"),
        ]
        + [field for col in VALUE_COLUMNS for field in ((f"{col}_len", ">i4"), (col, ">f8"))]
    )
    n = len(frame)
    rows = np.empty(n, dtype=record)
    rows["nfields"] = 2 + len(QUOTE_COLUMNS)
    rows["exchange_len"], rows["exchange"] = len(exchange), exchange
    rows["pair_len"], rows["pair"] = len(pair), pair
    rows["ts_len"], rows["ts"] = 8, ts_us - PG_EPOCH_US
    rows["price_len"], rows["price"] = 8, frame["price"].to_numpy()
    flat = rows.view(np.uint8).reshape(n, record.itemsize)
    keep: np.ndarray | None = None
    for col in OPTIONAL_COLUMNS:
        values = frame[col].to_numpy()
        missing = np.isnan(values)
        rows[col] = values
        rows[f"{col}_len"] = np.where(missing, -1, 8)
        if missing.any():
            if keep is None:
                keep = np.ones(flat.shape, dtype=bool)
            offset = record.fields[col][1]
            keep[missing, offset : offset + 8] = False
    return flat.reshape(-1) if keep is None else flat[keep]
