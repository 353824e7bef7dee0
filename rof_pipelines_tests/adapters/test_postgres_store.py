"""PostgreSQL quote store against a real server: round trip through binary COPY, half-open reads,
replace-range writes, refused input, and an unreachable server tripping the breaker without ever
showing the password. The helpers are shared with the ClickHouse tests."""

import traceback
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from rof_pipelines.adapters.quote_stores import open_quote_store
from rof_pipelines.adapters.quote_stores import postgres as pg_module
from rof_pipelines.adapters.quote_stores.base import QuoteStore
from rof_pipelines.adapters.quote_stores.postgres import PostgresQuoteStore
from rof_pipelines.core.market import QUOTE_COLUMNS, TS_DTYPE, Market
from rof_pipelines.errors import (
    CircuitOpenError,
    DataValidationError,
    PermanentError,
    StoreUnavailableError,
)

pytestmark = pytest.mark.postgres

TON = Market.parse("binance:TONUSDT")
BTC = Market.parse("okx:BTCUSDT")
DAY = datetime(2026, 11, 20, tzinfo=UTC)
EVERYTHING = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
PASSWORD = "s3cr3t-pw"


def make_quotes(
    n: int = 4000, start: datetime = DAY, span: timedelta = timedelta(days=2), seed: int = 0
) -> pd.DataFrame:
    """Snapshots at random microsecond times over ``span``, ~2 % sharing a timestamp with the previous
    row (raw feeds repeat), with gaps in bid, ask and volume."""
    rng = np.random.default_rng(seed)
    span_us = span // timedelta(microseconds=1)
    offsets = np.sort(rng.integers(0, span_us, n))
    repeat = (rng.random(n) < 0.02) & (np.arange(n) > 0)
    offsets = np.where(repeat, np.roll(offsets, 1), offsets)
    ts = pd.Series(pd.Timestamp(start) + pd.to_timedelta(offsets, unit="us")).astype(TS_DTYPE)
    price = 2.5 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    spread = price * rng.uniform(1e-4, 5e-4, n)
    frame = pd.DataFrame(
        {
            "ts": ts,
            "price": price,
            "bid": np.where(rng.random(n) < 0.1, np.nan, price - spread),
            "ask": np.where(rng.random(n) < 0.1, np.nan, price + spread),
            "volume": np.where(rng.random(n) < 0.2, np.nan, rng.lognormal(3, 1, n)),
        }
    )
    return frame


def normalised(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows sharing a ts may come back in any order; compare in a total order."""
    return frame.sort_values(list(QUOTE_COLUMNS), kind="stable").reset_index(drop=True)


def assert_same_quotes(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.columns) == list(QUOTE_COLUMNS)
    assert str(got["ts"].dtype) == TS_DTYPE
    assert got["ts"].is_monotonic_increasing
    pd.testing.assert_frame_equal(normalised(got), normalised(expected))


def read_all(store: QuoteStore, market: Market = TON) -> pd.DataFrame:
    return store.read(market, *EVERYTHING)


def between(frame: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    return frame.loc[(frame["ts"] >= pd.Timestamp(start)) & (frame["ts"] < pd.Timestamp(end))]


@pytest.fixture
def store(pg_settings):
    with PostgresQuoteStore(pg_settings.storage.postgres, pg_settings.system_setup.circuit_breaker) as store:
        store.ensure_schema()
        store.ensure_schema()  # idempotent
        yield store


def test_factory_builds_the_postgres_store(pg_settings):
    with open_quote_store(pg_settings) as store:
        assert isinstance(store, PostgresQuoteStore)


def test_round_trip_is_exact(store):
    quotes = make_quotes()
    assert quotes["ts"].duplicated().any() and quotes["bid"].isna().any()
    assert store.write(TON, quotes) == len(quotes)
    assert_same_quotes(read_all(store), quotes)
    # The same frame shuffled is the same data.
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
    empty = store.read(TON, datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC))
    assert empty.empty and str(empty["ts"].dtype) == TS_DTYPE


def test_naive_bounds_mean_utc(store):
    store.write(TON, make_quotes())
    naive = store.read(TON, datetime(2026, 11, 20, 6), datetime(2026, 11, 21, 6))
    aware = store.read(TON, datetime(2026, 11, 20, 6, tzinfo=UTC), datetime(2026, 11, 21, 6, tzinfo=UTC))
    assert len(naive) > 0
    pd.testing.assert_frame_equal(naive, aware)


def test_overlapping_write_replaces_its_range(store):
    quotes = make_quotes()
    store.write(TON, quotes)
    store.write(TON, quotes)
    assert len(read_all(store)) == len(quotes)
    middle = make_quotes(n=500, start=DAY + timedelta(hours=20), span=timedelta(hours=8), seed=9)
    assert store.write(TON, middle) == len(middle)
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
    assert first.tzinfo is not None and first.utcoffset() == timedelta(0)
    assert store.time_range(Market.parse("kraken:XBTUSD")) is None
    assert_same_quotes(read_all(store, BTC), btc)
    assert store.write(TON, make_quotes(n=0)) == 0
    assert store.time_range(TON) == (first, last)


def _with_text_price(frame: pd.DataFrame) -> pd.DataFrame:
    bad = frame.astype({"price": object})
    bad.loc[7, "price"] = "oops"
    return bad


def _with_missing_ts(frame: pd.DataFrame) -> pd.DataFrame:
    bad = frame.copy()
    bad.loc[3, "ts"] = pd.NaT
    return bad


def _with_nan_price(frame: pd.DataFrame) -> pd.DataFrame:
    bad = frame.copy()
    bad.loc[5, "price"] = np.nan
    return bad


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_with_text_price, "column 'price'"),
        (_with_missing_ts, "row 3: ts is missing"),
        (_with_nan_price, "row 5: price"),
        (lambda frame: frame.drop(columns="price"), "price"),
        (lambda frame: frame.assign(volume=np.inf), "volume is infinite"),
    ],
)
def test_invalid_input_is_refused_and_changes_nothing(store, spoil, message):
    quotes = make_quotes()
    store.write(TON, quotes)
    with pytest.raises(DataValidationError, match=message):
        store.write(TON, spoil(make_quotes(seed=5)))
    assert_same_quotes(read_all(store), quotes)


def test_failed_copy_rolls_back_the_delete(store, monkeypatch):
    quotes = make_quotes()
    store.write(TON, quotes)
    real = pg_module.encode_records
    monkeypatch.setattr(pg_module, "encode_records", lambda *args: real(*args)[:-5])  # a torn last row
    with pytest.raises(DataValidationError):
        store.write(TON, make_quotes(seed=5))
    assert_same_quotes(read_all(store), quotes)
    monkeypatch.undo()
    assert store.write(TON, quotes.iloc[:10]) == 10  # the connection is still usable


def test_missing_table_is_permanent_and_does_not_trip_the_breaker(make_settings, pg_database):
    settings = make_settings(
        {
            "storage": {
                "postgres": {
                    "db_host": pg_database["db_host"],
                    "db_user": pg_database["db_user"],
                    "db_name": pg_database["db_name"],
                    "db_password": "",
                }
            },
            "system_setup": {"circuit_breaker": {"fail_max": 2}},
        }
    )
    with PostgresQuoteStore(settings.storage.postgres, settings.system_setup.circuit_breaker) as store:
        for _ in range(3):
            with pytest.raises(PermanentError, match="ensure_schema"):
                store.read(TON, *EVERYTHING)


def test_unreachable_server_trips_the_breaker_without_leaking_the_password(make_settings):
    settings = make_settings(
        {
            "storage": {
                "quote_store": "postgres",
                "postgres": {"db_host": "127.0.0.1:1", "db_password": PASSWORD},
            },
            "system_setup": {
                "circuit_breaker": {"fail_max": 3, "reset_timeout": "60s", "call_timeout": "3s"}
            },
        }
    )
    assert_breaker_trips_quietly(open_quote_store(settings), fail_max=3)


def assert_breaker_trips_quietly(store: QuoteStore, fail_max: int) -> None:
    """Transient failures until the breaker trips on the fail_max-th, then fast refusals; the password
    shows up nowhere."""
    errors: list[BaseException] = []
    for _ in range(fail_max - 1):
        with pytest.raises(StoreUnavailableError) as caught:
            store.read(TON, *EVERYTHING)
        assert not isinstance(caught.value, CircuitOpenError)
        errors.append(caught.value)
    for call in (store.markets, lambda: store.write(TON, make_quotes(n=10))):
        with pytest.raises(CircuitOpenError) as caught:
            call()
        errors.append(caught.value)
    texts = [str(store), repr(store), store.describe()]
    texts += ["".join(traceback.format_exception(error)) for error in errors]
    assert all(PASSWORD not in text for text in texts)
    assert "127.0.0.1" in store.describe()
    store.close()
