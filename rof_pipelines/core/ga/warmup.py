"""Load every compiled kernel once in the parent before the worker pool forks, so each worker starts
with them in memory instead of paying numba's cache load (or compile) on its first genome."""

import numpy as np
import pandas as pd

from rof_pipelines.core.ga.fitness import FULL, build_fitness_data, evaluate_genome
from rof_pipelines.core.ga.space import SearchSpace
from rof_pipelines.core.rl.agent import RLParams

_warmed = False


def warm_once() -> None:
    """:func:`warm`, the first time a process asks."""
    global _warmed
    if not _warmed:
        warm()
        _warmed = True


def warm() -> None:
    """One evaluation on 240 synthetic bars touching every kernel (training, walk, ATR)."""
    rng = np.random.default_rng(0)
    n = 240
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    frame = pd.DataFrame(
        {
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "rsi": rng.uniform(0, 100, n),
            "macd_hist": rng.normal(0, 0.1, n),
            "bb_pband": rng.uniform(-0.2, 1.2, n),
            "atr_pct": rng.uniform(0.001, 0.01, n),
            "trend": rng.normal(0, 1e-3, n),
        },
        index=pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC"),
    )
    space = SearchSpace.from_mapping(
        {
            "alpha": {"type": "float", "low": 0.1, "high": 0.2},
            "atr_window": {"type": "int", "low": 5, "high": 6},
        }
    )
    data = build_fitness_data(frame, RLParams(episodes=1), space)
    evaluate_genome(data, FULL, space.from_unit((0.5, 0.5)))
