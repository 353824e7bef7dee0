"""A stand-in for an exchange's public REST API (binance spot's), on loopback, for tests and benchmarks.

It serves the few endpoints ccxt calls for ``load_markets``, ``fetch_time``, ``fetch_ohlcv``,
``fetch_ticker`` and ``fetch_order_book`` (``exchangeInfo``, ``time``, ``klines``, ``ticker/24hr``,
``depth``) from candles the caller gives it, with binance's paging rules (``startTime``/``endTime``
inclusive on the open time, ``limit`` up to 1000). Fault switches make it answer like a real exchange
under stress: N x HTTP 429 with ``Retry-After``, N x 5xx, maintenance, and missing candle ranges
(gaps). It counts requests per path and reports its own CPU time, so a benchmark can tell its cost
from the client's. Point ccxt at it with ``urls={'api': {'public': server.api_url}}``.

Run as a process (``python -m rof_pipelines.bench.exchange_standin --candles N``) it prints its base
URL on the first line of stdout and serves until stdin closes; ``GET /_standin/stats`` answers the
request counts and CPU seconds as JSON.
"""

import argparse
import json
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np

MAX_LIMIT = 1000  # binance spot's largest klines page
DEFAULT_LIMIT = 500
MAINTENANCE_BODY = {"code": 1, "msg": "System is under maintenance."}
INTERVALS_MS = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}


@dataclass
class Candles:
    """One symbol's candles at one interval: open times (epoch ms) and OHLCV columns."""

    open_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    interval: str = "1m"

    def __post_init__(self) -> None:
        self.open_ms = np.asarray(self.open_ms, dtype=np.int64)
        if len(self.open_ms) and np.any(np.diff(self.open_ms) <= 0):
            raise ValueError("candle open times must be strictly increasing")
        if self.interval not in INTERVALS_MS:
            raise ValueError(f"interval {self.interval!r} is not one of {', '.join(INTERVALS_MS)}")

    def __len__(self) -> int:
        return len(self.open_ms)

    @property
    def step_ms(self) -> int:
        return INTERVALS_MS[self.interval]


def synthetic_candles(
    n: int, start_ms: int, interval: str = "1m", seed: int = 0, price: float = 100.0
) -> Candles:
    """A random walk of ``n`` candles from ``start_ms``; prices rounded to cents, as an exchange's are."""
    rng = np.random.default_rng(seed)
    step = INTERVALS_MS[interval]
    closes = np.round(price * np.exp(np.cumsum(rng.normal(0, 0.001, n))), 2)
    opens = np.round(np.r_[price, closes[:-1]], 2)
    spread = np.round(np.abs(rng.normal(0, 0.0005, n)) * closes, 2)
    highs = np.maximum(opens, closes) + spread
    lows = np.maximum(np.minimum(opens, closes) - spread, 0.01)
    volume = np.round(rng.gamma(2.0, 5.0, n), 3)
    return Candles(
        start_ms + step * np.arange(n, dtype=np.int64),
        opens,
        np.round(highs, 2),
        np.round(lows, 2),
        closes,
        volume,
        interval,
    )


@dataclass
class Faults:
    """What the stand-in does wrong, and how often; each counter is spent one request at a time."""

    rate_limited: int = 0  # answer this many requests with 429
    retry_after: float = 1.0  # seconds, in the 429's Retry-After header
    server_errors: int = 0  # answer this many with ``server_error_status``
    server_error_status: int = 503
    maintenance: int = 0  # answer this many with binance's maintenance body
    klines_delay: float = 0.0  # seconds each klines answer takes (to kill a download mid-way)
    overlap: int = 0  # each klines page starts this many candles before startTime (repeats the last page's)
    repeat: int = 0  # each klines page sends its last this many candles twice
    hidden: list[tuple[int, int]] = field(default_factory=list)  # [from_ms, to_ms) never served: gaps


class StandinExchange:
    """The server; ``with StandinExchange({...}) as ex:`` starts it on 127.0.0.1 (port 0)."""

    def __init__(
        self,
        candles: dict[str, Candles],
        *,
        now_ms: int | None = None,
        quote_assets: tuple[str, ...] = ("USDT", "BTC", "EUR"),
    ) -> None:
        self.candles = candles
        self.now_ms = now_ms  # the exchange's clock; None: the real one
        self.quote_assets = quote_assets
        self.faults = Faults()
        self.requests: Counter[str] = Counter()
        self.klines_calls: list[dict[str, int]] = []  # startTime/endTime/limit and rows of each answer
        self._cpu_s = 0.0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> "StandinExchange":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="exchange-standin", daemon=True
        )  # a short poll: stop() returns at once
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "StandinExchange":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        """What ccxt's ``urls['api']['public']`` should be."""
        return f"{self.base_url}/api/v3"

    @property
    def cpu_s(self) -> float:
        """CPU seconds the stand-in's request handlers used (its threads' own time)."""
        return self._cpu_s

    def clock_ms(self) -> int:
        return self.now_ms if self.now_ms is not None else int(time.time() * 1000)

    # -- answers -----------------------------------------------------------------------------------

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, str], object]:
        """(status, extra headers, JSON body) for one request; faults first, then the endpoint."""
        with self._lock:
            self.requests[path] += 1
            fault = self._take_fault(path)
        if fault is not None:
            return fault
        routes = {
            "/api/v3/ping": lambda q: {},
            "/api/v3/time": lambda q: {"serverTime": self.clock_ms()},
            "/api/v3/exchangeInfo": self._exchange_info,
            "/api/v3/klines": self._klines,
            "/api/v3/ticker/24hr": self._ticker,
            "/api/v3/depth": self._depth,
            "/_standin/stats": lambda q: self.stats(),
        }
        route = routes.get(path)
        if route is None:
            return 404, {}, {"code": -1, "msg": f"stand-in: no endpoint {path}"}
        try:
            return 200, {}, route(query)
        except _BadRequest as exc:
            return 400, {}, {"code": exc.code, "msg": str(exc)}

    def stats(self) -> dict[str, object]:
        return {"requests": dict(self.requests), "cpu_s": round(self._cpu_s, 4)}

    def _take_fault(self, path: str) -> tuple[int, dict[str, str], object] | None:
        if path.startswith("/_standin"):
            return None
        faults = self.faults
        if faults.rate_limited > 0:
            faults.rate_limited -= 1
            return (
                429,
                {"Retry-After": f"{faults.retry_after:g}"},
                {"code": -1003, "msg": "Too many requests."},
            )
        if faults.server_errors > 0:
            faults.server_errors -= 1
            return faults.server_error_status, {}, {"code": -1001, "msg": "Internal error."}
        if faults.maintenance > 0:
            faults.maintenance -= 1
            return 503, {}, MAINTENANCE_BODY
        return None

    def _split_symbol(self, symbol: str) -> tuple[str, str]:
        for quote in self.quote_assets:
            if symbol.endswith(quote) and len(symbol) > len(quote):
                return symbol[: -len(quote)], quote
        raise ValueError(f"stand-in: cannot tell the quote asset of {symbol}; pass quote_assets")

    def _exchange_info(self, query: dict[str, str]) -> dict[str, object]:
        symbols = []
        for symbol in sorted(self.candles):
            base, quote = self._split_symbol(symbol)
            symbols.append(
                {
                    "symbol": symbol,
                    "status": "TRADING",
                    "baseAsset": base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "orderTypes": ["LIMIT", "MARKET"],
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "permissions": ["SPOT"],
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": "0.01",
                            "maxPrice": "1000000.00",
                            "tickSize": "0.01",
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": "0.00001",
                            "maxQty": "9000.00",
                            "stepSize": "0.00001",
                        },
                    ],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": self.clock_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}
            ],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    def _series(self, query: dict[str, str]) -> Candles:
        symbol = query.get("symbol", "")
        series = self.candles.get(symbol)
        if series is None:
            raise _BadRequest(-1121, "Invalid symbol.")
        return series

    def _served_mask(self, series: Candles, lo: int, hi: int) -> np.ndarray:
        """Rows lo..hi that are served: opened by the exchange's clock and not in a hidden range."""
        opened = series.open_ms[lo:hi] <= self.clock_ms()
        for start, end in self.faults.hidden:
            opened &= ~((series.open_ms[lo:hi] >= start) & (series.open_ms[lo:hi] < end))
        return opened

    def _klines(self, query: dict[str, str]) -> list[list[object]]:
        series = self._series(query)
        if query.get("interval") != series.interval:
            raise _BadRequest(
                -1120, f"stand-in serves {series.interval} candles only, got {query.get('interval')}"
            )
        limit = min(int(query.get("limit", DEFAULT_LIMIT)), MAX_LIMIT)
        if self.faults.klines_delay:
            time.sleep(self.faults.klines_delay)
        start = query.get("startTime")
        end = query.get("endTime")
        lo = (
            max(0, int(np.searchsorted(series.open_ms, int(start), "left")) - self.faults.overlap)
            if start
            else 0
        )
        hi = int(np.searchsorted(series.open_ms, int(end), "right")) if end else len(series)
        served = np.flatnonzero(self._served_mask(series, lo, hi)) + lo
        rows = served[:limit] if start else served[-limit:]  # binance: from startTime, else the newest
        if self.faults.repeat:
            rows = np.sort(np.r_[rows, rows[-self.faults.repeat :]], kind="stable")
        step = series.step_ms
        out = [
            [
                int(series.open_ms[i]),
                repr(float(series.open[i])),
                repr(float(series.high[i])),
                repr(float(series.low[i])),
                repr(float(series.close[i])),
                repr(float(series.volume[i])),
                int(series.open_ms[i]) + step - 1,
                "0",
                1,
                "0",
                "0",
                "0",
            ]
            for i in rows.tolist()
        ]
        with self._lock:
            self.klines_calls.append(
                {"startTime": int(start or -1), "endTime": int(end or -1), "limit": limit, "rows": len(out)}
            )
        return out

    def _last_row(self, series: Candles) -> int:
        opened = int(np.searchsorted(series.open_ms, self.clock_ms(), "right")) - 1
        if opened < 0:
            raise _BadRequest(-1121, "no trades yet")
        return opened

    def _ticker(self, query: dict[str, str]) -> dict[str, object]:
        series = self._series(query)
        i = self._last_row(series)
        close = float(series.close[i])
        tick = 0.01
        return {
            "symbol": query["symbol"],
            "lastPrice": repr(close),
            "bidPrice": repr(round(close - tick, 2)),
            "askPrice": repr(round(close + tick, 2)),
            "bidQty": "1.0",
            "askQty": "1.0",
            "openPrice": repr(float(series.open[i])),
            "highPrice": repr(float(series.high[i])),
            "lowPrice": repr(float(series.low[i])),
            "volume": repr(float(series.volume[i])),
            "quoteVolume": "0",
            "openTime": int(series.open_ms[i]),
            "closeTime": self.clock_ms(),
            "count": 1,
        }

    def _depth(self, query: dict[str, str]) -> dict[str, object]:
        series = self._series(query)
        close = float(series.close[self._last_row(series)])
        return {
            "lastUpdateId": 1,
            "bids": [[repr(round(close - 0.01 * k, 2)), "1.0"] for k in range(1, 6)],
            "asks": [[repr(round(close + 0.01 * k, 2)), "1.0"] for k in range(1, 6)],
        }


class _BadRequest(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _handler_for(exchange: StandinExchange) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real exchange's API

        def do_GET(self) -> None:
            started = time.thread_time()
            parts = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
            status, headers, body = exchange.answer(parts.path, query)
            payload = json.dumps(body, separators=(",", ":")).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
            spent = time.thread_time() - started
            with exchange._lock:
                exchange._cpu_s += spent

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: a benchmark serves hundreds of pages."""

    return Handler


def main(argv: list[str] | None = None) -> None:
    """Serve ``--candles`` synthetic 1-minute BTCUSDT candles ending before now, until stdin closes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, required=True)
    parser.add_argument("--symbol", default="BTCUSDT")
    parser.add_argument("--interval", default="1m")
    parser.add_argument(
        "--end-ms", type=int, default=None, help="open time after the last candle (default: now, floored)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    step = INTERVALS_MS[args.interval]
    end = args.end_ms if args.end_ms is not None else int(time.time() * 1000) // step * step
    candles = synthetic_candles(args.candles, end - args.candles * step, args.interval, args.seed)
    with StandinExchange({args.symbol: candles}, now_ms=end) as exchange:
        print(exchange.base_url, flush=True)
        sys.stdin.read()  # the parent closes our stdin to stop us
        print(json.dumps({**exchange.stats(), "process_cpu_s": round(time.process_time(), 4)}), flush=True)


if __name__ == "__main__":
    main()
