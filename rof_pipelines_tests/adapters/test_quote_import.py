"""``rof quotes import``: good files land in any store; a bad file is refused whole, naming the row."""

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import yaml

from rof_pipelines.adapters.quote_files import import_quote_file
from rof_pipelines.adapters.quote_stores import open_quote_store
from rof_pipelines.core.indicators import build_indicator_frame
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import clean_quotes, generate_quotes, resample_bars
from rof_pipelines.errors import DataValidationError
from rof_pipelines.settings import PROJECT_ROOT
from rof_pipelines_tests.fixtures.real_shaped import (
    crypto_kline_rows,
    equity_daily_frame,
    fx_hourly_frame,
    write_kline_csv,
    write_yahoo_csv,
)

TON = Market.parse("binance:TONUSDT")
DAY = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture(params=["parquet", "postgres", "clickhouse"])
def store(request, make_settings):
    if request.param == "parquet":
        settings = make_settings()
    elif request.param == "postgres":
        settings = request.getfixturevalue("pg_settings")
    else:
        settings = request.getfixturevalue("chdb_settings")
    with open_quote_store(settings) as quote_store:
        quote_store.ensure_schema()
        yield quote_store


def snapshot_csv(tmp_path, rows: int = 500):
    quotes = generate_quotes(TON, DAY, DAY + timedelta(hours=2), seed=4).head(rows)
    quotes, _ = clean_quotes(quotes)
    table = pd.DataFrame(
        {
            "timestamp": quotes["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "price": quotes["price"],
            "bid": quotes["bid"],
            "ask": quotes["ask"],
            "volume": quotes["volume"],
        }
    )
    path = tmp_path / "snapshots.csv"
    table.to_csv(path, index=False)
    return path, quotes


def kline_csv(tmp_path, n: int = 300, minutes: int = 5):
    rng = np.random.default_rng(11)
    t0 = int(DAY.timestamp() * 1000) + np.arange(n) * minutes * 60_000
    close = 5.5 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.r_[5.5, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.002, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.002, n))
    volume = rng.uniform(100, 1000, n)
    lines = [
        f"{t},{o:.8f},{h:.8f},{lo:.8f},{c:.8f},{v:.4f},{t + minutes * 60_000 - 1},0,10,0,0,0"
        for t, o, h, lo, c, v in zip(t0, open_, high, low, close, volume, strict=True)
    ]
    path = tmp_path / "TONUSDT-5m-2026-11-20.csv"
    path.write_text("\n".join(lines) + "\n")  # header-less, as exchanges export klines
    as_written = {
        "open": open_.round(8),
        "high": high.round(8),
        "low": low.round(8),
        "close": close.round(8),
        "volume": volume.round(4),
    }
    return path, pd.DataFrame(as_written, index=pd.to_datetime(t0, unit="ms", utc=True))


def test_snapshot_file_round_trip(store, tmp_path):
    path, quotes = snapshot_csv(tmp_path)
    result = import_quote_file(store, TON, path)
    assert result.kind == "snapshots" and result.snapshots_written == len(quotes)
    back = store.read(TON, DAY, DAY + timedelta(days=1))
    pd.testing.assert_frame_equal(back, quotes.reset_index(drop=True), check_exact=False, rtol=1e-12)


def test_candle_file_reproduces_candles_in_the_indicator_frame(store, tmp_path):
    path, candles = kline_csv(tmp_path)
    result = import_quote_file(store, TON, path)
    assert result.kind == "candles" and result.candle_interval == "5m"
    snapshots, _ = clean_quotes(store.read(TON, DAY, DAY + timedelta(days=2)))
    frame = build_indicator_frame(resample_bars(snapshots, timedelta(minutes=5)))
    assert len(frame) == len(candles)
    for column in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(frame[column].to_numpy(), candles[column].to_numpy(), rtol=1e-9)
    assert (frame.index == candles.index).all()


def test_bad_file_is_refused_and_nothing_is_written(store, tmp_path):
    path, _ = snapshot_csv(tmp_path)
    lines = path.read_text().splitlines()
    fields = lines[300].split(",")
    fields[1] = "12,5"[:2] + "x"  # a broken number in the price column, line 301 of the file
    lines[300] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        DataValidationError, match=r"row 300 \(file line 301\), column 'price': '12x' is not a number"
    ):
        import_quote_file(store, TON, path)
    assert store.read(TON, DAY, DAY + timedelta(days=1)).empty
    assert TON not in store.markets()


def test_bad_candle_is_refused_whole(store, tmp_path):
    path, _ = kline_csv(tmp_path)
    lines = path.read_text().splitlines()
    fields = lines[150].split(",")
    fields[2] = "0.0001"  # high below open: an impossible candle, file line 151
    lines[150] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError, match=r"row 151 \(file line 151\), column 'high'"):
        import_quote_file(store, TON, path)
    assert store.read(TON, DAY, DAY + timedelta(days=2)).empty


def test_unknown_layout_and_empty_file(tmp_path, make_settings):
    with open_quote_store(make_settings()) as store:
        odd = tmp_path / "odd.csv"
        odd.write_text("when,value\n2026-11-20,3\n")
        with pytest.raises(DataValidationError, match="cannot tell the kind of file"):
            import_quote_file(store, TON, odd)
        empty = tmp_path / "empty.csv"
        empty.write_text("ts,price\n")
        with pytest.raises(DataValidationError, match="holds no rows"):
            import_quote_file(store, TON, empty)
        (tmp_path / "x.json").write_text("{}")
        with pytest.raises(DataValidationError, match="unsupported file type"):
            import_quote_file(store, TON, tmp_path / "x.json")


def test_cli_import_reports_the_bad_row_and_exits_nonzero(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("ts,price\n2026-11-20T00:00:00Z,5.5\n2026-11-20T00:00:10Z,abc\n")
    env = {"ROF_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rof_pipelines.cli",
            "quotes",
            "import",
            str(bad),
            "--market",
            "binance:TONUSDT",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "row 2 (file line 3), column 'price': 'abc' is not a number" in proc.stderr
    assert not (tmp_path / "data" / "quotes").exists() or not any(
        (tmp_path / "data" / "quotes").rglob("*.parquet")
    )


# --- real-shaped exports ---------------------------------------------------------------------------


def bars_of(store, market, interval: timedelta) -> pd.DataFrame:
    snapshots, _ = clean_quotes(
        store.read(market, datetime(2000, 1, 1, tzinfo=UTC), datetime(2099, 1, 1, tzinfo=UTC))
    )
    bars = resample_bars(snapshots, interval)
    return bars[bars["n_ticks"] > 0]


def assert_candles_equal(bars: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert (bars.index == expected.index).all()
    for column in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(bars[column].to_numpy(), expected[column].to_numpy(), rtol=1e-9)


EURUSD = Market.parse("oanda:EURUSD")
GOOG = Market.parse("yahoo:GOOG")
BTC = Market.parse("binance:BTCUSDT")


@pytest.fixture
def parquet_store(make_settings):
    with open_quote_store(make_settings()) as quote_store:
        quote_store.ensure_schema()
        yield quote_store


def test_pandas_to_csv_with_its_unnamed_index_column_imports(parquet_store, tmp_path):
    frame = fx_hourly_frame(days=14)
    frame.to_csv(tmp_path / "eurusd.csv")
    assert (tmp_path / "eurusd.csv").read_text().startswith(",open,high,low,close,volume\n")
    result = import_quote_file(parquet_store, EURUSD, tmp_path / "eurusd.csv")
    assert result.kind == "candles" and result.candle_interval == "1h"
    assert result.candle_interval_note == "inferred from the most common spacing (237 of 239 gaps)"
    assert (result.first_day, result.last_day, result.days) == ("2017-01-02", "2017-01-15", 12)
    assert_candles_equal(bars_of(parquet_store, EURUSD, timedelta(hours=1)), frame)


def test_index_label_and_parquet_datetime_index_import(parquet_store, tmp_path):
    frame = fx_hourly_frame(days=3, seed=1)
    frame.to_csv(tmp_path / "labelled.csv", index_label="timestamp")
    frame.to_parquet(tmp_path / "indexed.parquet")
    for path in (tmp_path / "labelled.csv", tmp_path / "indexed.parquet"):
        result = import_quote_file(parquet_store, EURUSD, path)
        assert result.rows_in_file == len(frame) and result.candle_interval == "1h"
    assert_candles_equal(bars_of(parquet_store, EURUSD, timedelta(hours=1)), frame)


def test_fx_weekend_gap_follows_the_fixed_utc_rule():
    frame = fx_hourly_frame(days=14)
    assert frame.index.tz is not None and frame.index.name is None
    assert pd.Timestamp("2017-01-06 21:00", tz="UTC") in frame.index
    assert pd.Timestamp("2017-01-06 22:00", tz="UTC") not in frame.index
    assert pd.Timestamp("2017-01-08 21:00", tz="UTC") not in frame.index
    assert pd.Timestamp("2017-01-08 22:00", tz="UTC") in frame.index
    assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()
    assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()
    assert (frame["low"] > 0).all()


def test_yahoo_daily_download_needs_a_zone_and_ignores_adj_close(parquet_store, tmp_path):
    frame = equity_daily_frame(start="2004-01-02", end="2004-03-31")
    path = write_yahoo_csv(frame, tmp_path / "GOOG.csv")
    assert path.read_text().splitlines()[1].startswith("2004-01-02,")
    assert path.read_text().startswith("Date,Open,High,Low,Close,Adj Close,Volume\n")
    with pytest.raises(
        DataValidationError, match=r"column 'date': timestamp '2004-01-02' has no time zone.*--tz UTC"
    ):
        import_quote_file(parquet_store, GOOG, path)
    assert GOOG not in parquet_store.markets()
    result = import_quote_file(parquet_store, GOOG, path, tz="UTC")
    assert result.candle_interval == "1d" and result.days == len(frame)
    assert (result.first_day, result.last_day) == ("2004-01-02", "2004-03-31")
    expected = frame.rename(columns=str.lower).drop(columns="adj close")
    assert_candles_equal(bars_of(parquet_store, GOOG, timedelta(days=1)), expected)


def test_equity_sessions_skip_weekends_and_holidays_and_zoned_export_imports(parquet_store, tmp_path):
    frame = equity_daily_frame(start="2004-01-01", end="2004-01-31")
    assert frame.index[0] == pd.Timestamp("2004-01-02", tz="UTC")
    assert pd.Timestamp("2004-01-19", tz="UTC") not in frame.index  # Martin Luther King Jr. Day
    assert len(frame) == 20
    frame.to_csv(tmp_path / "goog.csv")  # zoned timestamps: no --tz needed
    assert import_quote_file(parquet_store, GOOG, tmp_path / "goog.csv").days == 20


@pytest.mark.parametrize("unit", ["ms", "us"])
def test_headerless_kline_csv_in_milliseconds_and_microseconds(parquet_store, tmp_path, unit):
    rows = crypto_kline_rows(minutes=120, unit=unit)
    path = write_kline_csv(rows, tmp_path / f"BTCUSDT-1m-{unit}.csv")
    first = path.read_text().splitlines()[0].split(",")
    assert len(first) == 12 and int(first[6]) - int(first[0]) == (59_999 if unit == "ms" else 59_999_999)
    result = import_quote_file(parquet_store, BTC, path)
    assert result.kind == "candles" and result.candle_interval == "1m" and result.rows_in_file == 120
    assert (result.first_day, result.last_day, result.days) == ("2024-03-01", "2024-03-01", 1)
    bars = bars_of(parquet_store, BTC, timedelta(minutes=1))
    assert bars.index[0] == pd.Timestamp("2024-03-01", tz="UTC") and len(bars) == 120
    np.testing.assert_allclose(bars["close"].to_numpy(), [row[4] for row in rows], rtol=1e-9)


def test_every_bad_row_is_reported_and_nothing_is_written(store, tmp_path):
    path, _ = snapshot_csv(tmp_path, rows=200)
    lines = path.read_text().splitlines()
    for line_number in range(10, 130, 4):  # 30 broken prices
        fields = lines[line_number].split(",")
        fields[1] = "n/a"
        lines[line_number] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError) as refused:
        import_quote_file(store, TON, path)
    message = str(refused.value).splitlines()
    assert message[0].endswith("30 problems, nothing was imported:")
    assert message[1] == "  row 10 (file line 11), column 'price': 'n/a' is not a number"
    assert message[20] == "  row 86 (file line 87), column 'price': 'n/a' is not a number"
    assert message[21] == "  ... and 10 more problems"
    assert store.read(TON, DAY, DAY + timedelta(days=1)).empty


def test_monthly_candles_and_unknown_zones_are_refused(parquet_store, tmp_path):
    daily = (
        fx_hourly_frame(days=120)
        .resample("MS")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    )
    daily.to_csv(tmp_path / "monthly.csv")
    with pytest.raises(DataValidationError, match="monthly candles are not supported"):
        import_quote_file(parquet_store, EURUSD, tmp_path / "monthly.csv")
    fx_hourly_frame(days=2).to_csv(tmp_path / "fx.csv")
    with pytest.raises(DataValidationError, match="unknown time zone 'Nowhere/Town'"):
        import_quote_file(parquet_store, EURUSD, tmp_path / "fx.csv", tz="Nowhere/Town")
    with pytest.raises(DataValidationError, match="weekly candles"):
        import_quote_file(parquet_store, EURUSD, tmp_path / "fx.csv", interval=timedelta(days=7))
    assert EURUSD not in parquet_store.markets()


def run_cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    config = tmp_path / "config.yaml"
    if not config.exists():  # daily candles need a market whose bars are daily
        market = {"market": "yahoo:GOOG", "bar_interval": "1d", "data_period": "2y", "calendar": "XNYS"}
        config.write_text(yaml.safe_dump({"storage": {"markets": [market]}}))
    env = {
        "ROF_DATA_DIR": str(tmp_path / "data"),
        "ROF_CONFIG": str(config),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),  # never the project's own instance
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [sys.executable, "-m", "rof_pipelines.cli", "quotes", "import", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=120,
    )


def test_cli_import_takes_tz_and_prints_the_days_covered(tmp_path):
    path = write_yahoo_csv(equity_daily_frame(end="2004-01-31"), tmp_path / "GOOG.csv")
    refused = run_cli(tmp_path, str(path), "--market", "yahoo:GOOG")
    assert refused.returncode == 2 and "--tz UTC" in refused.stderr
    monthly = run_cli(tmp_path, str(path), "--market", "yahoo:GOOG", "--tz", "UTC", "--interval", "1M")
    assert monthly.returncode == 2 and "monthly candles" in monthly.stderr
    done = run_cli(tmp_path, str(path), "--market", "yahoo:GOOG", "--tz", "UTC", "--interval", "1d")
    assert done.returncode == 0, done.stderr
    assert "yahoo:GOOG: 20 candles rows -> 80 snapshots" in done.stdout
    assert "candle interval given by --interval" in done.stdout
    assert "covers 20 UTC day(s) with data, 2004-01-02 .. 2004-01-30" in done.stdout
    assert (
        "20 trading day(s) on the XNYS calendar" in done.stdout
        and "added to the Dagster instance" in done.stdout
    )
    assert "too few" in done.stderr  # 20 sessions cannot fill the 2-year window: said at import
