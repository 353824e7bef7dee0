"""The exchange client against the stand-in exchange on loopback: symbol mapping by the market list,
rate limits and maintenance waited out, a 5xx burst through the breaker, and order calls refused."""

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from rof_pipelines.adapters.breakers import breaker_for
from rof_pipelines.adapters.exchanges import ExchangeClient, fetch_top_of_book, retry_after_seconds
from rof_pipelines.bench.exchange_standin import StandinExchange, synthetic_candles
from rof_pipelines.core.market import Market
from rof_pipelines.errors import (
    CircuitOpenError,
    ConfigError,
    NoLiveRouteError,
    NotFoundError,
    StoreUnavailableError,
    TradingDisabledError,
)
from rof_pipelines.settings import CircuitBreakerConfig, ExchangeIngestConfig, load_settings

START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC
BTC = Market("binance", "BTCUSDT")


@pytest.fixture
def exchange() -> Iterator[StandinExchange]:
    candles = synthetic_candles(1500, START_MS)
    with StandinExchange(
        {"BTCUSDT": candles, "ETHBTC": synthetic_candles(1500, START_MS, seed=1)},
        now_ms=START_MS + 1500 * 60_000,
    ) as server:
        yield server


def make_client(server: StandinExchange, **config: object) -> ExchangeClient:
    breaker = config.pop("breaker", None)
    allow_trading = bool(config.pop("allow_trading", False))
    settings = ExchangeIngestConfig(urls={"api": {"public": server.api_url}}, **config)
    return ExchangeClient("binance", settings, breaker=breaker, allow_trading=allow_trading)  # type: ignore[arg-type]


def test_markets_map_to_symbols_through_the_market_list(exchange: StandinExchange) -> None:
    client = make_client(exchange)
    assert client.symbol(BTC) == "BTC/USDT"
    assert client.symbol(Market("binance", "ETHBTC")) == "ETH/BTC"
    assert client.market("BTC/USDT") == BTC
    assert client.market("ETH/BTC") == Market("binance", "ETHBTC")
    assert exchange.requests["/api/v3/exchangeInfo"] == 1  # loaded once


def test_an_unknown_symbol_is_a_clear_error(exchange: StandinExchange) -> None:
    client = make_client(exchange)
    with pytest.raises(
        NotFoundError, match=r"binance:BTCUSDX: binance lists no market BTCUSDX.*binance:BTCUSDT"
    ):
        client.symbol(Market("binance", "BTCUSDX"))
    with pytest.raises(NotFoundError, match="no symbol 'DOGE/USDT'"):
        client.market("DOGE/USDT")
    assert exchange.requests["/api/v3/klines"] == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda ex: ex.create_order("BTC/USDT", "limit", "buy", 1, 100),
        lambda ex: ex.createOrder("BTC/USDT", "market", "sell", 1),
        lambda ex: ex.create_limit_buy_order("BTC/USDT", 1, 100),
        lambda ex: ex.cancel_order("1", "BTC/USDT"),
        lambda ex: ex.cancel_all_orders("BTC/USDT"),
        lambda ex: ex.edit_order("1", "BTC/USDT", "limit", "buy", 1, 100),
        lambda ex: ex.withdraw("BTC", 1, "address"),
        lambda ex: ex.private_post_order({"symbol": "BTCUSDT", "side": "BUY"}),  # ccxt's implicit API
        lambda ex: ex.fetch_balance(),  # private, too: no API key is used
    ],
)
def test_order_calls_are_refused_and_send_nothing(exchange: StandinExchange, call) -> None:  # type: ignore[no-untyped-def]
    client = make_client(exchange)
    client.load_markets()
    before = sum(exchange.requests.values())
    with pytest.raises(TradingDisabledError, match="allow_trading is false"):
        call(client.exchange)
    assert sum(exchange.requests.values()) == before


def test_order_calls_refused_even_when_trading_is_allowed(exchange: StandinExchange) -> None:
    client = make_client(exchange, allow_trading=True)
    with pytest.raises(NoLiveRouteError, match="public market data only"):
        client.exchange.create_order("BTC/USDT", "limit", "buy", 1, 100)
    assert sum(exchange.requests.values()) == 0


def test_a_429_waits_its_retry_after_and_succeeds(exchange: StandinExchange) -> None:
    client = make_client(exchange)
    client.load_markets()
    exchange.faults.rate_limited, exchange.faults.retry_after = 2, 0.3
    started = time.perf_counter()
    rows = client.fetch_ohlcv(BTC, timedelta(minutes=1), START_MS, 1000)
    assert len(rows) == 1000
    assert time.perf_counter() - started >= 0.6
    assert client.stats.rate_limit_waits == 2
    assert client.stats.waited_s == pytest.approx(0.6)
    assert client.stats.retries == 0  # not a failure of the exchange


def test_a_retry_after_beyond_max_wait_fails_without_waiting(exchange: StandinExchange) -> None:
    client = make_client(exchange, max_wait="2s")
    client.load_markets()
    exchange.faults.rate_limited, exchange.faults.retry_after = 1, 120
    started = time.perf_counter()
    with pytest.raises(StoreUnavailableError, match=r"rate limit.*waiting 120s more would pass.*max_wait"):
        client.now_ms()
    assert time.perf_counter() - started < 1


def test_maintenance_is_waited_out(exchange: StandinExchange) -> None:
    client = make_client(exchange, backoff="100ms")
    client.load_markets()
    exchange.faults.maintenance = 2
    assert client.now_ms() == exchange.now_ms
    assert client.stats.maintenance_waits == 2
    assert client.stats.retries == 0


def test_a_5xx_burst_opens_the_breaker_then_it_recovers(exchange: StandinExchange) -> None:
    breaker = CircuitBreakerConfig(fail_max=2, reset_timeout="300ms")
    strict = make_client(exchange, breaker=breaker, retries=0, max_wait="0s")
    strict.load_markets()
    exchange.faults.server_errors = 10
    for _ in range(2):
        with pytest.raises(StoreUnavailableError):
            strict.now_ms()
    served = exchange.requests["/api/v3/time"]
    with pytest.raises(CircuitOpenError):  # open: refused without asking the exchange
        strict.now_ms()
    assert exchange.requests["/api/v3/time"] == served
    assert breaker_for(strict.service).current_state == "open"

    # The same burst with retries: the client waits out the open circuit, the trial call goes through.
    exchange.faults.server_errors = 3
    patient = make_client(exchange, breaker=breaker, retries=5, backoff="50ms", max_wait="10s")
    assert patient.now_ms() == exchange.now_ms
    assert patient.stats.circuit_waits >= 1  # each failed trial call re-opens the circuit
    assert exchange.faults.server_errors == 0
    assert breaker_for(patient.service).current_state == "closed"

    # A shorter burst than fail_max is retried with backoff and never opens the circuit.
    exchange.faults.server_errors = 1
    assert patient.now_ms() == exchange.now_ms
    assert patient.stats.retries == 1
    assert breaker_for(patient.service).current_state == "closed"


def test_top_of_book_is_a_bid_ask_snapshot(exchange: StandinExchange) -> None:
    frame = fetch_top_of_book(make_client(exchange), BTC)
    assert list(frame.columns) == ["ts", "price", "bid", "ask", "volume"]
    row = frame.iloc[0]
    assert row["bid"] < row["price"] < row["ask"]
    assert row["ts"].value // 1_000_000 == exchange.now_ms


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after_seconds({"Retry-After": "7"}) == 7
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0  # in the past
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds(None) is None


def test_ingest_settings_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("ingest:\n  exchanges:\n    binanse: {}\n")
    with pytest.raises(
        ConfigError, match=r"ingest\.exchanges.*ccxt has no exchange 'binanse'; did you mean binance"
    ):
        load_settings(path, environ={})
    path.write_text("ingest:\n  exchanges:\n    binance: {urls: {api: {public: 'ftp://x'}}}\n")
    with pytest.raises(ConfigError, match=r"urls\.api\.public: expected an http\(s\) URL"):
        load_settings(path, environ={})
    path.write_text(
        "ingest:\n  markets:\n    - {market: 'binance:BTCUSDT', interval: '5m', every_minutes: 5, top_of_book: true}\n"
        "    - {market: 'Binance:btcusdt', interval: '5m'}\n"
    )
    with pytest.raises(ConfigError, match=r"markets\[1\]: binance:BTCUSDT at 5m is listed twice"):
        load_settings(path, environ={})
    path.write_text("ingest:\n  markets:\n    - {market: 'binance:BTCUSDT', interval: '7m'}\n")
    with pytest.raises(ConfigError, match="bar_interval must divide a day evenly"):
        load_settings(path, environ={})
    path.write_text(
        "ingest:\n  exchanges:\n    binance: {rate_limit_ms: 25, page_size: 500}\n"
        "  markets:\n    - {market: 'binance:BTCUSDT', top_of_book: true}\n"
    )
    ingest = load_settings(path, environ={}).ingest
    assert ingest.exchange("binance").page_size == 500
    assert ingest.exchange("kraken").page_size == 1000  # not configured: the defaults
    assert ingest.markets[0].top_of_book and ingest.markets[0].every_minutes == 5
