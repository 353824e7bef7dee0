"""Quotes straight from exchange APIs, through ccxt: the client, candle downloads and top-of-book.

Only public market-data endpoints are used and no API key is configured. Every order method of the
ccxt object (``create_order``, ``cancel_order``, ``edit_order``, ...) and every request to a
non-public API section refuse with :class:`TradingDisabledError` while ``ai_config.allow_trading`` is
false; with it true they still refuse (:class:`NoLiveRouteError`): this client is not an order route.

Markets map to ccxt symbols (``binance:BTCUSDT`` <-> ``BTC/USDT``) through the exchange's own market
list (``markets_by_id``), never by cutting strings. Every request runs through the project's circuit
breaker for the exchange (``exchange_<name>``) with ccxt's rate limiter on; a 429 / 418 waits the
``Retry-After`` the exchange sent (ccxt does not read it; it is in ``last_response_headers``),
maintenance waits with backoff, and neither counts as a failure of the exchange. 5xx answers and
network errors are retried with backoff and do count, so a burst opens the circuit; the call then
waits out the reset timeout and tries again, up to ``max_wait`` in all.

A download writes each page as it arrives (``QuoteStore.write`` is idempotent), so a killed
download loses at most the page in flight and the next one resumes after the newest stored candle.
"""

import difflib
import email.utils
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import ccxt
import numpy as np
import pandas as pd

from rof_pipelines.adapters.breakers import breaker_for, guarded_call
from rof_pipelines.adapters.quote_stores.base import QuoteStore
from rof_pipelines.core.market import TS_DTYPE, Market, datetime_to_us
from rof_pipelines.core.quotes import (
    candles_to_snapshots,
    check_candle_interval,
    interval_text,
    validate_candles,
)
from rof_pipelines.errors import (
    CircuitOpenError,
    DataValidationError,
    ErrorMap,
    ErrorRule,
    NoLiveRouteError,
    NotFoundError,
    PermanentError,
    RofError,
    StoreUnavailableError,
    TradingDisabledError,
    TransientError,
)
from rof_pipelines.settings import CircuitBreakerConfig, ExchangeIngestConfig, Settings, deep_merge

log = logging.getLogger(__name__)
R = TypeVar("R")

# ccxt exceptions -> the project's. Rate limits and maintenance never get here: the client waits on
# them (see ExchangeClient.call). DDoSProtection and OnMaintenance are NetworkErrors, so order matters.
CCXT_ERRORS = ErrorMap(
    "ccxt",
    [
        ErrorRule((ccxt.BadSymbol,), NotFoundError, "the exchange does not list this market"),
        ErrorRule(
            (ccxt.AuthenticationError, ccxt.PermissionDenied, ccxt.AccountSuspended),
            PermanentError,
            "market data needs no API key; a private endpoint was called",
        ),
        ErrorRule((ccxt.OperationFailed,), StoreUnavailableError, "the exchange did not answer; retried"),
        ErrorRule((ccxt.NotSupported,), PermanentError, "ccxt does not support this for the exchange"),
    ],
    default=PermanentError,
)

# Per-exchange ccxt options this project needs, under the exchange's own ingest.exchanges.<name>.options:
# binance lists spot markets only (its futures lists are other hosts and other API sections).
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {"binance": {"fetchMarkets": {"types": ["spot"]}}}

# Methods of a ccxt exchange that change an account rather than read the market.
_ACCOUNT_PREFIXES = (
    "withdraw",
    "transfer",
    "borrow",
    "repay",
    "setleverage",
    "setmargin",
    "setpositionmode",
    "addmargin",
    "reducemargin",
    "closeposition",
    "closeallpositions",
)


def _changes_account(name: str) -> bool:
    """``create_order``, ``createLimitBuyOrder``, ``cancel_all_orders``, ``edit_orders``, ``withdraw``, ..."""
    flat = name.replace("_", "").lower()
    if flat.startswith(("create", "edit", "cancel")) and "order" in flat:
        return True
    return flat.startswith(_ACCOUNT_PREFIXES)


@dataclass
class CallStats:
    """What a client's calls cost beyond the requests themselves (read by the ingest metrics)."""

    requests: int = 0
    rate_limit_waits: int = 0  # 429 / 418 answered by waiting
    maintenance_waits: int = 0
    circuit_waits: int = 0  # an open circuit waited out
    retries: int = 0  # failed requests (5xx, network) tried again
    waited_s: float = 0.0  # seconds slept on all of the above (not ccxt's own spacing)

    def minus(self, earlier: "CallStats") -> "CallStats":
        return CallStats(**{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in fields(self)})

    def copy(self) -> "CallStats":
        return CallStats(**{f.name: getattr(self, f.name) for f in fields(self)})


@dataclass(frozen=True)
class _Wait:
    """A request the exchange asked us to repeat later (429 or maintenance)."""

    kind: str  # "rate_limit" | "maintenance"
    seconds: float | None  # what the exchange asked for, if it said
    reason: str


def retry_after_seconds(headers: dict[str, str] | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date (RFC 9110); None when absent or unreadable."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class ExchangeClient:
    """One exchange through ccxt, public market data only; build it with :meth:`from_settings`."""

    def __init__(
        self,
        name: str,
        config: ExchangeIngestConfig | None = None,
        *,
        breaker: CircuitBreakerConfig | None = None,
        allow_trading: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.config = config or ExchangeIngestConfig()
        self.ccxt_id = self.config.ccxt_id or name
        self.service = f"exchange_{name}"
        self.breaker_config = breaker
        self.allow_trading = allow_trading
        self.stats = CallStats()
        self._sleep = sleep
        exchange_class = getattr(ccxt, self.ccxt_id, None)
        if not isinstance(exchange_class, type) or not issubclass(exchange_class, ccxt.Exchange):
            raise NotFoundError(f"ingest.exchanges.{name}: ccxt has no exchange {self.ccxt_id!r}")
        params: dict[str, Any] = {
            "enableRateLimit": True,  # ccxt's own spacing, always on
            "timeout": int(self.config.timeout.total_seconds() * 1000),
            "options": deep_merge(DEFAULT_OPTIONS.get(self.ccxt_id, {}), self.config.options),
        }
        if self.config.urls:
            params["urls"] = self.config.urls  # ccxt deep-merges it over its own
        if self.config.rate_limit_ms is not None:
            params["rateLimit"] = self.config.rate_limit_ms
        self.exchange: ccxt.Exchange = exchange_class(params)
        self._guard_account_calls()
        self._by_id: dict[str, list[dict[str, Any]]] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, name: str, **kwargs: Any) -> "ExchangeClient":
        return cls(
            name,
            settings.ingest.exchange(name),
            breaker=settings.system_setup.circuit_breaker,
            allow_trading=settings.ai_config.allow_trading,
            **kwargs,
        )

    # -- never trading --------------------------------------------------------------------------------

    def _refusal(self, what: str) -> RofError:
        if not self.allow_trading:
            return TradingDisabledError(
                f"{self.name}: {what} refused: ai_config.allow_trading is false; this system only reads "
                "public market data from exchanges and paper-trades"
            ).with_context(self.service, what)
        return NoLiveRouteError(
            f"{self.name}: {what} refused: the exchange client reads public market data only (no API "
            "key, no order route); nothing was sent"
        ).with_context(self.service, what)

    def _guard_account_calls(self) -> None:
        """Replace every order/account method of the ccxt object with a refusal, and refuse any
        request to a non-public API section (ccxt's implicit ``private_post_order`` and the like)."""
        for name in dir(type(self.exchange)):
            if _changes_account(name) and callable(getattr(type(self.exchange), name, None)):
                setattr(self.exchange, name, self._refuser(name))
        sign = self.exchange.sign

        def public_only(
            path: str, api: Any = "public", method: str = "GET", *args: Any, **kwargs: Any
        ) -> Any:
            section = "/".join(api) if isinstance(api, list | tuple) else str(api)
            if "public" not in section.lower():
                raise self._refusal(f"{method} {section}/{path} (not a public market-data endpoint)")
            return sign(path, api, method, *args, **kwargs)

        self.exchange.sign = public_only

    def _refuser(self, name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise self._refusal(name)

        refuse.__name__ = name
        return refuse

    # -- requests ---------------------------------------------------------------------------------------

    def _attempt(self, fn: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> "R | _Wait":
        """One request. A rate-limit or maintenance answer comes back as a :class:`_Wait` (the exchange
        is healthy, just busy: the breaker must not count it); anything else failing raises."""
        self.stats.requests += 1
        try:
            return fn(*args, **kwargs)
        except (ccxt.DDoSProtection, ccxt.RateLimitExceeded) as exc:
            return _Wait("rate_limit", retry_after_seconds(self.exchange.last_response_headers), str(exc))
        except ccxt.OnMaintenance as exc:
            return _Wait("maintenance", retry_after_seconds(self.exchange.last_response_headers), str(exc))

    def _translate(self, exc: BaseException) -> RofError:
        return CCXT_ERRORS.translate(exc, service=self.service, label=f"exchange {self.name}")

    def call(self, operation: str, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """``fn(*args, **kwargs)`` through the breaker, waiting on 429 / maintenance / an open circuit
        and retrying failures with backoff, for at most ``max_wait`` seconds of waiting in all."""
        config = self.config
        max_wait = config.max_wait.total_seconds()
        waited = 0.0
        failures = 0
        while True:
            try:
                outcome = guarded_call(
                    self.service, self.breaker_config, self._translate, self._attempt, fn, args, kwargs,
                    operation=operation,
                )  # fmt: skip
            except CircuitOpenError:
                pause = breaker_for(self.service, self.breaker_config).reset_timeout
                if waited + pause > max_wait:
                    raise
                self.stats.circuit_waits += 1
                waited += self._pause(
                    pause, f"{operation}: circuit open, waiting {pause:g}s for a trial call"
                )
                continue
            except TransientError as exc:
                failures += 1
                pause = config.backoff.total_seconds() * 2 ** (failures - 1)
                if failures > config.retries or waited + pause > max_wait:
                    raise
                self.stats.retries += 1
                waited += self._pause(
                    pause, f"{operation}: {exc}; retry {failures} of {config.retries} in {pause:g}s"
                )
                continue
            if not isinstance(outcome, _Wait):
                return outcome
            backoff = config.backoff.total_seconds() * 2 ** min(failures, 10)
            pause = outcome.seconds if outcome.seconds is not None else backoff
            if outcome.seconds is None:
                failures += 1  # no Retry-After: back off further each time
            if waited + pause > max_wait:
                raise StoreUnavailableError(
                    f"exchange {self.name}: {operation}: {outcome.kind.replace('_', ' ')} ({outcome.reason}); "
                    f"waiting {pause:g}s more would pass ingest.exchanges.{self.name}.max_wait "
                    f"({max_wait:g}s, {waited:g}s waited already)"
                ).with_context(self.service, operation)
            if outcome.kind == "rate_limit":
                self.stats.rate_limit_waits += 1
            else:
                self.stats.maintenance_waits += 1
            waited += self._pause(pause, f"{operation}: {outcome.kind.replace('_', ' ')}; waiting {pause:g}s")

    def _pause(self, seconds: float, why: str) -> float:
        log.info("exchange %s: %s", self.name, why)
        self._sleep(seconds)
        self.stats.waited_s += seconds
        return seconds

    # -- markets ---------------------------------------------------------------------------------------

    def load_markets(self) -> dict[str, list[dict[str, Any]]]:
        """The exchange's market list by id (upper-cased), loaded once."""
        if self._by_id is None:
            self.call("load_markets", self.exchange.load_markets)
            by_id: dict[str, list[dict[str, Any]]] = {}
            for market_id, entries in (self.exchange.markets_by_id or {}).items():
                listed = entries if isinstance(entries, list) else [entries]
                by_id.setdefault(str(market_id).upper(), []).extend(listed)
            self._by_id = by_id
        return self._by_id

    def symbol(self, market: Market) -> str:
        """``binance:BTCUSDT`` -> ``BTC/USDT`` from the exchange's market list."""
        if market.exchange != self.name:
            raise DataValidationError(f"{market} is not a market of {self.name}")
        by_id = self.load_markets()
        entries = by_id.get(market.pair)
        if not entries:
            close = difflib.get_close_matches(market.pair, list(by_id), n=3, cutoff=0.6)
            hint = f"; close matches: {', '.join(f'{self.name}:{c}' for c in close)}" if close else ""
            raise NotFoundError(
                f"{market}: {self.name} lists no market {market.pair} ({len(by_id)} markets){hint}"
            ).with_context(self.service, "symbol")
        spot = [entry for entry in entries if entry.get("spot")]
        return str((spot or entries)[0]["symbol"])

    def market(self, symbol: str) -> Market:
        """``BTC/USDT`` -> ``binance:BTCUSDT`` (the exchange's id for the symbol)."""
        self.load_markets()
        try:
            found = self.exchange.market(symbol)
        except ccxt.BadSymbol as exc:
            raise NotFoundError(f"{self.name} lists no symbol {symbol!r}").with_context(
                self.service, "market"
            ) from exc
        return Market.parse(f"{self.name}:{found['id']}")

    def timeframe(self, interval: timedelta) -> str:
        """The exchange's name of a candle interval (``1m``, ``1h``, ...), or a clear refusal."""
        check_candle_interval(interval)
        text = interval_text(interval)
        offered = self.exchange.timeframes or {}
        if text not in offered:
            raise DataValidationError(
                f"{self.name} has no {text} candles; it offers {', '.join(offered) or 'none'}"
            )
        return text

    # -- market data -----------------------------------------------------------------------------------

    def now_ms(self) -> int:
        """The exchange's clock (epoch ms): whether a candle is closed is its call, not ours."""
        if self.exchange.has.get("fetchTime"):
            return int(self.call("fetch_time", self.exchange.fetch_time))
        return int(self.exchange.milliseconds())

    def fetch_ohlcv(
        self, market: Market, interval: timedelta, since_ms: int, limit: int, until_ms: int | None = None
    ) -> list[list[float]]:
        params = {"until": until_ms} if until_ms is not None else {}
        return self.call(
            "fetch_ohlcv", self.exchange.fetch_ohlcv, self.symbol(market), self.timeframe(interval),
            since_ms, limit, params,
        )  # fmt: skip

    def fetch_ticker(self, market: Market) -> dict[str, Any]:
        return self.call("fetch_ticker", self.exchange.fetch_ticker, self.symbol(market))

    def fetch_order_book(self, market: Market, limit: int = 5) -> dict[str, Any]:
        return self.call("fetch_order_book", self.exchange.fetch_order_book, self.symbol(market), limit)

    def close(self) -> None:
        session = getattr(self.exchange, "session", None)
        if session is not None:
            session.close()

    def __enter__(self) -> "ExchangeClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- candles ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One page of a download, as written (for progress reports and the benchmark)."""

    number: int
    asked_from: datetime
    rows: int  # what the exchange answered
    written: int  # candles stored from it
    first: datetime | None
    last: datetime | None


class GapLedger(Protocol):
    """Where a download records the exchange's answer about gaps (``store.quote_gaps``)."""

    def record(
        self,
        market: str,
        interval: str,
        start: datetime,
        end: datetime,
        gaps: Sequence[tuple[datetime, datetime]],
        source: str,
    ) -> int: ...


@dataclass
class DownloadResult:
    market: str
    interval: str
    start: datetime  # the range asked for, [start, end)
    end: datetime
    candles_fetched: int = 0
    candles_written: int = 0
    pages: int = 0
    first_ts: datetime | None = None  # first / last candle open time written
    last_ts: datetime | None = None
    gaps: list[tuple[datetime, datetime]] = field(default_factory=list)  # [from, to): no candles there
    duplicates_dropped: int = 0  # candles the exchange sent again (already written this run)
    forming_dropped: int = 0  # candles not closed yet by the exchange's clock
    rate_limit_waits: int = 0
    maintenance_waits: int = 0
    circuit_waits: int = 0
    retries: int = 0
    waited_s: float = 0.0
    note: str = ""  # why nothing was asked, when nothing was

    def summary(self) -> str:
        span = (
            f"{self.first_ts:%Y-%m-%d %H:%M} .. {self.last_ts:%Y-%m-%d %H:%M}"
            if self.first_ts and self.last_ts
            else "-"
        )
        gaps = "; ".join(f"{a:%Y-%m-%d %H:%M} .. {b:%Y-%m-%d %H:%M}" for a, b in self.gaps[:5])
        more = f" (+{len(self.gaps) - 5} more)" if len(self.gaps) > 5 else ""
        return (
            f"{self.market} {self.interval}: {self.candles_written} candles written in {self.pages} page(s), "
            f"{span}; gaps: {len(self.gaps)}{f' [{gaps}{more}]' if gaps else ''}; waits: "
            f"{self.rate_limit_waits} rate limit, {self.maintenance_waits} maintenance, "
            f"{self.circuit_waits} circuit, {self.retries} retries ({self.waited_s:.1f}s)"
            + (f"; {self.note}" if self.note else "")
        )


def _ms(moment: datetime) -> int:
    return datetime_to_us(moment) // 1000


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _page_candles(rows: list[list[float]], source: str, interval: timedelta) -> pd.DataFrame:
    """The exchange's rows as a validated candle table (ts_us, open, high, low, close, volume)."""
    table = pd.DataFrame(
        [row[:6] for row in rows], columns=["ts", "open", "high", "low", "close", "volume"]
    ).astype({"ts": "int64"})
    table["volume"] = table["volume"].fillna(0.0)
    return validate_candles(table, source, 1, None, interval).candles


def download_candles(
    store: QuoteStore,
    client: ExchangeClient,
    market: Market,
    interval: timedelta,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    prepend: bool = False,
    keep_book: bool = False,
    progress: Callable[[Page], None] | None = None,
    gap_ledger: GapLedger | None = None,
    source: str = "download",
) -> DownloadResult:
    """Fetch ``market``'s closed candles page by page into ``store``, each page written as it arrives.

    Without ``prepend`` it starts after the newest stored candle (with nothing stored: at ``since``,
    or one page before the exchange's now) and runs to ``until`` (default: the exchange's now);
    with ``prepend`` it fills ``[since, oldest stored candle)``. Candles already written in this run
    are dropped, candles still forming are not stored, and a range the exchange has no candles for
    is reported in ``gaps`` and not asked again.

    ``gap_ledger``: each page's answer (its range and the gaps in it) is recorded there, as ``source``,
    before its candles are written, so a download killed in between re-asks the page and records it
    again; nothing the exchange said is lost.

    ``keep_book``: the market also stores top-of-book snapshots (bid and ask) between candles. A page
    then keeps the snapshots already stored inside its candles' minutes (a candle write would
    replace them), and a resume starts at the candle holding the newest stored snapshot (the newest
    may be a bid/ask snapshot inside a candle still forming at the last fetch)."""
    step_ms = int(interval.total_seconds() * 1000)
    timeframe = interval_text(interval)
    stats_before = client.stats.copy()
    client.symbol(market)  # an unknown market fails before anything else
    now_ms = client.now_ms()
    closed_end = (now_ms // step_ms) * step_ms  # candles opening before this have closed
    end_ms = closed_end if until is None else min(_ceil(_ms(until), step_ms), closed_end)
    stored = store.time_range(market)
    note = ""
    if prepend:
        if since is None:
            raise DataValidationError(f"{market}: --prepend needs --since (how far back to fill)")
        start_ms = _ceil(_ms(since), step_ms)
        if stored is not None:
            end_ms = min(end_ms, (_ms(stored[0]) // step_ms) * step_ms)  # the oldest stored candle's open
        else:
            note = "nothing stored yet: --prepend downloads from --since"
    elif stored is not None:
        newest_open = (datetime_to_us(stored[1]) // 1000 // step_ms) * step_ms
        start_ms = newest_open if keep_book else newest_open + step_ms  # after the newest candle
    elif since is not None:
        start_ms = _ceil(_ms(since), step_ms)
    else:
        start_ms = end_ms - client.config.page_size * step_ms
        note = "nothing stored and no --since: the newest page only"
    result = DownloadResult(market.key, timeframe, _utc(start_ms), _utc(max(start_ms, end_ms)), note=note)
    if start_ms >= end_ms and not note:
        result.note = "up to date" if not prepend else "nothing to prepend"
    cursor = start_ms
    while cursor < end_ms:
        asked = cursor
        rows = client.fetch_ohlcv(market, interval, cursor, client.config.page_size, end_ms - 1)
        result.pages += 1
        result.candles_fetched += len(rows)
        opens = np.array([int(row[0]) for row in rows], dtype=np.int64)
        in_range = (opens >= cursor) & (opens < end_ms)
        closed = opens + step_ms <= now_ms
        first_seen = np.zeros(len(opens), dtype=bool)
        first_seen[np.unique(opens, return_index=True)[1]] = True
        result.duplicates_dropped += int(
            np.count_nonzero(opens < cursor) + np.count_nonzero(in_range & ~first_seen)
        )
        result.forming_dropped += int(np.count_nonzero(in_range & first_seen & ~closed))
        keep = in_range & first_seen & closed
        kept = [row for row, ok in zip(rows, keep.tolist(), strict=True) if ok]
        page_label = f"{market} {timeframe} page from {_utc(asked):%Y-%m-%d %H:%M}"
        candles = _page_candles(kept, page_label, interval) if kept else pd.DataFrame(columns=["ts_us"])
        if candles.empty:
            # Nothing from the cursor on up to end: the exchange has no candles there. Recorded, not invented.
            result.gaps.append((_utc(cursor), _utc(end_ms)))
            if gap_ledger is not None:
                gap_ledger.record(market.key, timeframe, _utc(cursor), _utc(end_ms), result.gaps[-1:], source)
            _report(progress, result.pages, asked, len(rows), None)
            break
        open_ms = candles["ts_us"].to_numpy() // 1000
        expected = np.r_[cursor, open_ms[:-1] + step_ms]
        missing = open_ms > expected
        page_gaps = [
            (_utc(int(a)), _utc(int(b))) for a, b in zip(expected[missing], open_ms[missing], strict=True)
        ]
        result.gaps.extend(page_gaps)
        if gap_ledger is not None:
            page_end = _utc(int(open_ms[-1]) + step_ms)
            gap_ledger.record(market.key, timeframe, _utc(cursor), page_end, page_gaps, source)
        snapshots = candles_to_snapshots(candles, interval)
        if keep_book:
            snapshots = _with_book_snapshots(store, market, snapshots)
        store.write(market, snapshots)
        written = len(candles)
        result.candles_written += written
        first, last = _utc(int(open_ms[0])), _utc(int(open_ms[-1]))
        result.first_ts = first if result.first_ts is None else min(result.first_ts, first)
        result.last_ts = last if result.last_ts is None else max(result.last_ts, last)
        _report(progress, result.pages, asked, len(rows), (written, first, last))
        cursor = int(open_ms[-1]) + step_ms
    spent = client.stats.minus(stats_before)
    result.rate_limit_waits = spent.rate_limit_waits
    result.maintenance_waits = spent.maintenance_waits
    result.circuit_waits = spent.circuit_waits
    result.retries = spent.retries
    result.waited_s = spent.waited_s
    return result


def _with_book_snapshots(store: QuoteStore, market: Market, snapshots: pd.DataFrame) -> pd.DataFrame:
    """The page's candle snapshots with the bid/ask snapshots stored inside the same span."""
    first, last = snapshots["ts"].iloc[0], snapshots["ts"].iloc[-1]
    stored = store.read(market, first.to_pydatetime(), (last + pd.Timedelta(microseconds=1)).to_pydatetime())
    book = stored[stored["bid"].notna() & stored["ask"].notna()]
    if book.empty:
        return snapshots
    # A book snapshot at the very instant of a candle's snapshot lends that row its bid and ask (the
    # candle keeps its price); the others are kept as they are.
    quotes = book.set_index("ts")[["bid", "ask"]]
    snapshots = snapshots.copy()
    same = snapshots["ts"].isin(quotes.index)
    snapshots.loc[same, ["bid", "ask"]] = quotes.loc[snapshots.loc[same, "ts"]].to_numpy()
    merged = pd.concat([snapshots, book[~book["ts"].isin(snapshots["ts"])]], ignore_index=True)
    return merged.sort_values("ts", kind="stable").reset_index(drop=True)


def _ceil(value: int, step: int) -> int:
    return -(-value // step) * step


def _report(
    progress: Callable[[Page], None] | None, number: int, asked_ms: int, rows: int,
    written: tuple[int, datetime, datetime] | None,
) -> None:  # fmt: skip
    if progress is None:
        return
    count, first, last = written or (0, None, None)
    progress(Page(number, _utc(asked_ms), rows, count, first, last))


# --- top of book ---------------------------------------------------------------------------------------


def fetch_top_of_book(client: ExchangeClient, market: Market) -> pd.DataFrame:
    """One canonical snapshot (ts, price, bid, ask, volume NaN) of the market's best bid and ask: the
    ticker's, or the order book's top when the ticker has none. ``price`` is the last trade, else the
    mid-price; ``ts`` the exchange's time of the quote."""
    ticker = client.fetch_ticker(market)
    bid, ask, stamp = ticker.get("bid"), ticker.get("ask"), ticker.get("timestamp")
    if bid is None or ask is None:
        book = client.fetch_order_book(market)
        bid = book["bids"][0][0] if book.get("bids") else None
        ask = book["asks"][0][0] if book.get("asks") else None
        stamp = book.get("timestamp") or stamp
    if bid is None or ask is None:
        raise DataValidationError(f"{market}: the exchange quotes no bid and ask (an empty book)")
    price = ticker.get("last") or (float(bid) + float(ask)) / 2
    when = pd.Timestamp(stamp if stamp is not None else client.now_ms(), unit="ms", tz="UTC")
    return pd.DataFrame(
        {
            "ts": pd.Series([when]).astype(TS_DTYPE),
            "price": [float(price)],
            "bid": [float(bid)],
            "ask": [float(ask)],
            "volume": [np.nan],
        }
    )
