"""The state-feature registry: the built-ins keep the state contract (order, settings, defaults), the
settings objects built on it behave like the frozen dataclasses they replaced, and one registration is
all a new feature needs for the RL state space and the optimiser's fitness path to use it."""

import pickle
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from rof_pipelines.core.features import (
    FixedEdges,
    QuantileBins,
    Rewindow,
    StateFeature,
    feature_names,
    register,
    state_feature,
    unregister,
    window_genes,
)
from rof_pipelines.core.ga.fitness import FULL, build_fitness_data, evaluate_genome, fit_state_space
from rof_pipelines.core.ga.space import FeatureWindows, SearchSpace
from rof_pipelines.core.indicators import IndicatorWindows, build_indicator_frame
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import GeneratorConfig, clean_quotes, generate_quotes, resample_bars
from rof_pipelines.core.rl.agent import RLParams, prepare
from rof_pipelines.core.rl.env import BinSpec, StateSpace, build_env


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    quotes = generate_quotes(
        Market.parse("test:FTUSDT"), start, start + timedelta(hours=12), config=GeneratorConfig(), seed=5
    )
    clean, _ = clean_quotes(quotes)
    return build_indicator_frame(resample_bars(clean, timedelta(minutes=1)))


def _range_position(bars, window: int, windows: IndicatorWindows) -> np.ndarray:
    """Where the close sits in the high-low range of the last ``window`` bars (1: the bar's own)."""
    high = pd.Series(bars.high).rolling(window).max().to_numpy()
    low = pd.Series(bars.low).rolling(window).min().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return (bars.close - low) / (high - low)


RANGE_POSITION = StateFeature(
    "range_position",
    ("high", "low", "close"),
    QuantileBins("range_bins", 1),  # off unless a BinSpec asks for it
    raw=lambda f: (f["close"] - f["low"]) / (f["high"] - f["low"]),
    window=Rewindow("range", "range_window", _range_position),
    doc="test only: the close's place in its bar's range",
)


@pytest.fixture
def range_feature():
    """The throw-away feature, registered for one test only; no other module knows it."""
    register(RANGE_POSITION)
    try:
        yield RANGE_POSITION
    finally:
        unregister(RANGE_POSITION.name)


# --- the built-ins are the state contract --------------------------------------------------------------


def test_builtin_features_keep_their_order_settings_and_defaults():
    assert feature_names() == ("rsi", "macd", "bb", "vol", "trend")
    assert BinSpec().to_dict() == {
        "rsi_edges": [30.0, 70.0],
        "macd_levels": 2,
        "bb_edges": [0.0, 0.5, 1.0],
        "vol_bins": 3,
        "trend_levels": 1,
    }
    assert {gene: w.key for gene, w in window_genes().items()} == {
        "rsi_window": "rsi",
        "bb_window": "bb",
        "atr_window": "atr",
    }
    assert state_feature("macd").columns == ("macd_hist", "close")
    with pytest.raises(ValueError, match="unknown feature 'nope'"):
        state_feature("nope")


def test_registering_a_clash_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register(StateFeature("rsi", ("rsi",), FixedEdges("other_edges", (1.0,))))
    with pytest.raises(ValueError, match="already used"):
        register(StateFeature("rsi2", ("rsi",), FixedEdges("rsi_edges", (1.0,))))
    with pytest.raises(ValueError, match="give it a raw function"):
        StateFeature("two", ("high", "low"), QuantileBins("two_bins", 1))
    assert feature_names() == ("rsi", "macd", "bb", "vol", "trend")


def test_bin_spec_behaves_like_a_frozen_value():
    spec = BinSpec(rsi_edges=[25, 60], vol_bins=4)
    assert spec.rsi_edges == (25.0, 60.0) and spec.vol_bins == 4 and spec.macd_levels == 2
    assert BinSpec(macd_levels=2) == BinSpec() and hash(BinSpec(macd_levels=2)) == hash(BinSpec())
    assert spec.replace(vol_bins=3) == BinSpec(rsi_edges=(25.0, 60.0)) != spec
    assert BinSpec.from_dict(spec.to_dict()) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert "vol_bins=4" in repr(spec)
    with pytest.raises(AttributeError):
        spec.vol_bins = 5
    with pytest.raises(TypeError, match="unknown settings"):
        BinSpec(obv_bins=3)
    with pytest.raises(ValueError, match="strictly increasing"):
        BinSpec(bb_edges=(1.0, 0.0))
    with pytest.raises(ValueError, match="vol_bins must be >= 1"):
        BinSpec(vol_bins=0)
    windows = FeatureWindows(atr=9, rsi=10)
    assert windows.to_dict() == {"rsi": 10, "atr": 9} and windows.bb is None
    assert FeatureWindows(rsi=None) == FeatureWindows() and pickle.loads(pickle.dumps(windows)) == windows


# --- one registration reaches the state space and the optimiser -------------------------------------


def test_a_registered_feature_becomes_part_of_the_rl_state_space(frame, range_feature):
    assert BinSpec().range_bins == 1  # its default leaves it out
    assert "range_position" not in [f.name for f in StateSpace.fit(frame).features]

    space = StateSpace.fit(frame, BinSpec(range_bins=3))
    assert [f.name for f in space.features] == ["rsi", "macd", "bb", "vol", "trend", "range_position"]
    ranged = space.features[-1]
    assert ranged.n_bins == 3
    assert space.n_market_states == StateSpace.fit(frame).n_market_states * 3
    assert StateSpace.from_json(space.to_json()) == space

    env = build_env(frame, space)
    part = frame.iloc[len(frame) - env.n_bars :]
    raw = ((part["close"] - part["low"]) / (part["high"] - part["low"])).replace([np.inf, -np.inf], np.nan)
    expected = np.searchsorted(np.asarray(ranged.edges), raw.ffill().to_numpy(), side="right")
    assert np.array_equal(env.mstate % 3, expected)  # the last feature is the lowest digit


def test_a_registered_feature_reaches_the_fitness_path(frame, range_feature):
    base = RLParams(episodes=2, seed=1, bins=BinSpec(range_bins=3))
    genes = SearchSpace.from_mapping({"alpha": {"type": "float", "low": 0.1, "high": 0.3}})
    data = build_fitness_data(frame, base, genes, validation_fraction=0.3)
    s = data.slices[FULL]
    assert "range_position" in s.features

    fit_env, val_env = data.envs(FULL, base.bins, FeatureWindows(), False)
    assert fit_env.state_space.features[-1].name == "range_position"
    reference = prepare(frame.iloc[: s.fit_rows], base)  # the RL module's own path, pandas
    assert fit_env.state_space == reference.state_space
    assert np.array_equal(fit_env.mstate, reference.mstate)
    assert np.array_equal(val_env.mstate, build_env(frame.iloc[s.fit_rows :], reference.state_space).mstate)
    raw = {k: v[: s.fit_rows] for k, v in s.features.items()}
    twin = fit_state_space(raw, s.open[: s.fit_rows], s.close[: s.fit_rows], base.bins, False)
    assert twin == fit_env.state_space

    genome = genes.from_unit((0.5,))
    assert genes.decode(genome, base).params.bins.range_bins == 3  # the base's setting survives genes
    objectives = evaluate_genome(data, FULL, genome)
    assert len(objectives) == 3 and all(np.isfinite(objectives))
    assert evaluate_genome(data, FULL, genome) == objectives

    # its window: 1 bar is the frame's own value; another window re-computes it on the slice
    assert np.allclose(data.feature(FULL, "range_position", 1), s.features["range_position"], equal_nan=True)
    wide_fit, _ = data.envs(FULL, base.bins, FeatureWindows(range=30), False)
    assert wide_fit.state_space.features[-1].edges != fit_env.state_space.features[-1].edges
    revived = pickle.loads(pickle.dumps(data))  # what a spawned worker gets
    assert (
        revived.envs(FULL, base.bins, FeatureWindows(range=30), False)[0].state_space == wide_fit.state_space
    )


def test_the_registry_is_back_to_the_builtins_after_a_test():
    assert feature_names() == ("rsi", "macd", "bb", "vol", "trend")
    assert BinSpec().to_dict().keys() == {"rsi_edges", "macd_levels", "bb_edges", "vol_bins", "trend_levels"}
