"""``rof quotes import``: good files land in any store; a bad file is refused whole, naming the row."""

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from rof_pipelines.adapters.quote_files import import_quote_file
from rof_pipelines.adapters.quote_stores import open_quote_store
from rof_pipelines.core.indicators import build_indicator_frame
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import clean_quotes, generate_quotes, resample_bars
from rof_pipelines.errors import DataValidationError
from rof_pipelines.settings import PROJECT_ROOT

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
    assert result.kind == "candles" and result.candle_interval == "0:05:00"
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
