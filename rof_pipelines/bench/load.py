"""Load benchmarks of the database quote stores: write synthetic snapshots, then time reading them back.

``load-postgres`` runs on a throwaway database and times ``psql \\copy`` of the same rows in the same run,
so the ratio does not depend on the machine; the target is at least half of psql's speed.
``load-clickhouse`` runs on chDB in a temporary directory (or on a live server when CLICKHOUSE_DB_HOST is
set); the target is 5 million rows/s for reading. Both return plain JSON-able dicts.
"""

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from rof_pipelines.core.market import Market, datetime_to_us
from rof_pipelines.settings import ClickHouseConfig, PostgresConfig, Settings, load_settings

R = TypeVar("R")

BENCH_PG_DSN_ENV = "ROF_BENCH_PG_DSN"
DEFAULT_BENCH_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_TARGET_RATIO = 0.5
CH_TARGET_ROWS_PER_S = 5_000_000
REPEATS = 3
MARKET = Market("bench", "SYNTHUSDT")
START = datetime(2026, 1, 1, tzinfo=UTC)


def synthetic_quotes(rows: int, seed: int = 0) -> pd.DataFrame:
    """A random-walk feed about 100 ms apart with microsecond timestamps and some gaps in bid/ask/volume."""
    rng = np.random.default_rng(seed)
    ts_us = datetime_to_us(START) + np.cumsum(rng.integers(1_000, 200_000, rows))
    price = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 2e-4, rows)))
    spread = price * rng.uniform(1e-4, 5e-4, rows)
    return pd.DataFrame(
        {
            "ts": pd.Series(ts_us.astype("datetime64[us]")).dt.tz_localize("UTC"),
            "price": price,
            "bid": np.where(rng.random(rows) < 0.05, np.nan, price - spread),
            "ask": np.where(rng.random(rows) < 0.05, np.nan, price + spread),
            "volume": np.where(rng.random(rows) < 0.2, np.nan, rng.lognormal(3.0, 1.0, rows)),
        }
    )


def _timed(fn: Callable[[], R]) -> tuple[float, R]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _best_of(fn: Callable[[], Any], repeats: int = REPEATS) -> float:
    return min(_timed(fn)[0] for _ in range(repeats))


def _span(frame: pd.DataFrame) -> tuple[datetime, datetime]:
    """The half-open range holding every row of the frame."""
    return frame["ts"].min().to_pydatetime(), frame["ts"].max().to_pydatetime() + timedelta(microseconds=1)


def _rates(rows: int, write_s: float, read_s: float) -> dict[str, Any]:
    return {
        "rows": rows,
        "write_seconds": round(write_s, 4),
        "write_rows_per_s": round(rows / write_s),
        "read_seconds": round(read_s, 4),
        "read_rows_per_s": round(rows / read_s),
    }


# -- PostgreSQL ------------------------------------------------------------------------------------


@contextmanager
def _throwaway_pg_database(admin_dsn: str) -> Iterator[dict[str, Any]]:
    """A fresh database on the admin DSN's server, dropped afterwards; yields its connection facts."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(admin_dsn)
    name = f"rof_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield {
            "host": str(info.get("host") or "127.0.0.1"),
            "port": int(info.get("port") or 5432),
            "user": str(info.get("user") or "postgres"),
            "password": str(info.get("password") or ""),
            "dbname": name,
        }
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def bench_load_postgres(rows: int, settings: Settings | None = None) -> dict[str, Any]:
    """Write ``rows`` snapshots through the PostgreSQL store, then read them back (best of 3) and
    ``psql \\copy`` the same rows to /dev/null (best of 3). ``settings`` supplies the table name and the
    breaker thresholds; the server is ``$ROF_BENCH_PG_DSN`` (default: postgres on 127.0.0.1:5432)."""
    import psycopg
    from psycopg import sql

    from rof_pipelines.adapters.quote_stores.postgres import PostgresQuoteStore

    settings = settings or load_settings()
    table = settings.storage.postgres.table
    frame = synthetic_quotes(rows)
    start, end = _span(frame)
    with _throwaway_pg_database(os.environ.get(BENCH_PG_DSN_ENV) or DEFAULT_BENCH_PG_DSN) as db:
        config = PostgresConfig(
            db_host=f"{db['host']}:{db['port']}",
            db_user=db["user"],
            db_password=db["password"],
            db_name=db["dbname"],
            table=table,
        )
        with PostgresQuoteStore(config, settings.system_setup.circuit_breaker) as store:
            store.ensure_schema()
            write_s, _ = _timed(lambda: store.write(MARKET, frame))
            with psycopg.connect(**config.conninfo_kwargs(), autocommit=True) as conn:
                # Steady state for both readers: statistics, hint bits and visibility map in place.
                conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
                select = (
                    sql.SQL(
                        "SELECT ts, price, bid, ask, volume FROM {} WHERE exchange = {} AND pair = {}"
                        " AND ts >= {} AND ts < {} ORDER BY ts"
                    )
                    .format(
                        sql.Identifier(table),
                        sql.Literal(MARKET.exchange),
                        sql.Literal(MARKET.pair),
                        sql.Literal(start),
                        sql.Literal(end),
                    )
                    .as_string(conn)
                )
            read_rows = len(store.read(MARKET, start, end))
            if read_rows != rows:
                raise RuntimeError(f"read back {read_rows} rows, wrote {rows}")
            read_s = _best_of(lambda: store.read(MARKET, start, end))
        psql = [
            *("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", db["host"], "-p", str(db["port"])),
            *("-U", db["user"], "-d", db["dbname"], "-c", f"\\copy ({select}) TO '/dev/null'"),
        ]
        env = {**os.environ, "PGPASSWORD": db["password"]} if db["password"] else None
        psql_s = _best_of(lambda: subprocess.run(psql, check=True, capture_output=True, env=env))
    ratio = psql_s / read_s
    return {
        "bench": "load-postgres",
        **_rates(rows, write_s, read_s),
        "psql_copy_seconds": round(psql_s, 4),
        "ratio_vs_psql": round(ratio, 3),
        "target_ratio_vs_psql": PG_TARGET_RATIO,
        "target_met": ratio >= PG_TARGET_RATIO,
    }


# -- ClickHouse ------------------------------------------------------------------------------------


@contextmanager
def _throwaway_clickhouse(settings: Settings) -> Iterator[ClickHouseConfig]:
    """chDB in a temporary directory, or a throwaway database on the server named by the environment."""
    base = settings.storage.clickhouse
    if not os.environ.get("CLICKHOUSE_DB_HOST"):
        directory = tempfile.mkdtemp(prefix="rof_bench_chdb_")
        try:
            yield ClickHouseConfig(dsn=f"chdb://{directory}", db_name="rof_bench", table=base.table)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    import clickhouse_connect

    config = base.model_copy(update={"dsn": None, "db_name": f"rof_bench_{secrets.token_hex(4)}"})
    try:
        yield config
    finally:
        client = clickhouse_connect.get_client(
            host=config.host,
            port=config.http_port,
            username=config.db_user,
            password=config.db_password.get_secret_value(),
            secure=config.secure,
        )
        try:
            client.command(f"DROP DATABASE IF EXISTS `{config.db_name}`")
        finally:
            client.close()


def bench_load_clickhouse(rows: int, settings: Settings | None = None) -> dict[str, Any]:
    """Write ``rows`` snapshots through the ClickHouse store and read them back (best of 3).

    On chDB this needs the process to have no other chDB directory open (one engine path per process).
    """
    from rof_pipelines.adapters.quote_stores.clickhouse import ClickHouseQuoteStore

    settings = settings or load_settings()
    frame = synthetic_quotes(rows)
    start, end = _span(frame)
    with (
        _throwaway_clickhouse(settings) as config,
        ClickHouseQuoteStore(config, settings.system_setup.circuit_breaker) as store,
    ):
        store.ensure_schema()
        write_s, _ = _timed(lambda: store.write(MARKET, frame))
        read_rows = len(store.read(MARKET, start, end))
        if read_rows != rows:
            raise RuntimeError(f"read back {read_rows} rows, wrote {rows}")
        read_s = _best_of(lambda: store.read(MARKET, start, end))
    return {
        "bench": "load-clickhouse",
        "engine": "clickhouse-server" if os.environ.get("CLICKHOUSE_DB_HOST") else "chdb",
        **_rates(rows, write_s, read_s),
        "target_read_rows_per_s": CH_TARGET_ROWS_PER_S,
        "target_met": rows / read_s >= CH_TARGET_ROWS_PER_S,
    }
