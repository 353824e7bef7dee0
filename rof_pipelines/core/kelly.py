"""Kelly position sizing from the strategy's own recent trade record.

Formula (the discrete win/loss form): ``f* = W - (1 - W) / R`` with W the win rate and R the payoff
ratio, average win / average loss (both as positive numbers), over the closed trades in the window.
It is chosen over the continuous ``mean / variance`` form because a trading record is a sequence of
discrete bets and this form does not blow up on a handful of low-variance trades.

How the size learns, in order:

* the record is every closed trade's return at unit size, whatever size it was taken at: a trade
  sized 0 (a "paper" trade) still enters the record, so an edge is measured without risking on it;
* warm-up: while the window holds fewer than ``min_trades`` trades the size is ``warmup_fraction``
  (default 0.05): small enough that an unmeasured edge risks little, large enough that an agent's
  returns, and so the optimiser's and the A/B test's comparisons, are not all zero;
* from ``min_trades`` on, ``f*`` of the window: trades returning exactly 0 are neither wins nor
  losses; no wins -> 0; wins but no losses -> ``f* = W`` (R is infinite); a negative ``f*`` (no
  edge) -> 0, so a losing record stops risking and only paper-trades until its record turns; the
  result is capped at ``max_fraction``.

No look-ahead: a trade's size is fixed when it opens, from the trades closed before that moment
(earlier history first, e.g. the in-sample record). The window is the last ``window_trades`` closed
trades, or the trades closed within ``window_seconds`` before the decision
(``ai_config.kelly.window_type`` trades | time). Sizing never places an order: with
``ai_config.allow_trading`` false every size is a backtest's or a paper trade's.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

from rof_pipelines.core.defaults import KELLY

if TYPE_CHECKING:
    from rof_pipelines.settings import KellyConfig


@dataclass(frozen=True)
class KellyParams:
    """Kelly sizing settings as plain values, so a compiled kernel and the optimiser can use them."""

    use_kelly: bool = KELLY["use_kelly"].default
    window_trades: int | None = KELLY["window_trades"].default
    window_seconds: float | None = None
    max_fraction: float = KELLY["max_fraction"].default
    min_trades: int = KELLY["min_trades"].default
    warmup_fraction: float = KELLY["warmup_fraction"].default

    def __post_init__(self) -> None:
        if (self.window_trades is None) == (self.window_seconds is None):
            raise ValueError("give exactly one of window_trades and window_seconds")
        if self.window_trades is not None and self.window_trades < 1:
            raise ValueError(f"window_trades must be >= 1, got {self.window_trades}")
        if self.window_seconds is not None and not self.window_seconds > 0:
            raise ValueError(f"window_seconds must be > 0, got {self.window_seconds}")
        if not 0 < self.max_fraction <= 1:
            raise ValueError(f"max_fraction must be in (0, 1], got {self.max_fraction}")
        if self.min_trades < 1:
            raise ValueError(f"min_trades must be >= 1, got {self.min_trades}")
        if not 0 <= self.warmup_fraction <= self.max_fraction:
            raise ValueError(
                f"warmup_fraction must be in [0, max_fraction={self.max_fraction}], "
                f"got {self.warmup_fraction}"
            )

    @classmethod
    def from_settings(cls, kelly: "KellyConfig") -> "KellyParams":
        duration = kelly.window_duration
        return cls(
            use_kelly=kelly.use_kelly,
            window_trades=kelly.window_trades,
            window_seconds=duration.total_seconds() if duration is not None else None,
            max_fraction=kelly.max_fraction,
            min_trades=getattr(kelly, "min_trades", cls.min_trades),
            warmup_fraction=getattr(kelly, "warmup_fraction", cls.warmup_fraction),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "use_kelly": self.use_kelly,
            "window_trades": self.window_trades,
            "window_seconds": self.window_seconds,
            "max_fraction": self.max_fraction,
            "min_trades": self.min_trades,
            "warmup_fraction": self.warmup_fraction,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "KellyParams":
        return cls(**data)


@njit(cache=True)
def kelly_fraction_window(returns: np.ndarray, lo: int, hi: int, max_fraction: float) -> float:
    """Kelly fraction of ``returns[lo:hi]`` (no warm-up rule here; callers apply it)."""
    wins = 0
    losses = 0
    sum_win = 0.0
    sum_loss = 0.0
    for i in range(lo, hi):
        x = returns[i]
        if x > 0.0:
            wins += 1
            sum_win += x
        elif x < 0.0:
            losses += 1
            sum_loss -= x
    if wins == 0:
        return 0.0
    w = wins / (wins + losses)
    if losses == 0:
        f = w
    else:
        payoff = (sum_win / wins) / (sum_loss / losses)
        f = w - (1.0 - w) / payoff
    if f <= 0.0:
        return 0.0
    if f > max_fraction:
        return max_fraction
    return f


def kelly_fraction(returns: np.ndarray | list[float], max_fraction: float = 1.0) -> float:
    """The capped Kelly fraction of a whole trade record (no warm-up rule)."""
    arr = np.ascontiguousarray(returns, dtype=np.float64)
    return float(kelly_fraction_window(arr, 0, arr.shape[0], float(max_fraction)))


def rolling_kelly(
    returns: np.ndarray | list[float],
    params: KellyParams,
    exit_times: np.ndarray | None = None,
    entry_times: np.ndarray | None = None,
) -> np.ndarray:
    """The fraction each trade would have been sized with, from the trades closed before it.

    By trades: trade i sees trades ``max(0, i - window_trades) .. i - 1``. By time: trade i sees the
    earlier trades whose ``exit_times`` (int64 ns) lie in ``(entry_times[i] - window, entry_times[i]]``.
    """
    arr = np.ascontiguousarray(returns, dtype=np.float64)
    n = arr.shape[0]
    out = np.empty(n, np.float64)
    if params.window_trades is not None:
        for i in range(n):
            lo = max(0, i - params.window_trades)
            out[i] = _sized(arr, lo, i, params)
        return out
    if exit_times is None or entry_times is None:
        raise ValueError("a time window needs exit_times and entry_times (int64 ns)")
    exits = np.asarray(exit_times, dtype=np.int64)
    entries = np.asarray(entry_times, dtype=np.int64)
    window_ns = round(params.window_seconds * 1e9)  # type: ignore[operator]
    for i in range(n):
        closed = np.flatnonzero((exits[:i] <= entries[i]) & (exits[:i] > entries[i] - window_ns))
        out[i] = _sized(arr[closed], 0, closed.shape[0], params)
    return out


def _sized(arr: np.ndarray, lo: int, hi: int, params: KellyParams) -> float:
    if not params.use_kelly:
        return 1.0
    if hi - lo < params.min_trades:
        return params.warmup_fraction
    return float(kelly_fraction_window(np.ascontiguousarray(arr), lo, hi, params.max_fraction))
