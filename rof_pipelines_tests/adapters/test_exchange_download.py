"""Candle downloads from the stand-in exchange into a Parquet store: pages, resume (also after the
download process is SIGKILLed), --prepend, gaps, duplicates, forming candles, and the stored candles
resampled at their own interval equal to what the exchange served."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from rof_pipelines.adapters.exchanges import ExchangeClient, download_candles
from rof_pipelines.adapters.quote_stores.parquet import ParquetQuoteStore
from rof_pipelines.adapters.state_store import InMemoryStateStore
from rof_pipelines.bench.exchange_standin import Candles, StandinExchange, synthetic_candles
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import resample_bars
from rof_pipelines.settings import ExchangeIngestConfig

START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC
START = datetime(2024, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
N = 3500  # four pages of 1000
BTC = Market("binance", "BTCUSDT")


def at(minutes: int) -> datetime:
    return START + minutes * MINUTE


def ms(minutes: int) -> int:
    return START_MS + minutes * 60_000


@pytest.fixture
def served() -> Candles:
    return synthetic_candles(N, START_MS, seed=7)


@pytest.fixture
def exchange(served: Candles) -> Iterator[StandinExchange]:
    # The exchange's clock: every candle has closed.
    with StandinExchange(
        {"BTCUSDT": served, "ETHBTC": synthetic_candles(N, START_MS, seed=8)}, now_ms=ms(N)
    ) as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> ParquetQuoteStore:
    quote_store = ParquetQuoteStore(tmp_path / "quotes")
    quote_store.ensure_schema()
    return quote_store


def make_client(server: StandinExchange, **config: object) -> ExchangeClient:
    return ExchangeClient("binance", ExchangeIngestConfig(urls={"api": {"public": server.api_url}}, **config))  # type: ignore[arg-type]


def stored_candles(store: ParquetQuoteStore, market: Market = BTC) -> pd.DataFrame:
    """The store's snapshots as candles again (the bars of the candles' own interval), only bars
    that hold data."""
    snapshots = store.read(market, START - timedelta(days=1), START + timedelta(days=30))
    assert not snapshots["ts"].duplicated().any()
    bars = resample_bars(snapshots, MINUTE)
    return bars.loc[bars["n_ticks"] > 0]


def served_frame(candles: Candles, rows: np.ndarray | slice = slice(None)) -> pd.DataFrame:
    index = pd.DatetimeIndex(pd.to_datetime(candles.open_ms[rows], unit="ms", utc=True), name="ts").as_unit(
        "us"
    )
    return pd.DataFrame(
        {
            "open": candles.open[rows],
            "high": candles.high[rows],
            "low": candles.low[rows],
            "close": candles.close[rows],
            "volume": candles.volume[rows],
        },
        index=index,
    )


def assert_stored_equals_served(
    store: ParquetQuoteStore, candles: Candles, rows: np.ndarray | slice = slice(None)
) -> None:
    got = stored_candles(store)[["open", "high", "low", "close", "volume"]]
    pd.testing.assert_frame_equal(got, served_frame(candles, rows), check_freq=False)


def test_pages_are_fetched_and_stored_exactly(
    exchange: StandinExchange, store: ParquetQuoteStore, served: Candles
) -> None:
    result = download_candles(store, make_client(exchange), BTC, MINUTE, since=START)
    assert (result.pages, result.candles_written, result.candles_fetched) == (4, N, N)
    assert (result.first_ts, result.last_ts) == (at(0), at(N - 1))
    assert result.gaps == []
    assert [call["startTime"] for call in exchange.klines_calls] == [ms(0), ms(1000), ms(2000), ms(3000)]
    assert_stored_equals_served(store, served)

    again = download_candles(store, make_client(exchange), BTC, MINUTE, since=START)
    assert (again.pages, again.candles_written, again.note) == (0, 0, "up to date")
    assert len(exchange.klines_calls) == 4


def test_resume_starts_after_the_newest_stored_candle(
    exchange: StandinExchange, store: ParquetQuoteStore, served: Candles
) -> None:
    first = download_candles(store, make_client(exchange), BTC, MINUTE, since=START, until=at(1500))
    assert (first.candles_written, first.pages) == (1500, 2)
    rest = download_candles(store, make_client(exchange), BTC, MINUTE, since=START)
    assert exchange.klines_calls[2]["startTime"] == ms(1500)
    assert (rest.candles_written, rest.first_ts) == (N - 1500, at(1500))
    assert_stored_equals_served(store, served)


def test_prepend_fills_history_before_the_oldest_candle(
    exchange: StandinExchange, store: ParquetQuoteStore, served: Candles
) -> None:
    download_candles(store, make_client(exchange), BTC, MINUTE, since=at(2200))
    assert_stored_equals_served(store, served, slice(2200, None))
    result = download_candles(store, make_client(exchange), BTC, MINUTE, since=START, prepend=True)
    assert (result.candles_written, result.pages, result.last_ts) == (2200, 3, at(2199))
    assert_stored_equals_served(store, served)
    nothing = download_candles(store, make_client(exchange), BTC, MINUTE, since=START, prepend=True)
    assert (nothing.pages, nothing.note) == (0, "nothing to prepend")


def test_a_gap_in_the_exchanges_data_is_recorded_not_invented(
    exchange: StandinExchange, store: ParquetQuoteStore, served: Candles
) -> None:
    exchange.faults.hidden = [(ms(1200), ms(1450)), (ms(3400), ms(N))]  # an outage, and a silent tail
    ledger = InMemoryStateStore().quote_gaps
    result = download_candles(store, make_client(exchange), BTC, MINUTE, since=START, gap_ledger=ledger)
    assert result.gaps == [(at(1200), at(1450)), (at(3400), at(N))]
    assert result.candles_written == N - 250 - 100
    keep = np.r_[0:1200, 1450:3400]
    assert_stored_equals_served(store, served, keep)
    recorded = [(g.market, g.interval, g.gap_from, g.gap_to, g.source) for g in ledger.find()]
    assert recorded == [
        (BTC.key, "1m", at(1200), at(1450), "download"),
        (BTC.key, "1m", at(3400), at(N), "download"),
    ]
    # Resuming asks only after the newest stored candle: the outage is not asked for again.
    calls = len(exchange.klines_calls)
    download_candles(store, make_client(exchange), BTC, MINUTE, since=START, gap_ledger=ledger)
    assert [call["startTime"] for call in exchange.klines_calls[calls:]] == [ms(3400)]
    assert len(ledger.find()) == 2, "the tail is still silent"
    # The exchange serves its tail after all (it had lagged): that stretch is no gap any more, the
    # outage stays recorded.
    exchange.faults.hidden = [(ms(1200), ms(1450))]
    tail = download_candles(store, make_client(exchange), BTC, MINUTE, since=START, gap_ledger=ledger)
    assert (tail.candles_written, tail.gaps) == (100, [])
    assert [(g.gap_from, g.gap_to) for g in ledger.find(BTC.key, "1m")] == [(at(1200), at(1450))]
    assert_stored_equals_served(store, served, np.r_[0:1200, 1450:N])


def test_duplicates_across_pages_and_forming_candles_are_dropped(
    served: Candles, store: ParquetQuoteStore
) -> None:
    # The exchange's clock is 30 s into the last candle: that one is still forming.
    with StandinExchange({"BTCUSDT": served}, now_ms=ms(N - 1) + 30_000) as exchange:
        exchange.faults.overlap = 5  # every page repeats the last 5 candles of the one before
        exchange.faults.repeat = 2  # and sends its last 2 candles twice
        result = download_candles(store, make_client(exchange), BTC, MINUTE, since=START)
        assert exchange.klines_calls[1]["rows"] == 1000 + 2  # ccxt drops the overlap (before since)
    assert (result.candles_written, result.pages) == (N - 1, 4)
    assert result.duplicates_dropped >= result.pages  # each page brought at least one (ccxt cuts at limit)
    assert_stored_equals_served(store, served, slice(0, N - 1))


def test_a_429_during_a_download_is_waited_not_failed(
    exchange: StandinExchange, store: ParquetQuoteStore, served: Candles
) -> None:
    client = make_client(exchange)
    client.load_markets()
    exchange.faults.rate_limited, exchange.faults.retry_after = 1, 0.2
    result = download_candles(store, client, BTC, MINUTE, since=START)
    assert (result.rate_limit_waits, result.candles_written) == (1, N)
    assert result.waited_s == pytest.approx(0.2)
    assert_stored_equals_served(store, served)


def test_an_unknown_market_fails_before_any_request(
    exchange: StandinExchange, store: ParquetQuoteStore
) -> None:
    from rof_pipelines.errors import NotFoundError

    with pytest.raises(NotFoundError, match="binance lists no market BTCUSDX"):
        download_candles(store, make_client(exchange), Market("binance", "BTCUSDX"), MINUTE, since=START)
    assert exchange.klines_calls == []
    assert store.markets() == []


# --- the CLI, as a process -----------------------------------------------------------------------------


def cli_env(tmp_path: Path, server: StandinExchange, state_storage: dict[str, Any]) -> dict[str, str]:
    """The CLI's environment: a Parquet store in ``tmp_path``, the stand-in exchange, and this test's
    own state store (where the download records gaps)."""
    config = {
        "storage": {"quote_store": "parquet", "data_dir": str(tmp_path / "data")},
        "state_storage": state_storage,
        "ingest": {"exchanges": {"binance": {"urls": {"api": {"public": server.api_url}}}}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ROF_", "DB_", "STATE_STORAGE_", "CLICKHOUSE_"))
    }
    return {**keep, "ROF_CONFIG": str(path), "DAGSTER_HOME": str(tmp_path / "dagster")}


def rof(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "rof"), *args]


@pytest.mark.postgres
def test_cli_download_resumes_after_sigkill_without_duplicate_or_hole(
    tmp_path: Path, exchange: StandinExchange, served: Candles, state_storage: dict[str, Any]
) -> None:
    env = cli_env(tmp_path, exchange, state_storage)
    command = rof("quotes", "download", "-m", "binance:BTCUSDT", "--interval", "1m", "--since", "2024-01-01")
    exchange.faults.klines_delay = 0.4
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while len(exchange.klines_calls) < 2 and time.monotonic() < deadline:  # two pages written or in flight
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    store = ParquetQuoteStore(tmp_path / "data" / "quotes")
    partial = store.time_range(BTC)
    assert partial is not None and partial[1] < at(N - 1)  # killed mid-download
    asked_before = len(exchange.klines_calls)
    newest_open = int(partial[1].timestamp() * 1000) // 60_000 * 60_000

    exchange.faults.klines_delay = 0
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "binance:BTCUSDT 1m:" in done.stdout and "gaps: 0" in done.stdout
    # The re-run starts right after the newest stored candle: only the page in flight is asked again.
    assert exchange.klines_calls[asked_before]["startTime"] == newest_open + 60_000
    assert_stored_equals_served(store, served)  # no duplicate (checked on read), no hole, same values


@pytest.mark.postgres
def test_cli_download_one_line_per_market_and_a_clear_error(
    tmp_path: Path, exchange: StandinExchange, state_storage: dict[str, Any]
) -> None:
    env = cli_env(tmp_path, exchange, state_storage)
    done = subprocess.run(
        rof("quotes", "download", "-m", "binance:BTCUSDT", "-m", "binance:NOPEUSDT", "-m", "binance:ETHBTC",
            "--since", "2024-01-02", "--until", "2024-01-02T10:00"),
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stdout.strip().splitlines()
    assert [line.split(" ")[0] for line in lines] == ["binance:BTCUSDT", "binance:ETHBTC"]
    assert "600 candles written in 1 page(s), 2024-01-02 00:00 .. 2024-01-02 09:59" in lines[0]
    assert "binance:NOPEUSDT: error: binance:NOPEUSDT: binance lists no market NOPEUSDT" in done.stderr


@pytest.mark.postgres
def test_cli_gaps_lists_what_downloads_recorded(
    tmp_path: Path, exchange: StandinExchange, state_storage: dict[str, Any]
) -> None:
    env = cli_env(tmp_path, exchange, state_storage)
    exchange.faults.hidden = [(ms(1200), ms(1450))]
    done = subprocess.run(
        rof("quotes", "download", "-m", "binance:BTCUSDT", "--since", "2024-01-01", "--until", "2024-01-02"),
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "gaps: 1 [2024-01-01 20:00 .. 2024-01-02 00:00]" in done.stdout  # cut at --until
    listed = subprocess.run(
        rof("quotes", "gaps", "-m", "binance:BTCUSDT"), env=env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip().startswith(
        "binance:BTCUSDT 1m: 2024-01-01 20:00 .. 2024-01-02 00:00 (240 min), recorded by download at "
    )
    as_json = subprocess.run(
        rof("quotes", "gaps", "--json", "--interval", "1m"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    (row,) = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert (row["market"], row["from"], row["to"], row["minutes"]) == (
        "binance:BTCUSDT", "2024-01-01T20:00:00+00:00", "2024-01-02T00:00:00+00:00", 240.0
    )  # fmt: skip
    none = subprocess.run(
        rof("quotes", "gaps", "-m", "binance:ETHBTC"), env=env, capture_output=True, text=True, timeout=60
    )
    assert none.returncode == 0 and none.stdout == "" and "no gaps recorded for binance:ETHBTC" in none.stderr
    bad = subprocess.run(
        rof("quotes", "gaps", "--interval", "7q"), env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0 and "7q" in bad.stderr
    odd = subprocess.run(
        rof("quotes", "gaps", "-m", "no market"), env=env, capture_output=True, text=True, timeout=60
    )
    assert (
        odd.returncode == 2 and "error: state_store: market:" in odd.stderr and "Traceback" not in odd.stderr
    )
