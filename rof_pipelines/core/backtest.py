"""Backtest results and their metrics, plus the buy-and-hold baseline on the same bars and costs.

Definitions (per-step returns ``r_k = equity[k] / equity[k - 1] - 1``, ``B`` = bars per year):

* total_return ``equity[-1] / equity[0] - 1``; annual_return ``(1 + total) ** (B / steps) - 1``
  (computed in log space; ``inf`` when it exceeds the float range, -1 after a total loss);
* sharpe ``mean(r) / std(r, ddof=1) * sqrt(B)`` (risk-free 0; 0.0 when std is 0);
* sortino ``mean(r) / sqrt(mean(min(r, 0) ** 2)) * sqrt(B)`` (target 0; inf when there is no downside
  and the mean is positive, 0.0 when there is no downside and the mean is not);
* max_drawdown, the largest fall from a running peak, as a positive fraction;
* win_rate, profit_factor (sum of winning / sum of losing trade returns; inf with wins and no losses,
  0.0 without trades) and avg_trade_return use the unit-size net return of each trade, i.e. the quality
  of the signal, independent of the Kelly size it was taken with;
* exposure, the fraction of steps with a non-zero position; kelly_fraction the mean size of the
  trades taken, kelly_fraction_next the size a new entry would get now.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Trades:
    """Closed trades; ``exit`` == number of steps means liquidated at the final mark."""

    entry: np.ndarray  # int64 step index of the entry decision
    exit: np.ndarray  # int64 step index of the exit decision
    direction: np.ndarray  # int8 +1 long / -1 short
    size: np.ndarray  # float64 fraction of equity (Kelly)
    ret: np.ndarray  # float64 unit-size return net of costs

    @classmethod
    def empty(cls) -> "Trades":
        return cls(
            np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int8), np.empty(0), np.empty(0)
        )

    def __len__(self) -> int:
        return int(self.ret.shape[0])


@dataclass(frozen=True)
class BacktestResult:
    """One walk through the bars. ``equity`` has one more point than there are steps (it starts at 1);
    ``exposure`` is the signed position size held over each step."""

    equity: np.ndarray
    exposure: np.ndarray
    trades: Trades
    bars_per_year: float
    actions: np.ndarray | None = None
    kelly_fraction_next: float = 1.0
    index: pd.DatetimeIndex | None = None  # bar time of each equity point, when known
    baseline: "BacktestResult | None" = field(default=None, repr=False)

    @property
    def returns(self) -> np.ndarray:
        return self.equity[1:] / self.equity[:-1] - 1.0

    def metrics(self) -> dict[str, float]:
        """Flat floats for Dagster metadata and the optimiser; ``bh_*`` are the buy-and-hold baseline."""
        out = compute_metrics(
            self.equity, self.trades.ret, self.exposure, self.bars_per_year, trade_sizes=self.trades.size
        )
        out["kelly_fraction_next"] = float(self.kelly_fraction_next)
        if self.baseline is not None:
            base = self.baseline.metrics()
            for key in ("total_return", "annual_return", "sharpe", "sortino", "max_drawdown"):
                out[f"bh_{key}"] = base[key]
            out["excess_return"] = out["total_return"] - base["total_return"]
        return out


def compute_metrics(
    equity: np.ndarray,
    trade_returns: np.ndarray,
    exposure: np.ndarray,
    bars_per_year: float,
    trade_sizes: np.ndarray | None = None,
) -> dict[str, float]:
    equity = np.asarray(equity, dtype=np.float64)
    trade_returns = np.asarray(trade_returns, dtype=np.float64)
    steps = equity.shape[0] - 1
    returns = equity[1:] / equity[:-1] - 1.0 if steps > 0 else np.empty(0)
    total = float(equity[-1] / equity[0] - 1.0)
    annual = annualised_return(total, steps, bars_per_year)
    return {
        "total_return": total,
        "annual_return": annual,
        "sharpe": sharpe_ratio(returns, bars_per_year),
        "sortino": sortino_ratio(returns, bars_per_year),
        "max_drawdown": max_drawdown(equity),
        "n_trades": float(trade_returns.shape[0]),
        "win_rate": win_rate(trade_returns),
        "profit_factor": profit_factor(trade_returns),
        "avg_trade_return": float(trade_returns.mean()) if trade_returns.size else 0.0,
        "exposure": float(np.mean(np.asarray(exposure) != 0)) if steps > 0 else 0.0,
        "kelly_fraction": float(np.mean(trade_sizes))
        if trade_sizes is not None and trade_sizes.size
        else 0.0,
        "final_equity": float(equity[-1]),
        "n_steps": float(steps),
    }


def annualised_return(total: float, steps: int, bars_per_year: float) -> float:
    """``(1 + total) ** (B / steps) - 1`` in log space: a day of minute bars compounds over 525 600 / 1440
    periods, which overflows a float for modest daily gains; beyond the float range it is ``inf``."""
    if steps <= 0 or not total > -1.0:
        return -1.0
    exponent = math.log1p(total) * (bars_per_year / steps)
    if exponent > 709.0:  # exp(709.78) is the largest finite double
        return math.inf
    return math.expm1(exponent)


def sharpe_ratio(returns: np.ndarray, bars_per_year: float) -> float:
    returns = np.asarray(returns, dtype=np.float64)
    if returns.size < 2:
        return 0.0
    sd = float(returns.std(ddof=1))
    if sd == 0.0:
        return 0.0
    return float(returns.mean() / sd * math.sqrt(bars_per_year))


def sortino_ratio(returns: np.ndarray, bars_per_year: float) -> float:
    returns = np.asarray(returns, dtype=np.float64)
    if returns.size == 0:
        return 0.0
    mean = float(returns.mean())
    downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)))
    if downside == 0.0:
        return math.inf if mean > 0 else 0.0
    return mean / downside * math.sqrt(bars_per_year)


def max_drawdown(equity: np.ndarray) -> float:
    equity = np.asarray(equity, dtype=np.float64)
    if equity.size == 0:
        return 0.0
    peak = np.maximum.accumulate(equity)
    return float(np.max(1.0 - equity / peak))


def win_rate(trade_returns: np.ndarray) -> float:
    trade_returns = np.asarray(trade_returns, dtype=np.float64)
    return float(np.mean(trade_returns > 0)) if trade_returns.size else 0.0


def profit_factor(trade_returns: np.ndarray) -> float:
    trade_returns = np.asarray(trade_returns, dtype=np.float64)
    gains = float(trade_returns[trade_returns > 0].sum())
    losses = float(-trade_returns[trade_returns < 0].sum())
    if losses == 0.0:
        return math.inf if gains > 0 else 0.0
    return gains / losses


def buy_and_hold(
    step_ret: np.ndarray, cost: float, bars_per_year: float, index: pd.DatetimeIndex | None = None
) -> BacktestResult:
    """Full-size long from the first fill to the final mark, paying ``cost`` on entry and exit, with
    the same per-step accounting as the agent (``equity *= 1 + r``)."""
    step_ret = np.asarray(step_ret, dtype=np.float64)
    n = step_ret.shape[0]
    if n == 0:
        raise ValueError("buy-and-hold needs at least one step")
    growth = 1.0 + step_ret
    growth[0] -= cost
    equity = np.empty(n + 1)
    equity[0] = 1.0
    equity[1:] = np.cumprod(growth)
    equity[-1] *= 1.0 - cost
    trade = Trades(
        entry=np.array([0], np.int64),
        exit=np.array([n], np.int64),
        direction=np.array([1], np.int8),
        size=np.array([1.0]),
        ret=np.array([equity[-1] - 1.0]),
    )
    return BacktestResult(
        equity=equity,
        exposure=np.ones(n),
        trades=trade,
        bars_per_year=bars_per_year,
        kelly_fraction_next=1.0,
        index=index,
    )


def metrics_table(results: dict[str, BacktestResult]) -> pd.DataFrame:
    """Side-by-side metrics, one column per named result (for reports)."""
    return pd.DataFrame({name: result.metrics() for name, result in results.items()})
