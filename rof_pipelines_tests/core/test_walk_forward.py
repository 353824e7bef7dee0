"""Walk-forward folds: the same held-out part as split_train_test, train strictly before test, embargo."""

import numpy as np
import pandas as pd
import pytest

from rof_pipelines.core.windows import Fold, split_train_test, walk_forward_folds


def bars(n: int, freq: str = "1min") -> pd.DataFrame:
    idx = pd.date_range("2024-01-01", periods=n, freq=freq, tz="UTC", name="ts")
    return pd.DataFrame({"close": np.arange(1.0, n + 1.0)}, index=idx)


def test_split_train_test_is_unchanged() -> None:
    split = split_train_test(bars(1440))
    assert len(split.train) == 1008 and len(split.test) == 432  # 0.7 * 1440 rounds, not truncates
    assert split.boundary == split.test.index[0]


@pytest.mark.parametrize(("n", "fraction"), [(1440, 0.7), (1000, 0.5), (37, 0.8)])
def test_one_fold_without_embargo_is_split_train_test(n: int, fraction: float) -> None:
    frame = bars(n)
    (fold,) = walk_forward_folds(frame, 1, fraction)
    split = split_train_test(frame, fraction)
    pd.testing.assert_frame_equal(fold.train, split.train)
    pd.testing.assert_frame_equal(fold.test, split.test)
    assert fold.number == 0 and isinstance(fold, Fold)


def test_expanding_folds_tile_the_held_out_part_and_train_on_everything_before() -> None:
    frame = bars(1000)
    folds = walk_forward_folds(frame, 4, 0.6)
    held = split_train_test(frame, 0.6).test
    pd.testing.assert_frame_equal(pd.concat([f.test for f in folds]), held)
    assert [len(f.test) for f in folds] == [100, 100, 100, 100]
    for fold in folds:
        assert fold.train.index.max() < fold.test.index.min()  # strictly before
        assert fold.train.index[0] == frame.index[0]
        assert len(fold.train) == frame.index.get_loc(fold.test.index[0])
        later = pd.concat([f.test for f in folds if f.number >= fold.number])
        assert fold.train.index.intersection(later.index).empty  # no own or later test bar in training
    assert [f.number for f in folds] == [0, 1, 2, 3]


def test_uneven_blocks_differ_by_at_most_one_bar() -> None:
    sizes = [len(f.test) for f in walk_forward_folds(bars(1003), 3, 0.7)]
    assert sum(sizes) == 1003 - round(1003 * 0.7)
    assert max(sizes) - min(sizes) <= 1


def test_rolling_folds_keep_the_first_training_length() -> None:
    frame = bars(1000)
    folds = walk_forward_folds(frame, 4, 0.6, scheme="rolling")
    assert {len(f.train) for f in folds} == {600}
    starts = [frame.index.get_loc(f.train.index[0]) for f in folds]
    assert starts == [0, 100, 200, 300]
    for fold in folds:
        assert fold.train.index.max() < fold.test.index.min()


@pytest.mark.parametrize("scheme", ["expanding", "rolling"])
def test_embargo_in_bars_leaves_a_gap(scheme: str) -> None:
    frame = bars(1000)
    for fold in walk_forward_folds(frame, 3, 0.7, embargo=15, scheme=scheme):  # type: ignore[arg-type]
        gap = frame.index.get_loc(fold.test.index[0]) - frame.index.get_loc(fold.train.index[-1]) - 1
        assert gap == 15


def test_embargo_as_a_time_span() -> None:
    frame = bars(500, freq="5min")
    for fold in walk_forward_folds(frame, 2, 0.7, embargo=pd.Timedelta("1h")):
        assert fold.train.index[-1] < fold.test.index[0] - pd.Timedelta("1h")
        assert fold.train.index[-1] + pd.Timedelta("5min") >= fold.test.index[0] - pd.Timedelta("1h")


def test_unsorted_input_is_ordered_first() -> None:
    frame = bars(300)
    shuffled = frame.sample(frac=1.0, random_state=0)
    for a, b in zip(walk_forward_folds(shuffled, 3), walk_forward_folds(frame, 3), strict=True):
        pd.testing.assert_frame_equal(a.train, b.train, check_freq=False)
        pd.testing.assert_frame_equal(a.test, b.test, check_freq=False)


def test_bad_requests_are_refused() -> None:
    frame = bars(100)
    with pytest.raises(ValueError, match="n_folds"):
        walk_forward_folds(frame, 0)
    with pytest.raises(ValueError, match="test blocks"):
        walk_forward_folds(frame, 20)  # 30 held-out bars cannot make 20 blocks of 2
    with pytest.raises(ValueError, match="embargo"):
        walk_forward_folds(frame, 2, embargo=-1)
    with pytest.raises(ValueError, match="train on"):
        walk_forward_folds(frame, 2, embargo=70)
    with pytest.raises(ValueError, match="scheme"):
        walk_forward_folds(frame, 2, scheme="anchored")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="DatetimeIndex"):
        walk_forward_folds(frame.reset_index(drop=True), 2, embargo=pd.Timedelta("1min"))
    with pytest.raises(ValueError, match="train_fraction"):
        walk_forward_folds(frame, 2, 1.0)
