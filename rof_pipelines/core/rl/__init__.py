"""Tabular Q-learning trader: indicator-frame states, a numba kernel, Kelly-sized greedy backtests.

Entry points: :class:`RLParams`, :func:`prepare`, :func:`train` -> :class:`TrainedAgent`
(``evaluate`` -> :class:`~rof_pipelines.core.backtest.BacktestResult`, ``to_bytes`` / ``from_bytes``).
"""

from rof_pipelines.core.rl.agent import RLParams, TrainedAgent, prepare, seed_state, train
from rof_pipelines.core.rl.env import BinSpec, EnvArrays, FeatureBins, StateSpace, build_env
from rof_pipelines.core.rl.kernel import BUY, HOLD, N_ACTIONS, SELL

__all__ = [
    "BUY",
    "HOLD",
    "N_ACTIONS",
    "SELL",
    "BinSpec",
    "EnvArrays",
    "FeatureBins",
    "RLParams",
    "StateSpace",
    "TrainedAgent",
    "build_env",
    "prepare",
    "seed_state",
    "train",
]
