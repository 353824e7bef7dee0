"""Load every compiled kernel once in the parent before the worker pool forks, so each worker starts
with them in memory instead of paying numba's cache load (or compile) on its first genome."""

import numpy as np
import pandas as pd

from rof_pipelines.core.ga.fitness import FULL, build_fitness_data, evaluate_genome
from rof_pipelines.core.ga.space import SearchSpace
from rof_pipelines.core.indicators import build_indicator_frame
from rof_pipelines.core.rl.agent import RLParams

_warmed = False


def warm_once() -> None:
    """:func:`warm`, the first time a process asks."""
    global _warmed
    if not _warmed:
        warm()
        _warmed = True


def warm() -> None:
    """One evaluation on 240 synthetic bars touching every kernel (training, walk, ATR). The frame is
    a real indicator frame, so it has every column any registered state feature reads."""
    rng = np.random.default_rng(0)
    n = 240
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    bars = pd.DataFrame(
        {
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "volume": rng.uniform(1.0, 10.0, n),
            "n_ticks": np.full(n, 10),
        },
        index=pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC"),
    )
    frame = build_indicator_frame(bars)
    space = SearchSpace.from_mapping(
        {
            "alpha": {"type": "float", "low": 0.1, "high": 0.2},
            "atr_window": {"type": "int", "low": 5, "high": 6},
        }
    )
    data = build_fitness_data(frame, RLParams(episodes=1), space)
    evaluate_genome(data, FULL, space.from_unit((0.5, 0.5)))
