"""A/B statistics against scipy and closed forms, and the decision procedure's error rates: false
promotions on random walks (synthetic arms and Q-learning agents) and power on a planted pattern."""

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from rof_pipelines.core import abtest
from rof_pipelines.core.abtest import (
    DecisionRule,
    block_bootstrap_sharpe_diff,
    bootstrap_sharpe_diffs,
    decide,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    holm,
    mann_whitney,
    period_returns,
    probabilistic_sharpe_ratio,
    psr_from_stats,
    sharpe,
    welch_t,
)
from rof_pipelines.core.backtest import buy_and_hold
from rof_pipelines.core.kelly import KellyParams
from rof_pipelines.core.rl import EnvArrays, FeatureBins, RLParams, StateSpace, train

# --- Welch and Mann-Whitney ---------------------------------------------------------------------------


def test_welch_matches_the_closed_form() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(0.3, 1.0, 40)
    b = rng.normal(0.0, 2.5, 25)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))  # Welch-Satterthwaite
    p_greater = stats.t.sf(t, df)

    res = welch_t(a, b)
    assert res.statistic == pytest.approx(t, rel=1e-12)
    assert res.p_value == pytest.approx(p_greater, rel=1e-10)
    assert welch_t(a, b, "less").p_value == pytest.approx(1 - p_greater, rel=1e-10)
    assert welch_t(a, b, "two-sided").p_value == pytest.approx(2 * min(p_greater, 1 - p_greater), rel=1e-10)


def test_welch_without_variance_is_certain_or_silent() -> None:
    zeros = np.zeros(30)
    assert welch_t(zeros, zeros).p_value == 1.0
    assert welch_t(zeros + 0.001, zeros).p_value == 0.0
    assert welch_t(zeros, zeros + 0.001).p_value == 1.0


def test_mann_whitney_exact_small_sample() -> None:
    # No overlap: U = 9 and P(U >= 9) = 1 / C(6, 3) = 0.05 under the null.
    res = mann_whitney([4.0, 5.0, 6.0], [1.0, 2.0, 3.0])
    assert res.statistic == 9.0
    assert res.p_value == pytest.approx(0.05)
    assert mann_whitney([4.0, 5.0, 6.0], [1.0, 2.0, 3.0], "two-sided").p_value == pytest.approx(0.10)
    assert mann_whitney([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]).p_value == pytest.approx(1.0)


def test_mann_whitney_normal_approximation_with_ties_matches_the_formula() -> None:
    rng = np.random.default_rng(5)
    a = np.round(rng.normal(0.2, 1.0, 60), 1)  # rounding makes ties
    b = np.round(rng.normal(0.0, 1.0, 50), 1)
    n1, n2 = a.size, b.size
    ranks = stats.rankdata(np.concatenate([a, b]))
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    _, counts = np.unique(np.concatenate([a, b]), return_counts=True)
    n = n1 + n2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - (counts**3 - counts).sum() / (n * (n - 1))))
    p = stats.norm.sf((u1 - n1 * n2 / 2 - 0.5) / sigma)  # continuity correction
    res = mann_whitney(a, b)
    assert res.statistic == u1
    assert res.p_value == pytest.approx(p, rel=1e-9)


# --- bootstrap -------------------------------------------------------------------------------------------


def test_bootstrap_with_endless_blocks_only_rotates_so_the_sharpe_difference_never_moves() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.05, 1, 200), rng.normal(0, 1, 200)
    res = block_bootstrap_sharpe_diff(a, b, block=1e12, n_boot=50)
    assert res.diff == pytest.approx(sharpe(a) - sharpe(b))
    assert res.ci_low == pytest.approx(res.diff, abs=1e-12)
    assert res.ci_high == pytest.approx(res.diff, abs=1e-12)


def test_iid_bootstrap_spread_matches_the_sharpe_standard_error() -> None:
    # Independent normal arms: Var(SR_a - SR_b) = (1 + SR_a^2 / 2 + 1 + SR_b^2 / 2) / n (Lo 2002).
    rng = np.random.default_rng(2)
    n = 2000
    a, b = rng.normal(0.1, 1, n), rng.normal(0, 1, n)
    se = math.sqrt((2 + sharpe(a) ** 2 / 2 + sharpe(b) ** 2 / 2) / n)
    res = block_bootstrap_sharpe_diff(a, b, block=1, n_boot=4000, ci=0.6827)
    assert (res.ci_high - res.ci_low) / 2 == pytest.approx(se, rel=0.08)
    assert res.ci_low < res.diff < res.ci_high


def test_blocks_widen_the_interval_for_autocorrelated_returns() -> None:
    rng = np.random.default_rng(4)
    n, phi = 3000, 0.6
    noise = rng.normal(0, 1, (2, n))
    x = np.zeros((2, n))
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    iid = block_bootstrap_sharpe_diff(x[0], x[1], block=1, n_boot=1500)
    blocked = block_bootstrap_sharpe_diff(x[0], x[1], block=40, n_boot=1500)
    width = lambda r: r.ci_high - r.ci_low  # noqa: E731
    # The mean's long-run variance is (1 + phi) / (1 - phi) = 4 times the iid one: about 2x the width.
    assert width(blocked) / width(iid) == pytest.approx(2.0, rel=0.25)


def test_bootstrap_p_values_and_reproducibility() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(0, 1, 300), rng.normal(0, 1, 300)
    assert block_bootstrap_sharpe_diff(a, a, n_boot=200).p_value == 1.0
    strong = block_bootstrap_sharpe_diff(a + 1.0, a, n_boot=200)
    assert strong.p_value == pytest.approx(1 / 201)
    assert block_bootstrap_sharpe_diff(a + 1.0, a, n_boot=200, alternative="less").p_value == 1.0
    first = block_bootstrap_sharpe_diff(a, b, seed=9, n_boot=300)
    assert first == block_bootstrap_sharpe_diff(a, b, seed=9, n_boot=300)
    assert first != block_bootstrap_sharpe_diff(a, b, seed=10, n_boot=300)
    greater = first.p_value
    less = block_bootstrap_sharpe_diff(a, b, seed=9, n_boot=300, alternative="less").p_value
    assert greater + less == pytest.approx(1.0, abs=0.02)


def test_every_arm_sees_the_same_resamples_whatever_the_other_arms() -> None:
    rng = np.random.default_rng(7)
    base, x, y = rng.normal(0, 1, (3, 250))
    alone = bootstrap_sharpe_diffs({"x": x}, base, n_boot=300, seed=1)["x"]
    together = bootstrap_sharpe_diffs({"y": y, "x": x}, base, n_boot=300, seed=1)
    assert together["x"] == alone


def test_bootstrap_test_is_near_nominal_size() -> None:
    rng = np.random.default_rng(8)
    seeds = 300
    hits = sum(
        block_bootstrap_sharpe_diff(*rng.standard_t(5, (2, 250)) * 0.01, n_boot=300, seed=s).p_value <= 0.05
        for s in range(seeds)
    )
    assert 0.015 <= hits / seeds <= 0.09


def test_bootstrap_refuses_unpaired_or_tiny_input() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        block_bootstrap_sharpe_diff(np.zeros(10), np.zeros(11))
    with pytest.raises(ValueError, match="at least 3"):
        block_bootstrap_sharpe_diff(np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="block"):
        block_bootstrap_sharpe_diff(np.zeros(10), np.zeros(10), block=0.5)


# --- PSR and DSR -----------------------------------------------------------------------------------------


def test_psr_matches_the_closed_form() -> None:
    rng = np.random.default_rng(10)
    r = rng.standard_t(4, 500) * 0.01 + 0.001
    sr = r.mean() / r.std(ddof=1)
    c = r - r.mean()
    m2, m3, m4 = (c**2).mean(), (c**3).mean(), (c**4).mean()
    skew, kurt = m3 / m2**1.5, m4 / m2**2  # biased moments, Pearson kurtosis
    assert (skew, kurt) == pytest.approx((stats.skew(r), stats.kurtosis(r, fisher=False)), rel=1e-10)
    z = (sr - 0.02) * math.sqrt(r.size - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    assert probabilistic_sharpe_ratio(r, benchmark_sr=0.02) == pytest.approx(stats.norm.cdf(z), rel=1e-10)
    # Normal returns: the variance term is 1 + SR^2 / 2 (Lo 2002).
    assert psr_from_stats(0.1, 250, 0.0, 3.0) == pytest.approx(
        stats.norm.cdf(0.1 * math.sqrt(249) / math.sqrt(1 + 0.01 / 2))
    )


def test_dsr_reproduces_the_worked_example_of_bailey_and_lopez_de_prado() -> None:
    # 2014 paper: 100 trials, annualised V[SR] = 1/2, T = 1250 daily returns, skew -3, kurtosis 10,
    # annualised SR 2.5 -> SR0 = 0.1132 (daily) and DSR = 0.9004.
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    assert psr_from_stats(2.5 / math.sqrt(250), 1250, -3.0, 10.0, sr0) == pytest.approx(0.9004, abs=5e-4)


def test_expected_max_sharpe_agrees_with_simulated_maxima() -> None:
    rng = np.random.default_rng(11)
    for n_trials in (10, 100):
        simulated = rng.standard_normal((20_000, n_trials)).max(axis=1).mean()
        assert expected_max_sharpe(n_trials, 1.0) == pytest.approx(simulated, rel=0.03)
    assert expected_max_sharpe(1, 1.0) == 0.0
    assert expected_max_sharpe(100, 4.0) == pytest.approx(2 * expected_max_sharpe(100, 1.0))


def test_dsr_falls_as_the_number_of_trials_grows() -> None:
    rng = np.random.default_rng(12)
    r = rng.normal(0.1, 1.0, 500)
    values = [deflated_sharpe_ratio(r, n) for n in (1, 2, 5, 10, 100, 1_000, 1_000_000)]
    assert values[0] == pytest.approx(probabilistic_sharpe_ratio(r))
    assert all(later < earlier for earlier, later in itertools.pairwise(values))
    assert values[-1] < 0.5 < values[0]


def test_psr_is_calibrated_on_skill_less_returns() -> None:
    rng = np.random.default_rng(13)
    seeds = 1000
    hits = sum(probabilistic_sharpe_ratio(rng.normal(0, 0.01, 250)) > 0.95 for _ in range(seeds))
    assert 0.03 <= hits / seeds <= 0.075


# --- Holm -----------------------------------------------------------------------------------------------


def test_holm_against_a_hand_computed_example() -> None:
    # Sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> running max 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Capped at 1, and the running maximum carries past a smaller later product.
    assert holm([0.5, 0.01, 0.3]) == pytest.approx([0.6, 0.03, 0.6])
    assert holm([0.7, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([0.02]) == pytest.approx([0.02])
    assert holm([]).shape == (0,)


def test_holm_lies_between_raw_and_bonferroni() -> None:
    p = np.random.default_rng(14).uniform(0, 0.2, 12)
    adjusted = holm(p)
    assert (adjusted >= p).all()
    assert (adjusted <= np.minimum(1, p * p.size) + 1e-15).all()
    with pytest.raises(ValueError):
        holm([0.1, float("nan")])


# --- decide -------------------------------------------------------------------------------------------


def test_the_rule_is_documented_for_the_ui() -> None:
    assert "Decision rule" in abtest.__doc__
    assert "Holm" in abtest.__doc__ and "min_effect" in abtest.__doc__
    text = DecisionRule(alpha=0.01, min_effect=1.0).describe()
    assert "0.01" in text and "deflated Sharpe" in text


def test_decide_promotes_a_clear_winner_and_explains() -> None:
    rng = np.random.default_rng(20)
    active = rng.normal(0, 0.01, 400)
    good = active * 0.5 + rng.normal(0.002, 0.005, 400)
    noise = rng.normal(0, 0.01, 400)
    decision = decide(active, {"good": good, "noise": noise}, bars_per_year=8766, n_trials={"good": 20})
    assert decision.winner == "good"
    assert decision.arms["good"].promotable and not decision.arms["noise"].promotable
    assert decision.arms["good"].n_trials == 20 and decision.arms["noise"].n_trials == 1
    assert "promote good" in decision.reason
    json.dumps(decision.to_dict())  # metadata-ready


def test_decide_applies_holm_to_the_intersection_union_p_values() -> None:
    rng = np.random.default_rng(21)
    active = rng.normal(0, 0.01, 300)
    arms = {f"arm{i}": active + rng.normal(0.0005 * i, 0.01, 300) for i in range(4)}
    decision = decide(active, arms, DecisionRule(n_boot=500), bars_per_year=8766)
    raw = [decision.arms[name].p_value for name in arms]
    for name, p in zip(arms, holm(raw), strict=True):
        arm = decision.arms[name]
        assert arm.p_adjusted == pytest.approx(p)
        assert arm.p_value == max(arm.p_welch, arm.p_bootstrap, 1 - arm.dsr)


def test_significance_is_judged_on_the_holm_adjusted_p_value() -> None:
    # Two arms shifted so that Welch alone gives p = 0.03 each: significant raw, 0.06 after Holm.
    active = np.random.default_rng(24).normal(0, 0.01, 300)
    n = active.size
    shift = stats.t.isf(0.03, 2 * n - 2) * math.sqrt(2 * active.var(ddof=1) / n)
    rule = DecisionRule(tests=("welch",), use_dsr=False, min_effect=-math.inf)
    decision = decide(active, {"x": active + shift, "y": active + shift}, rule, bars_per_year=1)
    for arm in decision.arms.values():
        assert arm.p_value == pytest.approx(0.03)
        assert arm.p_adjusted == pytest.approx(0.06)
        assert not arm.significant
    assert decision.winner is None
    alone = decide(active, {"x": active + shift}, rule, bars_per_year=1)
    assert alone.winner == "x"


def test_decide_keeps_the_active_config_without_evidence_or_effect() -> None:
    rng = np.random.default_rng(22)
    active = rng.normal(0, 0.01, 500)
    same = decide(active, {"twin": active.copy()}, bars_per_year=8766)
    assert same.winner is None and "no challenger" in same.reason

    better = active + 0.003
    strict = decide(active, {"better": better}, DecisionRule(min_effect=1e6), bars_per_year=8766)
    assert strict.winner is None
    assert strict.arms["better"].significant and not strict.arms["better"].meets_effect
    assert "min_effect" in strict.arms["better"].reason

    short = decide(active[:10], {"better": better[:10]}, bars_per_year=8766)
    assert short.winner is None and "no decision" in short.reason
    with pytest.raises(ValueError, match="not the same bars"):
        decide(active, {"short": better[:-1]}, bars_per_year=8766)
    with pytest.raises(ValueError, match="bars_per_year"):
        decide(active, {"better": better})


def test_decide_takes_backtest_results_and_their_bar_rate() -> None:
    rng = np.random.default_rng(23)
    step = rng.normal(0.0, 0.01, 200)
    hold = buy_and_hold(step, 0.001, 8766.0)
    better = buy_and_hold(step + 0.004, 0.001, 8766.0)
    assert period_returns(hold) == pytest.approx(hold.equity[1:] / hold.equity[:-1] - 1)
    decision = decide(hold, {"better": better})
    assert decision.bars_per_year == 8766.0 and decision.winner == "better"
    # Walk-forward test folds are joined back to back; aggregation compounds.
    joined = period_returns([hold, better])
    assert joined.shape == (400,)
    hourly = period_returns(hold, aggregate=4)
    assert hourly[0] == pytest.approx(hold.equity[4] / hold.equity[0] - 1)
    assert hourly.shape == (50,)


def test_decision_rule_validates() -> None:
    with pytest.raises(ValueError):
        DecisionRule(alpha=0)
    with pytest.raises(ValueError):
        DecisionRule(tests=("welch", "sign"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        DecisionRule(tests=())


# --- calibration: false promotions on random walks, power on a planted pattern -------------------------

ALPHA = 0.05


def test_false_promotion_rate_with_identically_distributed_arms() -> None:
    """Null world: every arm has the active arm's distribution (fat tails, a shared market factor),
    one of them the best of 50 trials. The decision must promote in at most alpha of the seeds."""
    seeds, n = 300, 400
    rule = DecisionRule(alpha=ALPHA, n_boot=400)
    promoted = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        market = rng.standard_t(4, n) * 0.008
        active, champion, transfer, pareto = 0.6 * market + rng.standard_t(4, (4, n)) * 0.005
        decision = decide(
            active,
            {"ga_champion": champion, "transfer_champion": transfer, "pareto_2": pareto},
            rule,
            bars_per_year=8766,
            n_trials={"ga_champion": 50},
        )
        promoted += decision.promoted
    rate = promoted / seeds
    print(f"\nfalse-promotion rate, identically distributed arms: {rate:.3f} ({promoted}/{seeds})")
    assert rate <= ALPHA


def test_single_tests_are_not_vacuously_conservative() -> None:
    """Each test alone (Holm over three arms, no DSR) stays near its nominal level, so the low rate above
    comes from requiring agreement, not from a test that never rejects."""
    seeds, n = 300, 400
    rule = DecisionRule(alpha=ALPHA, n_boot=300)
    promoted = dict.fromkeys(("p_welch", "p_mann_whitney", "p_bootstrap"), 0)
    for seed in range(seeds):
        rng = np.random.default_rng(10_000 + seed)
        arms = rng.normal(0, 0.01, (4, n))
        reports = decide(arms[0], dict(zip("abc", arms[1:], strict=True)), rule, bars_per_year=1).arms
        for test in promoted:
            promoted[test] += bool((holm([getattr(arm, test) for arm in reports.values()]) <= ALPHA).any())
    rates = {test: count / seeds for test, count in promoted.items()}
    print(f"\nsingle-test family-wise false-promotion rates: {rates}")
    assert all(0.01 <= rate <= 0.08 for rate in rates.values()), rates


SEEN = StateSpace((FeatureBins("trend", (0.5,)),))  # the agent sees the regime (state 0 or 1)
BLIND = StateSpace(())  # one market state: the agent can only be always-in or always-out
N_BARS, K_TRIALS = 2000, 8


def _regime_market(seed: int, drift: float) -> tuple[np.ndarray, np.ndarray]:
    """Hidden regime that flips with probability 0.05 per bar; the step return drifts +drift in regime
    1 and -drift in regime 0 (drift 0: a random walk whose regime means nothing)."""
    rng = np.random.default_rng(seed)
    regime = (np.cumsum(rng.random(N_BARS) < 0.05) + rng.integers(0, 2)) % 2
    step = drift * (2 * regime[:-1] - 1) + 0.01 * rng.standard_normal(N_BARS - 1)
    return regime.astype(np.int32), step


def _env_split(space: StateSpace, mstate: np.ndarray, step: np.ndarray) -> tuple[EnvArrays, EnvArrays]:
    """The first 70 % of the bars train, the rest is held out (the bar between them is lost, as when
    the indicator frame is split)."""
    cut = round(N_BARS * 0.7)
    states = mstate if space.n_market_states > 1 else np.zeros_like(mstate)
    return (
        EnvArrays.from_arrays(states[:cut], step[: cut - 1], space),
        EnvArrays.from_arrays(states[cut:], step[cut:], space),
    )


def _experiment(seed: int, drift: float, rule: DecisionRule) -> abtest.Decision:
    """Active: the blind agent. GA champion: the best of K_TRIALS seeing agents by *training* Sharpe.
    Transfer champion: another seeing agent. Baseline: buy-and-hold. All on the same held-out bars."""
    mstate, step = _regime_market(seed, drift)
    base = RLParams(episodes=10, kelly=KellyParams(use_kelly=False), seed=seed)
    train_blind, test_blind = _env_split(BLIND, mstate, step)
    active = train(train_blind, base).evaluate(test_blind)
    train_seen, test_seen = _env_split(SEEN, mstate, step)
    rng = np.random.default_rng(seed + 50_000)
    trials = []
    for k in range(K_TRIALS):
        params = base.replace(
            seed=seed * 100 + k, alpha=float(rng.uniform(0.05, 0.5)), gamma=float(rng.uniform(0.5, 0.95))
        )
        agent = train(train_seen, params)
        trials.append((sharpe(agent.evaluate(train_seen, baseline=False).returns), agent))
    champion = max(trials, key=lambda item: item[0])[1].evaluate(test_seen)
    transfer = train(train_seen, base.replace(seed=seed + 777)).evaluate(test_seen)
    arms = {"ga_champion": champion, "transfer_champion": transfer, "buy_and_hold": champion.baseline}
    return decide(active, arms, rule, n_trials={"ga_champion": K_TRIALS})


@pytest.mark.slow
def test_q_learning_agents_on_random_walks_are_rarely_promoted() -> None:
    seeds = 200
    rule = DecisionRule(alpha=ALPHA, n_boot=500)
    promoted = sum(_experiment(seed, 0.0, rule).promoted for seed in range(seeds))
    rate = promoted / seeds
    print(f"\nfalse-promotion rate, Q-learning agents on random walks: {rate:.3f} ({promoted}/{seeds})")
    assert rate <= ALPHA


@pytest.mark.slow
def test_a_planted_pattern_is_found_and_promoted() -> None:
    seeds = 100
    rule = DecisionRule(alpha=ALPHA, n_boot=1000)
    strong = 0
    for seed in range(1000, 1000 + seeds):
        decision = _experiment(seed, 0.004, rule)
        if decision.winner in ("ga_champion", "transfer_champion"):
            strong += decision.arms[decision.winner].p_adjusted < 0.01
    rate = strong / seeds
    print(f"\ntrue-promotion rate (p_adj < 0.01), planted regime pattern: {rate:.3f} ({strong}/{seeds})")
    assert rate >= 0.9
