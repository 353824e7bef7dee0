"""How a data window is cut into the part the agent/optimiser learns on and the part only an
out-of-sample evaluation (backtest, A/B test) sees. Every consumer uses this one cut, so nothing
from the held-out part can leak into training."""

from dataclasses import dataclass

import pandas as pd

DEFAULT_TRAIN_FRACTION = 0.7


@dataclass(frozen=True)
class WindowSplit:
    train: pd.DataFrame
    test: pd.DataFrame

    @property
    def boundary(self) -> pd.Timestamp:
        """First bar of the held-out part."""
        return self.test.index[0]


def split_train_test(frame: pd.DataFrame, train_fraction: float = DEFAULT_TRAIN_FRACTION) -> WindowSplit:
    """Chronological split: the first ``train_fraction`` of the bars train, the rest is held out."""
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be between 0 and 1, got {train_fraction}")
    ordered = frame.sort_index()
    cut = round(len(ordered) * train_fraction)  # round: 0.7 * 1440 is 1007.99... in floating point
    return WindowSplit(train=ordered.iloc[:cut], test=ordered.iloc[cut:])
