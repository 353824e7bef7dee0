from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from rof_pipelines.core.market import TS_DTYPE, Market
from rof_pipelines.core.quotes import (
    GeneratorConfig,
    candles_from_table,
    candles_to_snapshots,
    clean_quotes,
    generate_quotes,
    resample_bars,
    snapshots_from_table,
)
from rof_pipelines.errors import DataValidationError

TON = Market.parse("binance:TONUSDT")
DAY = datetime(2026, 11, 20, tzinfo=UTC)
CLEAN_FEED = GeneratorConfig(duplicate_rate=0, out_of_order_rate=0, nan_rate=0, outlier_rate=0)


def frame(ts_seconds, prices, bid=None, ask=None, volume=None) -> pd.DataFrame:
    n = len(prices)
    return pd.DataFrame(
        {
            "ts": pd.to_datetime(
                np.asarray(ts_seconds) * 1_000_000 + 1_763_596_800_000_000, unit="us", utc=True
            ).astype(TS_DTYPE),
            "price": np.asarray(prices, dtype=float),
            "bid": np.full(n, np.nan) if bid is None else np.asarray(bid, dtype=float),
            "ask": np.full(n, np.nan) if ask is None else np.asarray(ask, dtype=float),
            "volume": np.ones(n) if volume is None else np.asarray(volume, dtype=float),
        }
    )


def test_market_parse_normalises_and_refuses():
    assert Market.parse(" Binance:tonusdt ").key == "binance:TONUSDT"
    for bad in ("binance", "a:b:c", "bin ance:X", ""):
        with pytest.raises(ValueError, match="exchange:PAIR"):
            Market.parse(bad)


def test_generator_is_deterministic_and_realistic():
    a = generate_quotes(TON, DAY, DAY + timedelta(days=1), seed=7)
    b = generate_quotes(TON, DAY, DAY + timedelta(days=1), seed=7)
    c = generate_quotes(TON, DAY, DAY + timedelta(days=1), seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a["price"].equals(c["price"])
    clean, _ = clean_quotes(a)
    assert 6000 < len(clean) < 11000  # ~10 s cadence
    assert clean["ts"].min() >= pd.Timestamp(DAY) and clean["ts"].max() < pd.Timestamp(
        DAY + timedelta(days=1)
    )
    quoted = clean.dropna(subset=["bid", "ask"])
    assert len(quoted) > 0.99 * len(clean) and (quoted["bid"] < quoted["ask"]).all()
    spread_bps = ((clean["ask"] - clean["bid"]) / clean["price"] * 1e4).median()
    assert 1 < spread_bps < 20
    assert (clean["volume"] > 0).all()
    returns = np.diff(np.log(clean["price"].to_numpy()))
    assert 0 < returns.std() < 0.01


def test_generator_markets_differ():
    btc = generate_quotes(Market.parse("binance:BTCUSDT"), DAY, DAY + timedelta(hours=1), config=CLEAN_FEED)
    ton = generate_quotes(TON, DAY, DAY + timedelta(hours=1), config=CLEAN_FEED)
    assert btc["price"].median() > 1000 * ton["price"].median()


def test_cleaning_counts_each_kind_of_dirt():
    raw = frame(
        [0, 10, 20, 20, 15, 30, 40, 50, 60, 70, 80, 90, 100],
        [10, 10.1, 10.2, 10.25, 10.15, np.nan, 10.3, 20.0, 10.35, -1, 10.4, 10.5, 10.45],
        bid=[9.9, 10, 10.1, 10.2, 10.1, np.nan, 10.2, 19.9, 10.3, 0, 10.5, 10.4, 10.4],
        ask=[10.1, 10.2, 10.3, 10.3, 10.2, np.nan, 10.4, 20.1, 10.4, 0, 10.3, 10.6, 10.5],
    )
    clean, report = clean_quotes(raw)
    assert report.input_rows == 13
    assert report.out_of_order == 1  # ts 15 after 20
    assert report.duplicates == 1  # second ts 20; the later delivery wins
    assert report.nan_price == 1
    assert report.non_positive_price == 1
    assert report.outliers == 1  # 20.0 between 10.3 and 10.35
    assert report.crossed_quotes == 1  # bid 10.5 > ask 10.3 at ts 80
    assert report.output_rows == len(clean) == 9
    assert clean["ts"].is_monotonic_increasing and clean["ts"].is_unique
    assert clean.loc[clean["price"] == 10.25].shape[0] == 1
    assert np.isnan(clean.loc[clean["price"] == 10.4, "bid"]).all()


def test_cleaning_keeps_a_real_move_and_counts_gaps():
    ts = list(range(0, 600, 10)) + list(range(1200, 1800, 10))
    prices = [100.0] * 30 + [110.0] * (len(ts) - 30)  # a 10 % level shift that stays: not a spike
    _clean, report = clean_quotes(frame(ts, prices))
    assert report.outliers == 0
    assert report.gaps == 1 and report.max_gap_seconds == pytest.approx(610)


def test_resample_bars_ohlcv_by_hand():
    raw = frame([0, 20, 40, 59.999999, 60, 185], [10, 12, 9, 11, 11.5, 13], volume=[1, 2, 3, 4, 5, 6])
    bars = resample_bars(raw, timedelta(minutes=1))
    # minute 2 has no tick: it carries minute 1's close with no volume
    assert list(bars["open"]) == [10, 11.5, 11.5, 13]
    assert list(bars["high"]) == [12, 11.5, 11.5, 13]
    assert list(bars["low"]) == [9, 11.5, 11.5, 13]
    assert list(bars["close"]) == [11, 11.5, 11.5, 13]
    assert list(bars["volume"]) == [10, 5, 0, 6]
    assert list(bars["n_ticks"]) == [4, 1, 0, 1]
    assert bars.index[0] == pd.Timestamp(1_763_596_800, unit="s", tz="UTC")


def test_candles_stored_as_snapshots_reproduce_the_candles():
    rng = np.random.default_rng(3)
    n = 500
    t0 = 1_763_596_800_000_000 + np.arange(n) * 300_000_000  # 5-minute candles
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.r_[100, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.003, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.003, n))
    volume = rng.uniform(1, 100, n)
    table = pd.DataFrame(
        {"open_time": t0 // 1000, "open": open_, "high": high, "low": low, "close": close, "volume": volume}
    )
    candles = candles_from_table(table)
    snapshots = candles_to_snapshots(candles, timedelta(minutes=5))
    clean, report = clean_quotes(snapshots)
    assert report.outliers == 0 and report.duplicates == 0
    bars = resample_bars(clean, timedelta(minutes=5))
    np.testing.assert_allclose(bars["open"], open_)
    np.testing.assert_allclose(bars["high"], high)
    np.testing.assert_allclose(bars["low"], low)
    np.testing.assert_allclose(bars["close"], close)
    np.testing.assert_allclose(bars["volume"], volume)
    assert (bars.index.as_unit("us").asi8 == t0).all()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            pd.DataFrame({"ts": ["2026-11-20T00:00:00Z", "2026-11-20T00:00:10Z"], "price": ["1.5", "abc"]}),
            r"row 2 \(file line 3\), column 'price': 'abc' is not a number",
        ),
        (
            pd.DataFrame({"ts": ["2026-11-20T00:00:00Z", "yesterday"], "price": ["1.5", "1.6"]}),
            r"row 2 \(file line 3\), column 'ts': 'yesterday' is not a timestamp",
        ),
        (
            pd.DataFrame({"ts": ["2026-11-20T00:00:00Z"], "price": ["-3"]}),
            r"column 'price': price must be positive",
        ),
        (pd.DataFrame({"ts": ["2026-11-20T00:00:00Z"], "cost": ["3"]}), r"no 'price' column"),
        (pd.DataFrame({"when": ["2026-11-20T00:00:00Z"], "price": ["3"]}), r"no timestamp column"),
    ],
)
def test_snapshot_validation_names_row_and_column(table, message):
    with pytest.raises(DataValidationError, match=message):
        snapshots_from_table(table, "quotes.csv")


def test_candle_validation_refuses_impossible_candles():
    table = pd.DataFrame(
        {"ts": [0, 60], "open": [10, 10], "high": [11, 9.5], "low": [9, 9], "close": [10.5, 9.8]}
    )
    with pytest.raises(DataValidationError, match=r"row 2 .*column 'high': high is below open or close"):
        candles_from_table(table, "k.csv")


def test_epoch_units_are_told_apart():
    epoch = int(DAY.timestamp())
    seconds = snapshots_from_table(pd.DataFrame({"ts": [epoch], "price": [1.0]}))
    millis = snapshots_from_table(pd.DataFrame({"ts": [epoch * 1000], "price": [1.0]}))
    micros = snapshots_from_table(pd.DataFrame({"ts": [epoch * 1_000_000], "price": [1.0]}))
    assert seconds["ts"].iloc[0] == millis["ts"].iloc[0] == micros["ts"].iloc[0] == pd.Timestamp(DAY)
