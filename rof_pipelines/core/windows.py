"""How a data window is cut into the part the agent/optimiser learns on and the part only an
out-of-sample evaluation (backtest, A/B test) sees. Every consumer uses this one cut, so nothing
from the held-out part can leak into training."""

from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise
from typing import Literal

import pandas as pd

from rof_pipelines.core.defaults import GA

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


# --- walk-forward folds -------------------------------------------------------------------------------

FoldScheme = Literal["expanding", "rolling"]


@dataclass(frozen=True)
class Fold(WindowSplit):
    """One walk-forward fold: its ``train`` bars all lie before its ``test`` bars (and before the
    embargo gap that separates them)."""

    number: int  # 0 = the earliest test block


def walk_forward_folds(
    frame: pd.DataFrame,
    n_folds: int = 1,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    *,
    scheme: FoldScheme = "expanding",
    embargo: int | timedelta = 0,
    min_bars: int = 2,
) -> list[Fold]:
    """Walk-forward folds over the same held-out part :func:`split_train_test` cuts off.

    The last ``1 - train_fraction`` of the bars (the cut rounds as in ``split_train_test``) is divided
    into ``n_folds`` consecutive test blocks of near-equal length. Fold k trains on the bars before
    its test block: all of them ("expanding") or as many as the first fold has ("rolling", a window of
    constant length). ``embargo`` (bars, or a time span) drops the training bars right before each test
    block, for features or rewards that look ahead or overlap; the causal indicator frame needs none.
    With one fold and no embargo the fold equals ``split_train_test(frame, train_fraction)``. Later
    folds train on earlier test blocks, never on their own or later ones.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if scheme not in ("expanding", "rolling"):
        raise ValueError(f"scheme must be 'expanding' or 'rolling', got {scheme!r}")
    by_time = isinstance(embargo, timedelta)  # pd.Timedelta is one
    if embargo < (timedelta(0) if by_time else 0):  # type: ignore[operator]
        raise ValueError(f"embargo must be >= 0, got {embargo}")
    data = frame.sort_index()
    cut = len(split_train_test(data, train_fraction).train)  # validates the fraction; the same cut
    held = len(data) - cut
    edges = [cut + held * k // n_folds for k in range(n_folds + 1)]
    if min(b - a for a, b in pairwise(edges)) < min_bars:
        raise ValueError(f"{held} held-out bars cannot make {n_folds} test blocks of >= {min_bars} bars")

    def train_end(test_start: int) -> int:
        if by_time:
            if not isinstance(data.index, pd.DatetimeIndex):
                raise ValueError("a time-span embargo needs a DatetimeIndex")
            limit = data.index[test_start] - pd.Timedelta(embargo)
            return int(data.index.searchsorted(limit, side="left"))
        return test_start - int(embargo)  # type: ignore[arg-type]

    window = train_end(edges[0])
    folds = []
    for k in range(n_folds):
        end = train_end(edges[k])
        start = 0 if scheme == "expanding" else max(0, end - window)
        if end - start < min_bars:
            raise ValueError(f"fold {k} would train on {max(end - start, 0)} bars (< {min_bars})")
        folds.append(Fold(train=data.iloc[start:end], test=data.iloc[edges[k] : edges[k + 1]], number=k))
    return folds


# --- how many bars a window must hold ------------------------------------------------------------

MIN_TRAIN_BARS = 200  # the agent needs a few hundred steps to fill a Q-table; the GA splits these again
MIN_GA_VALIDATION_BARS = 30  # the GA scores each genome on this many bars at least
MIN_TEST_BARS = 30  # per walk-forward test block, whatever ab_tests.min_periods says


@dataclass(frozen=True)
class WindowBudget:
    """Where a window's bars go: the training part, the held-out part and the GA's validation slice."""

    bars: int
    train: int
    test: int
    per_fold: int
    ga_validation: int
    min_test: int

    def problems(self) -> list[str]:
        out = []
        if self.train < MIN_TRAIN_BARS:
            out.append(f"{self.train} training bars (need >= {MIN_TRAIN_BARS})")
        if self.per_fold < self.min_test:
            out.append(f"{self.per_fold} held-out bars per test block (need >= {self.min_test})")
        if self.ga_validation < MIN_GA_VALIDATION_BARS:
            out.append(f"{self.ga_validation} GA validation bars (need >= {MIN_GA_VALIDATION_BARS})")
        return out

    def describe(self) -> str:
        return (
            f"{self.bars} bars: {self.train} train, {self.test} held out "
            f"({self.per_fold} per test block), {self.ga_validation} for GA validation"
        )


def window_budget(
    bars: int,
    *,
    train_fraction: float = DEFAULT_TRAIN_FRACTION,
    folds: int = 1,
    validation_fraction: float = GA["validation_fraction"].default,
    sample_fraction: float = 1.0,
    min_periods: int = MIN_TEST_BARS,
) -> WindowBudget:
    """The same cuts :func:`split_train_test`, :func:`walk_forward_folds` and the GA make, computed
    from a bar count alone, so a config can be refused before any run (``sample_fraction``: the
    share of the training part early GA generations score on)."""
    train = round(bars * train_fraction)
    test = bars - train
    sampled = int(train * sample_fraction)
    return WindowBudget(
        bars=bars,
        train=train,
        test=test,
        per_fold=test // max(folds, 1),
        ga_validation=int(sampled * validation_fraction),
        min_test=max(min_periods, MIN_TEST_BARS),
    )
