"""``rof bench download``: a year of 1-minute candles from an exchange's API into a Parquet store.

The stand-in exchange (bench/exchange_standin.py) runs in its own process, so its CPU time is
reported apart from the download's. The client is the production one (ccxt with its rate limiter on
at the exchange's own spacing, the breaker, the retries) writing each 1000-candle page into a
temporary Parquet store as it arrives. ``rate_limit_floor_s`` is what ccxt's limiter alone imposes:
the sum over the requests sent of ccxt's cost of each times its ``rateLimit``. Then a resume check
on a fresh store: a download killed while a page is in flight (the request served, the answer lost)
and run again; ``pages_refetched`` is how many more klines pages the two runs asked for than one
uninterrupted run needs (goal: at most 1). Goal for the whole year: under 60 s.
"""

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from rof_pipelines.adapters.exchanges import ExchangeClient, download_candles
from rof_pipelines.adapters.quote_stores.parquet import ParquetQuoteStore
from rof_pipelines.core.market import Market
from rof_pipelines.settings import CircuitBreakerConfig, ExchangeIngestConfig

MARKET = Market("binance", "BTCUSDT")
INTERVAL = timedelta(minutes=1)
PAGE = 1000
RESUME_PAGES = 10  # the resume check's range, in pages
KILL_AT_PAGE = 4  # its first run dies while this page is in flight


class _Killed(BaseException):
    """Stands for SIGKILL in the resume check: not an Exception, so nothing on the way catches it."""


def _start_standin(candles: int) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "rof_pipelines.bench.exchange_standin", "--candles", str(candles)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    base_url = process.stdout.readline().strip()
    if not base_url.startswith("http://127.0.0.1:"):
        process.kill()
        raise RuntimeError(f"the stand-in exchange did not start (said {base_url!r})")
    return process, base_url


def _stop_standin(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    last = process.stdout.read().strip().splitlines()
    process.wait(timeout=30)
    return json.loads(last[-1]) if last else {}


def _klines_served(base_url: str) -> int:
    stats = requests.get(f"{base_url}/_standin/stats", timeout=10).json()
    return int(stats["requests"].get("/api/v3/klines", 0))


def _client(base_url: str) -> ExchangeClient:
    config = ExchangeIngestConfig(urls={"api": {"public": f"{base_url}/api/v3"}}, page_size=PAGE)
    return ExchangeClient("binance", config, breaker=CircuitBreakerConfig())


def _count_costs(client: ExchangeClient) -> list[float]:
    """Record the cost ccxt's limiter charges each request (it still sleeps as it would)."""
    costs: list[float] = []
    throttle = client.exchange.throttle

    def counted(cost: float | None = None) -> None:
        costs.append(1.0 if cost is None else float(cost))
        throttle(cost)

    client.exchange.throttle = counted
    return costs


def _resume_check(base_url: str, root: Path, since: datetime) -> dict[str, Any]:
    store = ParquetQuoteStore(root / "resume")
    store.ensure_schema()
    until = since + INTERVAL * PAGE * RESUME_PAGES
    served_before = _klines_served(base_url)
    client = _client(base_url)
    fetch = client.fetch_ohlcv
    calls = 0

    def dies_in_flight(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        rows = fetch(*args, **kwargs)
        if calls == KILL_AT_PAGE:
            raise _Killed  # the exchange served the page; the process dies before writing it
        return rows

    client.fetch_ohlcv = dies_in_flight  # type: ignore[method-assign]
    with contextlib.suppress(_Killed):
        download_candles(store, client, MARKET, INTERVAL, since=since, until=until)
    resumed = download_candles(store, _client(base_url), MARKET, INTERVAL, since=since, until=until)
    stored = store.read(MARKET, since, until)
    asked = _klines_served(base_url) - served_before
    return {
        "pages_refetched": asked - RESUME_PAGES,
        "resume_candles_stored": len(stored) // 4,
        "resume_candles_expected": PAGE * RESUME_PAGES,
        "resume_duplicates": int(stored["ts"].duplicated().sum()),
        "resumed_pages": resumed.pages,
    }


def bench_download(candles: int = 525_600) -> dict[str, Any]:
    process, base_url = _start_standin(candles)
    try:
        with tempfile.TemporaryDirectory(prefix="rof-bench-download-") as tmp:
            root = Path(tmp)
            store = ParquetQuoteStore(root / "quotes")
            store.ensure_schema()
            client = _client(base_url)
            costs = _count_costs(client)
            now_ms = client.now_ms()
            since = datetime.fromtimestamp(
                (now_ms - candles * int(INTERVAL.total_seconds() * 1000)) / 1000, tz=UTC
            )
            costs.clear()  # the floor counts the download's own requests
            started, cpu_started = time.perf_counter(), time.process_time()
            result = download_candles(store, client, MARKET, INTERVAL, since=since)
            wall = time.perf_counter() - started
            client_cpu = time.process_time() - cpu_started
            floor = sum(costs) * float(client.exchange.rateLimit) / 1000
            first, last = store.time_range(MARKET) or (None, None)
            resume = _resume_check(base_url, root, since)
    finally:
        standin = _stop_standin(process)
    return {
        "bench": "download",
        "candles": result.candles_written,
        "candles_asked": candles,
        "pages": result.pages,
        "wall_s": round(wall, 2),
        "candles_per_s": round(result.candles_written / wall, 1) if wall else None,
        "client_cpu_s": round(client_cpu, 2),
        "standin_cpu_s": standin.get("process_cpu_s"),
        "standin_serve_cpu_s": standin.get("cpu_s"),
        "rate_limit_floor_s": round(floor, 2),
        "ccxt_rate_limit_ms": client.exchange.rateLimit,
        "requests": len(costs),
        "gaps": len(result.gaps),
        "stored_first": str(first),
        "stored_last": str(last),
        **resume,
        "goal_wall_s": 60,
    }
