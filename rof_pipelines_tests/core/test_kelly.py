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
    assert got[:2].tolist() == [0.05, 0.05]  # warm-up at the default stake
    assert got[2] == pytest.approx(1.0)  # two winners within 10 minutes, no losses
    # at minute 25 the window (15, 25] holds one earlier trade (closed at 20): warm-up again
    assert got[3] == 0.05
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


# --- learning the size: warm-up stake, paper trades, no look-ahead ------------------------------------

WIN_LOSS_EDGE = (0.01, 0.01, -0.01, 0.01, -0.01)  # W = 0.6, R = 1 -> f* = 0.2
WIN_LOSS_NO_EDGE = (0.01, -0.01, -0.01, 0.01, -0.01)  # W = 0.4, R = 1 -> f* = -0.2


def one_bar_trades(outcomes: np.ndarray, kelly: KellyParams) -> tuple[TrainedAgent, EnvArrays]:
    """An agent that buys in market state 0 and sells in state 1, on bars alternating 0, 1, without
    costs: trade k earns exactly ``outcomes[k]`` over the one bar it is open."""
    space = StateSpace((FeatureBins("rsi", (50.0,)),))
    q = np.zeros((space.n_states, 3))
    q[0 * 2 + 0, 1] = 1.0  # state 0, flat -> buy
    q[1 * 2 + 1, 2] = 1.0  # state 1, long -> sell
    params = RLParams(fee=0.0, slippage=0.0, kelly=kelly)
    agent = TrainedAgent(q, np.zeros(q.shape, np.uint32), space, params, *[np.zeros(1)] * 3)
    n = 2 * len(outcomes) + 1
    step_ret = np.zeros(n - 1)
    step_ret[0::2] = outcomes
    return agent, EnvArrays.from_arrays(np.arange(n) % 2, step_ret, space)


def test_config_defaults_stake_a_small_warm_up_fraction():
    from rof_pipelines.settings import load_settings

    assert KellyParams().warmup_fraction == KellyConfig().warmup_fraction == 0.05
    configured = KellyParams.from_settings(load_settings(environ={}).ai_config.kelly)
    assert (configured.warmup_fraction, configured.min_trades, configured.window_trades) == (0.05, 20, 200)


def test_an_edge_earns_during_the_warm_up_and_reaches_its_kelly_fraction_within_the_window():
    kelly = KellyParams()  # window 200 trades, 20 to warm up at 0.05, cap 0.25
    agent, env = one_bar_trades(np.tile(WIN_LOSS_EDGE, 60), kelly)
    result = agent.evaluate(env, baseline=False)
    sizes = result.trades.size
    assert len(sizes) == 300
    assert sizes[:20].tolist() == [0.05] * 20  # warm-up: a small stake, not nothing
    assert result.equity[40] > 1.0  # so the warm-up already shows the edge in the equity
    np.testing.assert_allclose(sizes, rolling_kelly(result.trades.ret, kelly), rtol=1e-12)
    assert (sizes[20:] > 0.15).all() and (sizes[20:] <= 0.25).all()
    assert sizes[200:] == pytest.approx(0.2)  # a full window of the 3-in-5 record: f* = 0.6 - 0.4 / 1
    assert result.kelly_fraction_next == pytest.approx(0.2)


def test_a_negative_edge_sizes_zero_after_the_warm_up_and_keeps_its_record_on_paper():
    kelly = KellyParams()
    agent, env = one_bar_trades(np.tile(WIN_LOSS_NO_EDGE, 60), kelly)
    result = agent.evaluate(env, baseline=False)
    sizes = result.trades.size
    assert len(sizes) == 300  # trades go on being taken and recorded ...
    assert sizes[:20].tolist() == [0.05] * 20
    assert sizes[20:].tolist() == [0.0] * 280  # ... at size 0: nothing more is risked
    assert (result.equity[40:] == result.equity[40]).all() and result.equity[40] < 1.0
    assert result.trades.ret[20:].tolist() == pytest.approx(np.tile(WIN_LOSS_NO_EDGE, 56).tolist())
    assert result.kelly_fraction_next == 0.0


def test_a_losing_streak_stops_and_a_recovering_record_resumes_sizing():
    """The record keeps paper trades, so sizing comes back once the window shows an edge again."""
    kelly = KellyParams(window_trades=20, min_trades=10)
    outcomes = np.r_[np.tile(WIN_LOSS_NO_EDGE, 6), np.tile(WIN_LOSS_EDGE, 12)]
    agent, env = one_bar_trades(outcomes, kelly)
    sizes = agent.evaluate(env, baseline=False).trades.size
    assert sizes[10:30].max() == 0.0  # the losing window
    assert sizes[-1] == pytest.approx(0.2)  # twenty paper and real trades of the 3-in-5 record later


def test_no_look_ahead_a_size_uses_only_trades_closed_before_it_opens():
    kelly = KellyParams(window_trades=30, min_trades=5, max_fraction=1.0)
    rng = np.random.default_rng(11)
    outcomes = rng.normal(0.001, 0.01, 120)
    agent, env = one_bar_trades(outcomes, kelly)
    base = agent.evaluate(env, baseline=False).trades.size
    for k in (0, 5, 37, 90, 119):
        changed = outcomes.copy()
        changed[k:] = rng.normal(-0.02, 0.03, len(outcomes) - k)  # trade k and every later one differ
        agent_k, env_k = one_bar_trades(changed, kelly)
        sizes = agent_k.evaluate(env_k, baseline=False).trades.size
        assert sizes[: k + 1].tolist() == base[: k + 1].tolist()
        assert (
            rolling_kelly(changed, kelly)[: k + 1].tolist()
            == rolling_kelly(outcomes, kelly)[: k + 1].tolist()
        )
    # By time: a trade still open when another one opens does not count for it.
    minute = 60_000_000_000
    by_time = KellyParams(window_trades=None, window_seconds=3600.0, min_trades=1, max_fraction=1.0)
    record = [0.05, -0.01, 0.02]
    exits = np.array([30, 5, 40]) * minute  # trade 0 closes after trades 1 and 2 opened
    entries = np.array([0, 2, 10]) * minute
    got = rolling_kelly(record, by_time, exit_times=exits, entry_times=entries)
    assert got[1] == 0.05 and got[2] == 0.0  # trade 2 sees only trade 1 (a loss), not trade 0's win
