from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from rof_pipelines.adapters.quote_stores.parquet import ParquetQuoteStore
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import generate_quotes
from rof_pipelines.errors import DataValidationError

TON = Market.parse("binance:TONUSDT")
BTC = Market.parse("okx:BTCUSDT")
DAY = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture
def store(tmp_path):
    store = ParquetQuoteStore(tmp_path / "quotes")
    store.ensure_schema()
    return store


def sorted_quotes(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def test_round_trip_across_days(store):
    quotes = generate_quotes(TON, DAY, DAY + timedelta(days=2), seed=3)
    assert store.write(TON, quotes) == len(quotes)
    back = store.read(TON, DAY, DAY + timedelta(days=2))
    pd.testing.assert_frame_equal(back, sorted_quotes(quotes))
    one_day = store.read(TON, DAY + timedelta(days=1), DAY + timedelta(days=2))
    assert one_day["ts"].min() >= pd.Timestamp(DAY + timedelta(days=1))
    assert len(one_day) + len(store.read(TON, DAY, DAY + timedelta(days=1))) == len(quotes)
    assert store.markets() == [TON]
    first, last = store.time_range(TON)
    assert first == quotes["ts"].min() and last == quotes["ts"].max()


def test_reads_are_half_open(store):
    quotes = generate_quotes(TON, DAY, DAY + timedelta(hours=1), seed=3)
    store.write(TON, quotes)
    pivot = sorted_quotes(quotes)["ts"].iloc[10].to_pydatetime()
    before = store.read(TON, DAY, pivot)
    after = store.read(TON, pivot, DAY + timedelta(hours=1))
    assert before["ts"].max() < pd.Timestamp(pivot) and after["ts"].min() == pd.Timestamp(pivot)


def test_rewrite_replaces_the_range_instead_of_duplicating(store):
    quotes = generate_quotes(TON, DAY, DAY + timedelta(days=2), seed=3)
    store.write(TON, quotes)
    store.write(TON, quotes)
    assert len(store.read(TON, DAY, DAY + timedelta(days=2))) == len(quotes)
    # A narrower overlapping write replaces only its own range.
    middle = generate_quotes(TON, DAY + timedelta(hours=20), DAY + timedelta(hours=28), seed=99)
    store.write(TON, middle)
    back = store.read(TON, DAY, DAY + timedelta(days=2))
    lo, hi = middle["ts"].min(), middle["ts"].max()
    inside = back.loc[(back["ts"] >= lo) & (back["ts"] <= hi)]
    pd.testing.assert_frame_equal(inside.reset_index(drop=True), sorted_quotes(middle))
    outside_before = quotes.loc[(quotes["ts"] < lo) | (quotes["ts"] > hi)]
    assert len(back) == len(outside_before) + len(middle)


def test_markets_are_kept_apart(store):
    store.write(TON, generate_quotes(TON, DAY, DAY + timedelta(hours=2)))
    store.write(BTC, generate_quotes(BTC, DAY, DAY + timedelta(hours=2)))
    assert store.markets() == [TON, BTC] or store.markets() == sorted([TON, BTC])
    assert store.read(BTC, DAY, DAY + timedelta(hours=2))["price"].median() > 1000


def test_invalid_frame_writes_nothing(store):
    good = generate_quotes(TON, DAY, DAY + timedelta(hours=2), seed=1)
    store.write(TON, good)
    bad = good.copy()
    bad["price"] = bad["price"].astype(object)
    bad.loc[5, "price"] = "oops"
    with pytest.raises(DataValidationError, match="column 'price' is not valid"):
        store.write(TON, bad)
    pd.testing.assert_frame_equal(store.read(TON, DAY, DAY + timedelta(hours=2)), sorted_quotes(good))
    with pytest.raises(DataValidationError, match="lack required column"):
        store.write(TON, good.drop(columns=["price"]))
    nan_price = good.copy()
    nan_price.loc[7, "price"] = float("nan")
    with pytest.raises(DataValidationError, match="row 7: price must be a finite number"):
        store.write(TON, nan_price)
    pd.testing.assert_frame_equal(store.read(TON, DAY, DAY + timedelta(hours=2)), sorted_quotes(good))


def test_empty_store_answers(store):
    assert store.markets() == []
    assert store.time_range(TON) is None
    assert store.read(TON, DAY, DAY + timedelta(days=1)).empty


def test_nan_optional_columns_survive(store):
    quotes = generate_quotes(TON, DAY, DAY + timedelta(hours=1), seed=2)
    quotes.loc[::7, ["bid", "ask", "volume"]] = np.nan
    store.write(TON, quotes)
    pd.testing.assert_frame_equal(store.read(TON, DAY, DAY + timedelta(hours=1)), sorted_quotes(quotes))


def test_a_write_sweeps_only_the_temp_files_this_store_stages(store):
    """A killed writer's ``.part-0.parquet.<pid>.tmp`` goes at the market's next write; any other
    name, and other markets' leftovers, stay (they are not this write's to judge)."""
    store.write(TON, generate_quotes(TON, DAY, DAY + timedelta(hours=1), seed=4))
    day_dir = next(store.root.glob("exchange=binance/pair=TONUSDT/date=*"))
    leftovers = [day_dir / ".part-0.parquet.4242.tmp", day_dir / ".part-3.parquet.1.tmp"]
    kept = [day_dir / ".part-0.parquet.tmp", day_dir / "part-0.parquet.7.tmp", day_dir / ".notes.1.tmp"]
    other = store.root / "exchange=okx" / "pair=BTCUSDT" / "date=2026-11-20" / ".part-0.parquet.9.tmp"
    other.parent.mkdir(parents=True)
    for path in [*leftovers, *kept, other]:
        path.write_bytes(b"half a file")
    store.write(TON, generate_quotes(TON, DAY, DAY + timedelta(hours=1), seed=5))
    assert not any(path.exists() for path in leftovers)
    assert all(path.exists() for path in [*kept, other])
    assert len(store.read(TON, DAY, DAY + timedelta(hours=1))) > 0
