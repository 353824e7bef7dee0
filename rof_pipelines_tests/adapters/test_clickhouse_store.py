"""ClickHouse quote store on chDB (or a live server when CLICKHOUSE_DB_HOST is set), with the DDL from
sql/clickhouse: round trip through Arrow, half-open reads, replace-range writes, refused input, and an
unreachable server tripping the breaker without showing the password.

chDB serves one data directory per process at a time, so every test here shares one session-wide
directory and gets a database of its own; each store is closed when its test ends, which lets other
modules open chDB elsewhere afterwards.
"""

import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from rof_pipelines.adapters.quote_stores import clickhouse as ch_module
from rof_pipelines.adapters.quote_stores import open_quote_store
from rof_pipelines.adapters.quote_stores.clickhouse import ClickHouseQuoteStore
from rof_pipelines.core.market import Market
from rof_pipelines.errors import DataValidationError, PermanentError
from rof_pipelines.settings import Settings
from rof_pipelines_tests.adapters.test_postgres_store import (
    BTC,
    DAY,
    PASSWORD,
    TON,
    assert_breaker_trips_quietly,
    assert_same_quotes,
    between,
    make_quotes,
    normalised,
    read_all,
)
from rof_pipelines_tests.conftest import service_missing

pytestmark = pytest.mark.clickhouse


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb") / "engine"


@pytest.fixture
def ch_settings(make_settings, chdb_dir: Path) -> Settings:
    """A fresh database per test, on the session's chDB directory or on a live server."""
    database = {"db_name": f"rof_test_{secrets.token_hex(4)}"}
    if os.environ.get("CLICKHOUSE_DB_HOST"):
        return make_settings(
            {"storage": {"quote_store": "clickhouse", "clickhouse": database}}, environ=dict(os.environ)
        )
    try:
        import chdb  # noqa: F401
    except ImportError as exc:
        service_missing(f"chDB not installed: {exc}")
    return make_settings(
        {"storage": {"quote_store": "clickhouse", "clickhouse": {**database, "dsn": f"chdb://{chdb_dir}"}}}
    )


@pytest.fixture
def store(ch_settings: Settings):
    with ClickHouseQuoteStore(
        ch_settings.storage.clickhouse, ch_settings.system_setup.circuit_breaker
    ) as store:
        store.ensure_schema()
        store.ensure_schema()  # idempotent
        yield store
        store._connection.run(
            lambda client: client.command(f"DROP DATABASE IF EXISTS `{store._database}`"), operation="drop"
        )


def test_factory_builds_the_clickhouse_store(ch_settings):
    with open_quote_store(ch_settings) as store:
        assert isinstance(store, ClickHouseQuoteStore)


def test_round_trip_is_exact(store):
    quotes = make_quotes()
    assert store.write(TON, quotes) == len(quotes)
    assert_same_quotes(read_all(store), quotes)
    store.write(TON, quotes.sample(frac=1, random_state=1))
    assert_same_quotes(read_all(store), quotes)


def test_reads_are_half_open(store):
    quotes = make_quotes()
    store.write(TON, quotes)
    ordered = normalised(quotes)
    lo, hi = ordered["ts"].iloc[100].to_pydatetime(), ordered["ts"].iloc[2000].to_pydatetime()
    got = store.read(TON, lo, hi)
    assert got["ts"].min() == pd.Timestamp(lo) and got["ts"].max() < pd.Timestamp(hi)
    assert_same_quotes(got, between(quotes, lo, hi))
    assert store.read(TON, hi, hi).empty
    assert store.read(TON, datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC)).empty


def test_overlapping_write_replaces_its_range(store):
    quotes = make_quotes()
    store.write(TON, quotes)
    store.write(TON, quotes)
    assert len(read_all(store)) == len(quotes)
    middle = make_quotes(n=500, start=DAY + timedelta(hours=20), span=timedelta(hours=8), seed=9)
    store.write(TON, middle)
    lo, hi = middle["ts"].min(), middle["ts"].max()
    kept = quotes.loc[(quotes["ts"] < lo) | (quotes["ts"] > hi)]
    assert_same_quotes(read_all(store), pd.concat([kept, middle], ignore_index=True))


def test_markets_and_time_range(store):
    assert store.markets() == [] and store.time_range(TON) is None
    ton, btc = make_quotes(seed=1), make_quotes(n=50, seed=2)
    store.write(TON, ton)
    store.write(BTC, btc)
    assert store.markets() == sorted([TON, BTC])
    first, last = store.time_range(TON)
    assert first == ton["ts"].min() and last == ton["ts"].max()
    assert store.time_range(Market.parse("kraken:XBTUSD")) is None
    assert_same_quotes(read_all(store, BTC), btc)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("price", "oops", "column 'price'"),
        ("ts", pd.NaT, "row 3: ts is missing"),
        ("price", np.nan, "row 3: price"),
        ("ts", pd.Timestamp("1899-12-31", tz="UTC"), "1900..2299"),
    ],
)
def test_invalid_input_is_refused_and_changes_nothing(store, column, value, message):
    quotes = make_quotes()
    store.write(TON, quotes)
    bad = make_quotes(seed=5)
    bad = bad.astype({"price": object}) if isinstance(value, str) else bad
    bad.loc[3, column] = value
    with pytest.raises(DataValidationError, match=message):
        store.write(TON, bad)
    assert_same_quotes(read_all(store), quotes)


def test_failed_insert_keeps_the_old_rows(store, monkeypatch):
    quotes = make_quotes()
    store.write(TON, quotes)

    def wrong_types(*args: object) -> pa.Table:
        return pa.table({"exchange": ["binance"], "pair": ["TONUSDT"], "ts": ["not a time"]})

    monkeypatch.setattr(ch_module, "_arrow_quotes", wrong_types)
    with pytest.raises(PermanentError):
        store.write(TON, make_quotes(seed=5))
    assert_same_quotes(read_all(store), quotes)


def test_chdb_serves_one_directory_per_process(store, ch_settings, tmp_path):
    if not ch_settings.storage.clickhouse.dsn:
        pytest.skip("chDB only")
    other = ch_settings.storage.clickhouse.model_copy(update={"dsn": f"chdb://{tmp_path / 'other'}"})
    with ClickHouseQuoteStore(other) as second, pytest.raises(PermanentError, match="already initialized"):
        second.markets()
    assert store.markets() == []  # the first store is unaffected


def test_unreachable_server_trips_the_breaker_without_leaking_the_password(make_settings):
    settings = make_settings(
        {
            "storage": {
                "quote_store": "clickhouse",
                "clickhouse": {"db_host": "127.0.0.1:1", "http_port": 1, "db_password": PASSWORD},
            },
            "system_setup": {
                "circuit_breaker": {"fail_max": 3, "reset_timeout": "60s", "call_timeout": "3s"}
            },
        }
    )
    assert_breaker_trips_quietly(open_quote_store(settings), fail_max=3)
