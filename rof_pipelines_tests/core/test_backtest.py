"""Backtest metrics on equity curves and trade lists small enough to check by hand."""

import math

import numpy as np
import pytest

from rof_pipelines.core.backtest import (
    BacktestResult,
    Trades,
    annualised_return,
    buy_and_hold,
    compute_metrics,
    max_drawdown,
    metrics_table,
    profit_factor,
    sharpe_ratio,
    sortino_ratio,
    win_rate,
)


def test_sharpe_and_sortino_by_hand():
    # returns +10 %, -10 %, +10 %: mean 1/30, sample sd sqrt(12)/30, downside sqrt(0.01 / 3)
    equity = np.array([1.0, 1.1, 0.99, 1.089])
    returns = equity[1:] / equity[:-1] - 1
    assert sharpe_ratio(returns, bars_per_year=12) == pytest.approx(1.0)
    assert sortino_ratio(returns, bars_per_year=12) == pytest.approx(2.0)
    assert sharpe_ratio(np.array([0.01, 0.01, 0.01]), 252) == 0.0  # no variance: defined as 0
    assert sortino_ratio(np.array([0.01, 0.02]), 252) == math.inf
    assert sortino_ratio(np.array([0.0, 0.0]), 252) == 0.0


def test_max_drawdown_by_hand():
    assert max_drawdown(np.array([1.0, 1.2, 0.9, 1.5, 1.2])) == pytest.approx(0.25)  # 1.2 -> 0.9
    assert max_drawdown(np.array([1.0, 1.1, 1.2])) == 0.0
    assert max_drawdown(np.array([1.0, 0.5, 2.0, 0.4])) == pytest.approx(0.8)


def test_trade_statistics_by_hand():
    trades = np.array([0.1, -0.05, 0.2, -0.1])
    assert profit_factor(trades) == pytest.approx(0.3 / 0.15)
    assert win_rate(trades) == 0.5
    assert profit_factor(np.array([0.1])) == math.inf
    assert profit_factor(np.array([])) == 0.0 and win_rate(np.array([])) == 0.0


def test_compute_metrics_collects_everything():
    equity = np.array([1.0, 1.1, 1.21])
    m = compute_metrics(
        equity, np.array([0.21]), np.array([1.0, 0.0]), bars_per_year=2, trade_sizes=np.array([0.5])
    )
    assert m["total_return"] == pytest.approx(0.21)
    assert m["annual_return"] == pytest.approx(0.21)  # two steps, two bars per year
    assert m["exposure"] == 0.5 and m["n_trades"] == 1.0 and m["kelly_fraction"] == 0.5
    assert m["final_equity"] == pytest.approx(1.21) and m["max_drawdown"] == 0.0
    assert all(isinstance(v, float) for v in m.values())


def test_buy_and_hold_pays_costs_on_both_ends():
    result = buy_and_hold(np.array([0.01, -0.02, 0.03]), cost=0.001, bars_per_year=365)
    expected = [1.0, 1.009, 1.009 * 0.98, 1.009 * 0.98 * 1.03 * 0.999]
    assert result.equity.tolist() == pytest.approx(expected, rel=1e-14)
    assert len(result.trades) == 1 and result.trades.ret[0] == pytest.approx(expected[-1] - 1)
    assert result.metrics()["exposure"] == 1.0


def test_result_metrics_include_the_baseline():
    base = buy_and_hold(np.array([0.1, 0.1]), cost=0.0, bars_per_year=2)
    result = BacktestResult(
        equity=np.array([1.0, 1.0, 1.5]),
        exposure=np.array([0.0, 1.0]),
        trades=Trades(np.array([1]), np.array([2]), np.array([1], np.int8), np.array([1.0]), np.array([0.5])),
        bars_per_year=2,
        baseline=base,
    )
    m = result.metrics()
    assert m["bh_total_return"] == pytest.approx(0.21)
    assert m["excess_return"] == pytest.approx(0.5 - 0.21)
    assert list(result.returns) == [0.0, 0.5]
    table = metrics_table({"agent": result, "buy_and_hold": base})
    assert table.loc["total_return", "agent"] == pytest.approx(0.5)


def test_annual_return_of_a_big_day_on_minute_bars_is_inf_not_an_overflow():
    # +50 % in one day of minute bars compounds 365 times: 1.5 ** 365 ~ 1e64, still finite; +1000 % is
    # 11 ** 365 ~ 1e380, beyond the float range, where ** raised OverflowError.
    minute_year = 525_600.0
    assert annualised_return(0.5, 1440, minute_year) == pytest.approx(1.5**365 - 1, rel=1e-9)
    assert annualised_return(10.0, 1440, minute_year) == math.inf
    assert annualised_return(-1.0, 1440, minute_year) == -1.0
    assert annualised_return(0.1, 0, minute_year) == -1.0
    assert annualised_return(1e-9, 1440, minute_year) == pytest.approx(365e-9, rel=1e-6)  # expm1: no loss
    equity = np.concatenate([[1.0], np.linspace(1.0, 11.0, 1440)])
    m = compute_metrics(equity, np.empty(0), np.ones(1440), minute_year)
    assert m["annual_return"] == math.inf and m["total_return"] == pytest.approx(10.0)
