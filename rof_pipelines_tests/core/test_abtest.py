"""A/B statistics against scipy and closed forms, the decision rule's behaviour, and its summary text.
The rule's error rates (false promotions, power) are measured in test_calibration.py."""

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
    decision_summary,
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
from rof_pipelines.core.experiment import BASELINE

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


# --- decision summary -----------------------------------------------------------------------------------


def test_decision_summary_says_what_changed() -> None:
    assert decision_summary(None, False, None) == "keep active: no challenger beat it"
    assert (
        decision_summary("ga_champion", True, None, version=3) == "promoted ga_champion as active config v3"
    )
    assert decision_summary("ga_champion", True, None) == "promoted ga_champion"
    lost = decision_summary("ga_champion", False, "optimistic-lock conflict on market=...")
    assert lost.startswith("ga_champion won, not promoted") and "(conflict)" in lost
    off = decision_summary("pareto_1", False, None, note="auto-promotion is off (ab_tests.promote)")
    assert off == "pareto_1 won, not promoted: auto-promotion is off (ab_tests.promote)"


def test_a_buy_and_hold_win_reads_as_a_warning_not_a_failed_promotion() -> None:
    text = decision_summary(BASELINE, False, None)
    assert text == "buy-and-hold beat every config: keep active (a yardstick is never promoted)"
    assert "not promoted" not in text and "promote buy_and_hold" not in text
    assert abtest.YARDSTICK == BASELINE  # the arm name the A/B asset gives buy-and-hold
    rng = np.random.default_rng(25)
    active = rng.normal(0, 0.01, 400)
    arms = {BASELINE: active * 0.5 + rng.normal(0.002, 0.005, 400), "ga_champion": rng.normal(0, 0.01, 400)}
    decision = decide(active, arms, DecisionRule(n_boot=300), bars_per_year=8766)
    assert decision.winner == BASELINE and decision.arms[BASELINE].promotable  # it does win the test
    assert decision.reason.startswith("buy_and_hold beat the active config")
    assert decision.reason.endswith("keep active (a yardstick is never promoted)")
    assert "promote buy_and_hold" not in decision.reason
