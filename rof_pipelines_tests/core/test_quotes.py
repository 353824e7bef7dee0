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
    infer_candle_interval,
    parse_candle_interval,
    resample_bars,
    snapshots_from_table,
    validate_candles,
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


# --- imports: time zones, epochs, every problem at once --------------------------------------------


def test_zoned_timestamps_are_converted_to_utc():
    table = pd.DataFrame(
        {
            "ts": ["2026-11-20T00:00:00Z", "2026-11-20T02:00:00+01:00", "2026-11-19 20:00:01-05:00"],
            "price": ["1", "2", "3"],
        }
    )
    ts = snapshots_from_table(table)["ts"]
    assert ts.tolist() == [
        pd.Timestamp(DAY),
        pd.Timestamp(DAY + timedelta(hours=1)),
        pd.Timestamp(DAY + timedelta(hours=1, seconds=1)),
    ]


def test_naive_timestamps_are_refused_naming_column_value_and_fix():
    table = pd.DataFrame({"Time": ["2026-11-20 00:00:00", "2026-11-20 00:00:10"], "price": ["1", "2"]})
    with pytest.raises(DataValidationError) as refused:
        snapshots_from_table(table, "q.csv")
    message = str(refused.value)
    assert "row 1 (file line 2), column 'time'" in message
    assert "'2026-11-20 00:00:00' has no time zone" in message
    assert "--tz UTC" in message and "--tz America/New_York" in message


def test_naive_timestamps_are_localised_in_the_given_zone_dst_aware():
    table = pd.DataFrame({"ts": ["2024-01-15 09:30", "2024-07-15 09:30"], "price": ["1", "2"]})
    ts = snapshots_from_table(table, tz="America/New_York")["ts"]
    assert ts.tolist() == [
        pd.Timestamp("2024-01-15 14:30", tz="UTC"),
        pd.Timestamp("2024-07-15 13:30", tz="UTC"),
    ]
    assert snapshots_from_table(table, tz="UTC")["ts"].iloc[0] == pd.Timestamp("2024-01-15 09:30", tz="UTC")


def test_local_times_a_dst_change_skips_or_repeats_are_refused_with_the_row():
    table = pd.DataFrame(
        {"ts": ["2024-03-10 01:30", "2024-03-10 02:30", "2024-11-03 01:30"], "price": ["1", "1", "1"]}
    )
    with pytest.raises(DataValidationError) as refused:
        snapshots_from_table(table, "q.csv", tz="America/New_York")
    message = str(refused.value)
    assert "2 problems" in message
    assert (
        "row 2 (file line 3), column 'ts': 2024-03-10 02:30:00 does not exist in America/New_York" in message
    )
    assert "row 3 (file line 4), column 'ts': 2024-11-03 01:30:00 happens twice" in message


def test_unknown_zone_is_refused():
    table = pd.DataFrame({"ts": ["2024-01-15 09:30"], "price": ["1"]})
    with pytest.raises(DataValidationError, match="unknown time zone 'Mars/Olympus'"):
        snapshots_from_table(table, tz="Mars/Olympus")


def test_epoch_numbers_are_utc_and_need_no_zone():
    epoch = int(DAY.timestamp())
    nanos = snapshots_from_table(pd.DataFrame({"ts": [str(epoch * 10**9 + 1_000)], "price": ["1"]}))
    assert nanos["ts"].iloc[0] == pd.Timestamp(DAY) + pd.Timedelta(microseconds=1)
    assert snapshots_from_table(pd.DataFrame({"ts": [epoch], "price": [1.0]}), tz="Asia/Tokyo")["ts"].iloc[
        0
    ] == pd.Timestamp(DAY)


def test_a_seconds_value_in_a_milliseconds_file_is_refused_not_stored_in_1970():
    epoch_ms = int(DAY.timestamp()) * 1000
    seconds = str(epoch_ms // 1000 + 2)
    table = pd.DataFrame({"ts": [str(epoch_ms), str(epoch_ms + 1000), seconds], "price": ["1", "1", "1"]})
    with pytest.raises(
        DataValidationError,
        match=rf"row 3 \(file line 4\), column 'ts': '{seconds}' looks like epoch seconds, "
        r"but this file's epoch timestamps are milliseconds",
    ):
        snapshots_from_table(table, "q.csv")


EPOCH_NOW = str(int(DAY.timestamp()))


@pytest.mark.parametrize(
    ("good", "bad", "problem"),
    [
        ("2026-11-20T00:00:00Z", "1969-12-31T23:59:59Z", "is out of range"),
        ("2026-11-20T00:00:00Z", "2100-01-01T00:00:00Z", "is out of range"),
        ("2026-11-20T00:00:00Z", "0001-01-01T00:00:00Z", "is out of range"),
        ("2026-11-20T00:00:00Z", "99999-01-01T00:00:00Z", "is not a timestamp"),
        (EPOCH_NOW, "-5", "is out of range"),
        (EPOCH_NOW, "99999999999999999999", "is out of range"),
        (EPOCH_NOW, "1e300", "is out of range"),
        (EPOCH_NOW, "inf", "is not a timestamp"),
    ],
)
def test_out_of_range_timestamps_are_refused_without_a_traceback(good, bad, problem):
    table = pd.DataFrame({"ts": [good, bad], "price": ["1", "1"]})
    with pytest.raises(
        DataValidationError, match=rf"row 2 \(file line 3\), column 'ts': '{bad}'.* {problem}"
    ):
        snapshots_from_table(table, "q.csv")


def test_every_problem_is_reported_in_file_order_up_to_a_limit():
    n = 60
    ts = [f"2026-11-20T00:00:{i:02d}Z" for i in range(n)]
    price = ["1"] * n
    volume = ["1"] * n
    for row in range(5, n, 2):
        price[row] = "x"  # 28 broken prices
    volume[2] = "-1"
    ts[1] = "never"
    table = pd.DataFrame({"ts": ts, "price": price, "volume": volume})
    with pytest.raises(DataValidationError) as refused:
        snapshots_from_table(table, "q.csv")
    lines = str(refused.value).splitlines()
    assert lines[0] == "q.csv: 30 problems, nothing was imported:"
    assert lines[1] == "  row 2 (file line 3), column 'ts': 'never' is not a timestamp"
    assert lines[2] == "  row 3 (file line 4), column 'volume': volume must not be negative, got -1.0"
    assert lines[3] == "  row 6 (file line 7), column 'price': 'x' is not a number"
    assert len(lines) == 1 + 20 + 1 and lines[-1] == "  ... and 10 more problems"


def test_bid_and_ask_must_be_positive_and_not_crossed():
    table = pd.DataFrame(
        {
            "ts": [f"2026-11-20T00:00:0{i}Z" for i in range(4)],
            "price": ["5", "5", "5", "5"],
            "bid": ["4.9", "0", "5.2", "-1"],
            "ask": ["5.1", "5.1", "5.1", "0"],
        }
    )
    with pytest.raises(DataValidationError) as refused:
        snapshots_from_table(table, "q.csv")
    message = str(refused.value)
    assert "row 2 (file line 3), column 'bid': bid must be positive, got 0.0" in message
    assert "row 3 (file line 4), column 'bid': crossed quote: bid 5.2 is above ask 5.1" in message
    assert "row 4 (file line 5), column 'bid': bid must be positive" in message
    assert "row 4 (file line 5), column 'ask': ask must be positive" in message
    assert "row 1 " not in message


def test_booleans_are_not_numbers_nor_timestamps():
    epoch = int(DAY.timestamp())
    typed = pd.DataFrame({"ts": [epoch, epoch + 1], "price": [True, False]})  # as Parquet gives them
    with pytest.raises(DataValidationError, match=r"row 1 .*column 'price': True is not a number"):
        snapshots_from_table(typed)
    mixed = pd.DataFrame({"ts": [epoch, epoch + 1], "price": [1.5, True]}, dtype=object)
    with pytest.raises(DataValidationError, match=r"row 2 .*column 'price': True is not a number"):
        snapshots_from_table(mixed)
    texts = pd.DataFrame({"ts": ["2026-11-20T00:00:00Z"], "price": ["1"], "volume": ["true"]})
    with pytest.raises(DataValidationError, match=r"column 'volume': 'true' is not a number"):
        snapshots_from_table(texts)
    for stamps in ([True, False], pd.Series([True, epoch], dtype=object), ["False", "2026-11-20T00:00:00Z"]):
        table = pd.DataFrame({"ts": stamps, "price": [1.0, 1.0]})
        with pytest.raises(
            DataValidationError, match=r"column 'ts': (True|'False') is a boolean, not a timestamp"
        ):
            snapshots_from_table(table)


def test_datetime_columns_from_parquet_are_understood():
    aware = pd.DataFrame({"ts": pd.date_range(DAY, periods=2, freq="s"), "price": [1.0, 2.0]})
    assert snapshots_from_table(aware)["ts"].iloc[1] == pd.Timestamp(DAY + timedelta(seconds=1))
    naive = aware.assign(ts=aware["ts"].dt.tz_localize(None))
    with pytest.raises(DataValidationError, match="has no time zone"):
        snapshots_from_table(naive)
    assert snapshots_from_table(naive, tz="Europe/Berlin")["ts"].iloc[0] == pd.Timestamp(
        DAY - timedelta(hours=1)
    )


def test_unnamed_first_column_is_the_timestamp_only_when_it_holds_timestamps():
    written = pd.DataFrame({"Unnamed: 0": ["2026-11-20 00:00:00+00:00"], "price": ["1"]})
    assert snapshots_from_table(written)["ts"].iloc[0] == pd.Timestamp(DAY)
    range_index = pd.DataFrame({"Unnamed: 0": ["0", "1"], "price": ["1", "2"]})
    with pytest.raises(DataValidationError, match="no timestamp column"):
        snapshots_from_table(range_index)


# --- candle intervals ------------------------------------------------------------------------------


def hourly_candles(open_times: list[pd.Timestamp]) -> pd.DataFrame:
    n = len(open_times)
    return pd.DataFrame(
        {
            "ts": [t.isoformat() for t in open_times],
            "open": ["10"] * n,
            "high": ["11"] * n,
            "low": ["9"] * n,
            "close": ["10.5"] * n,
        }
    )


def test_interval_is_the_most_common_spacing_not_the_smallest_gap():
    hours = pd.date_range(DAY, periods=48, freq="h")
    kept = [t for i, t in enumerate(hours) if i not in (5, 6, 20)]  # a few missing candles
    kept += list(pd.date_range(DAY + timedelta(days=4), periods=24, freq="h"))  # after a weekend
    validated = validate_candles(hourly_candles(kept))
    assert validated.interval == timedelta(hours=1)
    assert (
        validated.interval_note
        == f"inferred from the most common spacing ({len(kept) - 4} of {len(kept) - 1} gaps)"
    )
    assert infer_candle_interval(validated.candles) == timedelta(hours=1)


def test_weekly_and_monthly_candles_are_refused_with_advice():
    weekly = hourly_candles(list(pd.date_range(DAY, periods=10, freq="7D")))
    with pytest.raises(
        DataValidationError,
        match=r"mostly 7d apart .*weekly candles are not supported.*import the daily candles",
    ):
        validate_candles(weekly, "w.csv")
    monthly = hourly_candles(list(pd.date_range("2024-01-01", periods=13, freq="MS", tz="UTC")))
    with pytest.raises(
        DataValidationError, match=r"monthly candles are not supported.*import the daily candles"
    ):
        validate_candles(monthly, "m.csv")
    with pytest.raises(DataValidationError, match="monthly candles"):
        validate_candles(weekly, interval=timedelta(days=30))


def test_explicit_interval_must_match_the_data():
    candles = hourly_candles(list(pd.date_range(DAY, periods=24, freq="h")))
    assert validate_candles(candles, interval=timedelta(hours=1)).interval_note == "given by --interval"
    with pytest.raises(
        DataValidationError, match=r"mostly 1h apart \(23 of 23 gaps\), finer than --interval 4h"
    ):
        validate_candles(candles, interval=timedelta(hours=4))
    with pytest.raises(DataValidationError, match=r"coarser than --interval 1m; pass --interval 1h"):
        validate_candles(candles, interval=timedelta(minutes=1))


def test_candles_closer_than_the_interval_or_off_its_grid_are_refused_by_row():
    times = list(pd.date_range(DAY, periods=24, freq="h"))
    times[10] = times[10] + timedelta(minutes=30)  # 10:30: off the hourly grid
    times.insert(5, times[4] + timedelta(minutes=15))  # 04:15, only 15m after the 04:00 candle
    with pytest.raises(DataValidationError) as refused:
        validate_candles(hourly_candles(times), "k.csv")
    message = str(refused.value)
    assert "row 6 (file line 7), column 'ts': open time is only 15m after the candle on row 5" in message
    assert "row 12 (file line 13), column 'ts': 2026-11-20 10:30:00+00:00 is not on the 1h grid" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1m", timedelta(minutes=1)),
        ("3m", timedelta(minutes=3)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("4H", timedelta(hours=4)),
        ("12h", timedelta(hours=12)),
        ("1d", timedelta(days=1)),
        ("30s", timedelta(seconds=30)),
        ("5min", timedelta(minutes=5)),
    ],
)
def test_parse_candle_interval_accepts_bar_intervals(text, expected):
    assert parse_candle_interval(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1M", "monthly"),
        ("1mo", "monthly"),
        ("1w", "weekly"),
        ("2d", "not supported"),
        ("7m", "does not divide a day"),
        ("500ms", "not an interval|shortest"),
        ("soon", "not an interval"),
    ],
)
def test_parse_candle_interval_refuses_what_the_pipeline_cannot_run(text, message):
    with pytest.raises(DataValidationError, match=message):
        parse_candle_interval(text)
