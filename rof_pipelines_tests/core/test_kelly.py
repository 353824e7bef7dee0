"""Kelly sizing: the closed form, the cap, the warm-up rule and the rolling windows."""

import numpy as np
import pytest

from rof_pipelines.core.kelly import KellyParams, kelly_fraction, rolling_kelly
from rof_pipelines.core.rl import FeatureBins, RLParams, StateSpace, TrainedAgent
from rof_pipelines.core.rl.env import EnvArrays
from rof_pipelines.settings import KellyConfig


def test_losing_record_gives_zero():
    assert kelly_fraction([-0.01, -0.02, -0.005]) == 0.0
    # Wins exist but the edge is negative: W = 0.5, R = 0.5 -> 0.5 - 0.5 / 0.5 = -0.5 -> 0.
    assert kelly_fraction([0.01, -0.02, 0.01, -0.02]) == 0.0
    assert kelly_fraction([]) == 0.0


def test_matches_the_closed_form_on_a_known_record():
    record = [0.10, 0.10, 0.10, -0.05, -0.05]  # W = 0.6, R = 0.10 / 0.05 = 2
    assert kelly_fraction(record) == pytest.approx(0.6 - 0.4 / 2)
    record = [0.03, -0.01, 0.02, -0.02, 0.01, 0.0]  # the 0.0 trade is neither win nor loss
    w, r = 3 / 5, (0.06 / 3) / (0.03 / 2)
    assert kelly_fraction(record) == pytest.approx(w - (1 - w) / r)


def test_cap_is_respected():
    record = [0.10, 0.10, 0.10, -0.05, -0.05]
    assert kelly_fraction(record, max_fraction=0.25) == 0.25
    assert kelly_fraction([0.01, 0.02], max_fraction=0.3) == 0.3  # no losses: W = 1, capped


def test_rolling_by_trades_with_warm_up():
    params = KellyParams(window_trades=4, min_trades=3, max_fraction=1.0, warmup_fraction=0.05)
    record = [-0.1, -0.1, -0.1, -0.1, 0.2, 0.2, 0.2, -0.1, 0.2]
    got = rolling_kelly(record, params)
    assert got[:3].tolist() == [0.05] * 3  # fewer than 3 closed trades before them
    assert got[3] == 0.0 and got[4] == 0.0  # only losers in the window
    # trade 8 sees trades 4..7: W = 3/4, R = 0.2 / 0.1 = 2 -> 0.75 - 0.25 / 2
    assert got[8] == pytest.approx(0.625)
    assert rolling_kelly(record, KellyParams(use_kelly=False)).tolist() == [1.0] * len(record)


def test_rolling_by_time():
    minute = 60_000_000_000
    params = KellyParams(window_trades=None, window_seconds=600.0, min_trades=2, max_fraction=1.0)
    record = [0.1, 0.1, -0.1, 0.1]
    exits = np.array([0, 1, 20, 21]) * minute
    entries = np.array([0, 1, 2, 25]) * minute
    got = rolling_kelly(record, params, exit_times=exits, entry_times=entries)
    assert got[:2].tolist() == [0.0, 0.0]  # warm-up
    assert got[2] == pytest.approx(1.0)  # two winners within 10 minutes, no losses
    # at minute 25 the window (15, 25] holds the trades closed at 20 and 21: W = 0.5, R = 1 -> 0
    assert got[3] == 0.0
    with pytest.raises(ValueError, match="exit_times"):
        rolling_kelly(record, params)


def test_params_validation_and_settings():
    with pytest.raises(ValueError, match="exactly one"):
        KellyParams(window_trades=None)
    with pytest.raises(ValueError, match="max_fraction"):
        KellyParams(max_fraction=1.5)
    with pytest.raises(ValueError, match="warmup_fraction"):
        KellyParams(max_fraction=0.1, warmup_fraction=0.2)
    by_time = KellyParams.from_settings(KellyConfig(window_type="time", window_size="2h"))
    assert by_time.window_seconds == 7200 and by_time.window_trades is None
    by_trades = KellyParams.from_settings(KellyConfig(window_size=50, max_fraction=0.1))
    assert by_trades.window_trades == 50 and by_trades.max_fraction == 0.1


def test_evaluation_sizes_trades_like_rolling_kelly():
    """The compiled sizing inside the backtest agrees with the plain rolling computation."""
    rng = np.random.default_rng(3)
    space = StateSpace((FeatureBins("rsi", (1.0, 2.0, 3.0)),))
    q = rng.normal(0, 1, (space.n_states, 3))
    kelly = KellyParams(window_trades=6, min_trades=4, max_fraction=0.6, warmup_fraction=0.02)
    agent = TrainedAgent(q, np.zeros(q.shape, np.uint32), space, RLParams(kelly=kelly), *[np.zeros(1)] * 3)
    n = 4000
    env = EnvArrays.from_arrays(rng.integers(0, 4, n), rng.normal(0.0003, 0.004, n - 1), space)
    result = agent.evaluate(env)
    assert len(result.trades) > 50
    expected = rolling_kelly(result.trades.ret, kelly)
    np.testing.assert_allclose(result.trades.size, expected, rtol=1e-12)
    assert (result.trades.size > 0.02).any() and (result.trades.size <= 0.6).all()
    assert result.kelly_fraction_next == pytest.approx(
        rolling_kelly(np.r_[result.trades.ret, 0.0], kelly)[-1], rel=1e-12
    )
    # History from an earlier period counts toward the window and the warm-up.
    primed = agent.evaluate(env, kelly_history=np.array([0.01, -0.005, 0.02, 0.01]))
    assert primed.trades.size[0] == pytest.approx(rolling_kelly([0.01, -0.005, 0.02, 0.01, 0.0], kelly)[-1])
