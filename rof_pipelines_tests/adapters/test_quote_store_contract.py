"""The quote-store contract, run against every store: the in-memory fake, parquet in a temp directory,
PostgreSQL and ClickHouse on chDB. The same cases pass on all four, so a Dagster wiring test that uses
the ``memory`` store exercises the behaviour the real stores have.

Each store is opened through ``open_quote_store`` (the registry), as the pipeline opens it.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from rof_pipelines.adapters.quote_stores import QuoteStore, open_quote_store
from rof_pipelines.adapters.quote_stores.memory import MemoryQuoteStore
from rof_pipelines.core.market import QUOTE_COLUMNS, TS_DTYPE, Market
from rof_pipelines.errors import DataValidationError
from rof_pipelines_tests.adapters.test_postgres_store import (
    BTC,
    DAY,
    EVERYTHING,
    TON,
    assert_same_quotes,
    between,
    make_quotes,
    normalised,
    read_all,
)

STORES = [
    pytest.param("memory", id="memory"),
    pytest.param("parquet", id="parquet"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("clickhouse", id="clickhouse", marks=pytest.mark.clickhouse),
]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, make_settings) -> Iterator[QuoteStore]:
    kind = request.param
    if kind == "postgres":
        settings = request.getfixturevalue("pg_settings")
    elif kind == "clickhouse":
        settings = request.getfixturevalue("chdb_settings")
    else:
        settings = make_settings({"storage": {"quote_store": kind}})
    with open_quote_store(settings) as store:
        assert store.name == kind
        store.ensure_schema()
        store.ensure_schema()  # idempotent
        yield store
    if kind == "memory":
        MemoryQuoteStore.drop_space(str(settings.storage.resolved_data_dir()))


def test_an_empty_store_answers_empty(store):
    assert store.markets() == []
    assert store.time_range(TON) is None
    empty = read_all(store)
    assert empty.empty and list(empty.columns) == list(QUOTE_COLUMNS)
    assert str(empty["ts"].dtype) == TS_DTYPE


def test_round_trip_is_exact_and_rewriting_does_not_duplicate(store):
    quotes = make_quotes(n=1500)
    assert quotes["ts"].duplicated().any() and quotes["bid"].isna().any()
    assert store.write(TON, quotes) == len(quotes)
    assert_same_quotes(read_all(store), quotes)
    assert store.write(TON, quotes.sample(frac=1, random_state=1)) == len(quotes)
    assert_same_quotes(read_all(store), quotes)


def test_reads_are_half_open_and_naive_bounds_mean_utc(store):
    quotes = make_quotes(n=1500)
    store.write(TON, quotes)
    ordered = normalised(quotes)
    lo, hi = ordered["ts"].iloc[100].to_pydatetime(), ordered["ts"].iloc[1000].to_pydatetime()
    got = store.read(TON, lo, hi)
    assert got["ts"].min() == pd.Timestamp(lo) and got["ts"].max() < pd.Timestamp(hi)
    assert_same_quotes(got, between(quotes, lo, hi))
    assert store.read(TON, hi, hi).empty and store.read(TON, hi, lo).empty
    naive = store.read(TON, lo.replace(tzinfo=None), hi.replace(tzinfo=None))
    pd.testing.assert_frame_equal(naive, got)
    later = store.read(TON, datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC))
    assert later.empty and str(later["ts"].dtype) == TS_DTYPE


def test_a_write_replaces_first_to_last_ts_inclusive(store):
    quotes = make_quotes(n=1500)
    store.write(TON, quotes)
    middle = make_quotes(n=300, start=DAY + timedelta(hours=20), span=timedelta(hours=8), seed=9)
    assert store.write(TON, middle) == len(middle)
    lo, hi = middle["ts"].min(), middle["ts"].max()
    kept = quotes.loc[(quotes["ts"] < lo) | (quotes["ts"] > hi)]
    assert_same_quotes(read_all(store), pd.concat([kept, middle], ignore_index=True))


def test_days_inside_the_replaced_range_lose_their_rows_even_when_the_frame_skips_them(store):
    """Three days of rows; a write with rows on the first and the third day only empties the second."""
    quotes = make_quotes(n=900, start=DAY, span=timedelta(days=3), seed=3)
    store.write(TON, quotes)
    ends = pd.concat(
        [
            make_quotes(n=20, start=DAY + timedelta(hours=12), span=timedelta(hours=1), seed=4),
            make_quotes(n=20, start=DAY + timedelta(days=2, hours=12), span=timedelta(hours=1), seed=5),
        ],
        ignore_index=True,
    )
    store.write(TON, ends)
    assert store.read(TON, DAY + timedelta(hours=14), DAY + timedelta(days=2, hours=12)).empty
    lo, hi = ends["ts"].min(), ends["ts"].max()
    kept = quotes.loc[(quotes["ts"] < lo) | (quotes["ts"] > hi)]
    assert_same_quotes(read_all(store), pd.concat([kept, ends], ignore_index=True))


def test_markets_are_kept_apart_and_listed_sorted(store):
    ton, btc = make_quotes(n=400, seed=1), make_quotes(n=50, seed=2)
    store.write(TON, ton)
    store.write(BTC, btc)
    assert store.markets() == sorted([TON, BTC])
    assert_same_quotes(read_all(store, BTC), btc)
    assert_same_quotes(read_all(store, TON), ton)


def test_time_range_is_first_and_last_ts_in_utc(store):
    quotes = make_quotes(n=400, seed=1)
    store.write(TON, quotes)
    first, last = store.time_range(TON)
    assert first == quotes["ts"].min() and last == quotes["ts"].max()
    assert first.tzinfo is not None and first.utcoffset() == timedelta(0)
    assert store.time_range(Market.parse("kraken:XBTUSD")) is None
    assert store.write(TON, make_quotes(n=0)) == 0  # an empty frame writes nothing
    assert store.time_range(TON) == (first, last)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda frame: frame.astype({"price": object}).assign(price="oops"), "column 'price'"),
        (
            lambda frame: frame.assign(price=np.where(frame.index == 5, np.nan, frame["price"])),
            "row 5: price",
        ),
        (lambda frame: frame.drop(columns="price"), "lack required column"),
        (lambda frame: frame.assign(volume=np.inf), "volume is infinite"),
        (lambda frame: "not a frame", "must be a DataFrame"),
    ],
)
def test_refused_input_changes_nothing(store, spoil, message):
    quotes = make_quotes(n=400)
    store.write(TON, quotes)
    with pytest.raises(DataValidationError, match=message):
        store.write(TON, spoil(make_quotes(n=400, seed=5)))
    assert_same_quotes(read_all(store), quotes)


def test_an_invalid_market_is_refused_before_anything_is_written(store):
    with pytest.raises(DataValidationError, match="not a valid market"):
        store.write(Market("..", ".."), make_quotes(n=10))
    assert store.markets() == []


def test_the_window_read_covers_the_stored_range(store):
    """What the pipeline's window loader does: time_range, then one read of [first, last + 1 us)."""
    quotes = make_quotes(n=600, span=timedelta(days=4), seed=7)
    store.write(TON, quotes)
    first, last = store.time_range(TON)
    assert_same_quotes(store.read(TON, first, last + timedelta(microseconds=1)), quotes)
    assert len(store.read(TON, *EVERYTHING)) == len(quotes)
