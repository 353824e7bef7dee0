"""A/B tests of trading configurations on held-out bars, and the rule that promotes a winner.

Every arm (the market's active config, challengers such as the GA champion, the transfer-seeded
champion, buy-and-hold) is evaluated on the *same* held-out bars with the same costs, so the arms give
paired per-period return series ``r_k = equity[k] / equity[k - 1] - 1``. Sharpe ratios below are
per period (``mean / std(ddof=1)``, risk-free 0) unless they say "annualised" (``x sqrt(bars/year)``).

The tests, each one-sided "challenger better than active" unless asked otherwise:

* Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``) on the means, and Mann-Whitney U
  (``scipy.stats.mannwhitneyu``) on the distributions. Both treat the two series as independent
  samples of independent periods. Arms run on the same bars are usually positively correlated, which
  makes them conservative; serial dependence of returns could make them liberal, which the bootstrap
  covers. Mann-Whitney asks whether one arm's returns tend to be larger period by period: a strategy
  that is flat half the time (many zero returns) can fail it while earning more, and many small wins
  with rare large losses can pass it while losing money. It is reported, not required by default.
* A stationary block bootstrap (Politis & Romano 1994: blocks of geometric length, mean ``block``,
  wrapping around) of the *paired* periods, resampling the same indices for every arm, so it keeps
  the cross-arm correlation and short-range serial dependence. It gives a percentile confidence
  interval of the Sharpe difference and a p-value from the bootstrap distribution re-centred on the
  null (``P*(d* - d >= d)``, Hall & Wilson 1991).
* The probabilistic Sharpe ratio (Bailey & López de Prado 2012),
  ``PSR(SR*) = Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - skew SR + (kurt - 1) / 4 SR^2))`` with the sample
  skewness and the (Pearson, normal = 3) kurtosis, and the deflated Sharpe ratio (Bailey & López de
  Prado 2014): the PSR against ``SR0 = sqrt(V) ((1 - g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e)))``, the
  Sharpe ratio the best of ``N`` skill-less trials is expected to reach (``g`` Euler-Mascheroni, ``V``
  the variance of the trials' Sharpe estimates; by default ``1 / (T - 1)``, the sampling variance of
  a zero Sharpe estimate from ``T`` periods). ``1 - DSR`` is the p-value of "true Sharpe <= SR0".
* Holm's step-down adjustment across the challengers (family-wise error <= alpha, any dependence).

Decision rule (quoted by the UI and the README)::

    A challenger replaces the active configuration only if, on the held-out bars,
      1. every required test (default: Welch's t-test on the mean return and the block bootstrap of
         the Sharpe-ratio difference; Mann-Whitney U can be added) finds it better than the active
         configuration, one-sided; its p-value is the largest of theirs (an intersection-union test,
         valid at level alpha);
      2. its deflated Sharpe ratio is significant too (1 - DSR joins that maximum), so its Sharpe
         ratio exceeds what the best of the configurations the optimiser tried would reach by luck;
      3. that p-value, Holm-adjusted across all challengers, is at most alpha (default 0.05); and
      4. its annualised Sharpe ratio exceeds the active one's by at least min_effect (default 0.5).
    Among challengers that pass, the one with the largest Sharpe difference wins; if none passes, the
    active configuration stays. Fewer than min_periods held-out periods: no decision, it stays.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numba import njit
from scipy import special, stats

from rof_pipelines.core.backtest import BacktestResult
from rof_pipelines.core.defaults import DECISION
from rof_pipelines.core.rl.agent import seed_state

Alternative = Literal["greater", "less", "two-sided"]
TestName = Literal["welch", "mann_whitney", "bootstrap"]
EULER_GAMMA = float(np.euler_gamma)
ALL_TESTS: tuple[TestName, ...] = ("welch", "mann_whitney", "bootstrap")
DEFAULT_TESTS: tuple[TestName, ...] = DECISION["tests"].default
YARDSTICK = "buy_and_hold"  # the baseline arm's name (core/experiment.BASELINE): never promoted
_U53 = 1.0 / 9007199254740992.0  # 2**-53

ArmData = np.ndarray | Sequence[float] | BacktestResult | Sequence[BacktestResult]


# --- per-period returns -------------------------------------------------------------------------------


def period_returns(results: BacktestResult | Sequence[BacktestResult], aggregate: int = 1) -> np.ndarray:
    """Per-period returns of one backtest, or of several (walk-forward test folds) back to back.

    ``aggregate`` compounds non-overlapping runs of that many steps into one period (a trailing
    partial run is dropped), e.g. minutes into hours, which thins out the zeros of a mostly-flat arm.
    """
    if isinstance(results, BacktestResult):
        results = [results]
    if aggregate < 1:
        raise ValueError(f"aggregate must be >= 1, got {aggregate}")
    parts = [np.asarray(r.returns, dtype=np.float64) for r in results]
    steps = np.concatenate(parts) if parts else np.empty(0)
    if aggregate == 1:
        return steps
    usable = steps.shape[0] // aggregate * aggregate
    return np.prod(1.0 + steps[:usable].reshape(-1, aggregate), axis=1) - 1.0


def _returns_of(data: ArmData) -> np.ndarray:
    if isinstance(data, BacktestResult):
        return period_returns(data)
    if isinstance(data, Sequence) and data and isinstance(data[0], BacktestResult):
        return period_returns(list(data))  # type: ignore[arg-type]
    out = np.asarray(data, dtype=np.float64)
    if out.ndim != 1:
        raise ValueError(f"returns must be one-dimensional, got shape {out.shape}")
    if not np.isfinite(out).all():
        raise ValueError("returns must be finite")
    return out


def _bars_per_year_of(data: ArmData) -> float | None:
    if isinstance(data, BacktestResult):
        return float(data.bars_per_year)
    if isinstance(data, Sequence) and data and isinstance(data[0], BacktestResult):
        return float(data[0].bars_per_year)
    return None


def sharpe(returns: np.ndarray) -> float:
    """Per-period Sharpe ratio; 0.0 for fewer than two periods or no variation (sd <= 1e-7 |mean|:
    rounding noise of a constant series, not risk)."""
    returns = np.asarray(returns, dtype=np.float64)
    if returns.shape[0] < 2:
        return 0.0
    mean, sd = float(returns.mean()), float(returns.std(ddof=1))
    return mean / sd if sd > 1e-7 * abs(mean) and sd > 0 else 0.0


# --- classical tests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HypothesisResult:
    """A test's statistic and p-value under the stated alternative."""

    statistic: float
    p_value: float
    alternative: str


def welch_t(challenger: ArmData, active: ArmData, alternative: Alternative = "greater") -> HypothesisResult:
    """Welch's unequal-variance t-test of the mean per-period returns; "greater": challenger better.

    Two constant, equal series give p = 1 (scipy says NaN: there is no evidence either way)."""
    a, b = _returns_of(challenger), _returns_of(active)
    if a.size >= 2 and b.size >= 2 and np.ptp(a) == 0.0 and np.ptp(b) == 0.0:
        diff = float(a[0] - b[0])  # two constants: no noise, the difference is certain or absent
        return HypothesisResult(
            0.0 if diff == 0 else math.copysign(math.inf, diff), _p_from_sign(diff, alternative), alternative
        )
    if a.size < 2 or b.size < 2:  # no variance estimate: scipy's NaN and its warning
        res = stats.ttest_ind(a, b, equal_var=False, alternative=alternative)
        return HypothesisResult(float(res.statistic), float(res.pvalue), alternative)
    # scipy's formula without its per-call overhead (calibration runs this thousands of times)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    t = float((a.mean() - b.mean()) / math.sqrt(va + vb))
    df = float((va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)))
    if alternative == "greater":
        p = special.stdtr(df, -t)
    elif alternative == "less":
        p = special.stdtr(df, t)
    else:
        p = 2.0 * special.stdtr(df, -abs(t))
    return HypothesisResult(t, float(min(p, 1.0)), alternative)


def mann_whitney(
    challenger: ArmData, active: ArmData, alternative: Alternative = "greater"
) -> HypothesisResult:
    """Mann-Whitney U on the per-period returns (statistic: U of the challenger); "greater": the
    challenger's returns tend to be larger. Exact for small samples without ties, else the normal
    approximation with tie and continuity corrections (scipy's "auto")."""
    a, b = _returns_of(challenger), _returns_of(active)
    if np.ptp(np.concatenate([a, b])) == 0.0:  # every value tied: scipy divides by zero
        return HypothesisResult(float(a.size * b.size / 2), 1.0, alternative)
    res = stats.mannwhitneyu(a, b, alternative=alternative)
    return HypothesisResult(float(res.statistic), float(res.pvalue), alternative)


def _p_from_sign(diff: float, alternative: Alternative) -> float:
    """p-value when the test statistic is degenerate (no variance): certain or no evidence."""
    if diff == 0:
        return 1.0
    if alternative == "two-sided":
        return 0.0
    return 0.0 if (diff > 0) == (alternative == "greater") else 1.0


# --- bootstrap ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapResult:
    """Sharpe difference (challenger - active, per period), its percentile CI and bootstrap p-value."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    ci: float
    block: float
    n_boot: int
    alternative: str


@njit(cache=True)
def _sharpe_from_sums(total: float, squares: float, n: int) -> float:  # pragma: no cover - compiled
    mean = total / n
    var = (squares - total * mean) / (n - 1)
    if var <= 1e-14 * mean * mean or var <= 0.0:  # no variation (up to rounding): 0, as sharpe()
        return 0.0
    return mean / np.sqrt(var)


@njit(cache=True)
def _bootstrap_kernel(
    arms: np.ndarray, active: np.ndarray, block: float, n_boot: int, state: np.uint64
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Stationary-bootstrap Sharpe ratios of every arm (rows of ``arms``) and of ``active`` on the
    *same* resampled periods (common random numbers). Inline xorshift64, as in the RL kernel."""
    m, n = arms.shape
    s13, s7, s17, s11 = np.uint64(13), np.uint64(7), np.uint64(17), np.uint64(11)
    n_u = np.uint64(n)
    p_new = 1.0 / block
    out_arms = np.empty((m, n_boot))
    out_active = np.empty(n_boot)
    sums = np.empty(m)
    squares = np.empty(m)
    x = state
    for rep in range(n_boot):
        sums[:] = 0.0
        squares[:] = 0.0
        act_sum = 0.0
        act_sq = 0.0
        j = 0
        for t in range(n):
            x ^= x << s13
            x ^= x >> s7
            x ^= x << s17
            u = np.float64(np.int64(x >> s11)) * _U53
            if t == 0 or u < p_new:  # a new block starts at a uniform position
                x ^= x << s13
                x ^= x >> s7
                x ^= x << s17
                j = np.int64(x % n_u)
            else:  # the block goes on, wrapping round
                j += 1
                if j == n:
                    j = 0
            v = active[j]
            act_sum += v
            act_sq += v * v
            for k in range(m):
                w = arms[k, j]
                sums[k] += w
                squares[k] += w * w
        out_active[rep] = _sharpe_from_sums(act_sum, act_sq, n)
        for k in range(m):
            out_arms[k, rep] = _sharpe_from_sums(sums[k], squares[k], n)
    return out_arms, out_active


def default_block(n: int) -> float:
    """Mean block length ``n ** (1/3)`` (the usual rate for variance estimation), at least 1."""
    return max(1.0, float(round(n ** (1.0 / 3.0))))


def bootstrap_sharpe_diffs(
    challengers: Mapping[str, ArmData],
    active: ArmData,
    block: float | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
    alternative: Alternative = "greater",
) -> dict[str, BootstrapResult]:
    """:func:`block_bootstrap_sharpe_diff` for several challengers at once, all on the same resamples
    (so the result of one arm does not depend on which other arms are tested, or in what order)."""
    b = _returns_of(active)
    arms = {name: _returns_of(data) for name, data in challengers.items()}
    n = b.shape[0]
    for name, a in arms.items():
        if a.shape != b.shape:
            raise ValueError(f"paired bootstrap needs equal lengths: {name!r} has {a.shape[0]}, active {n}")
    if n < 3:
        raise ValueError(f"need at least 3 paired periods, got {n}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    block = default_block(n) if block is None else float(block)
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    if not arms:
        return {}
    matrix = np.ascontiguousarray(np.vstack(list(arms.values())), dtype=np.float64)
    arm_draws, active_draws = _bootstrap_kernel(
        matrix, np.ascontiguousarray(b), block, n_boot, seed_state(seed)
    )
    base_sr = sharpe(b)
    tail = (1.0 - ci) / 2.0
    out = {}
    for k, (name, a) in enumerate(arms.items()):
        diff = sharpe(a) - base_sr
        draws = arm_draws[k] - active_draws
        centred = draws - diff  # the bootstrap distribution moved onto the null "no difference"
        if alternative == "greater":
            hits = np.count_nonzero(centred >= diff)
        elif alternative == "less":
            hits = np.count_nonzero(centred <= diff)
        else:
            hits = np.count_nonzero(np.abs(centred) >= abs(diff))
        low, high = np.quantile(draws, [tail, 1.0 - tail])
        out[name] = BootstrapResult(
            diff=float(diff),
            ci_low=float(low),
            ci_high=float(high),
            p_value=float((1 + hits) / (n_boot + 1)),
            ci=ci,
            block=block,
            n_boot=n_boot,
            alternative=alternative,
        )
    return out


def block_bootstrap_sharpe_diff(
    challenger: ArmData,
    active: ArmData,
    block: float | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
    alternative: Alternative = "greater",
) -> BootstrapResult:
    """Stationary block bootstrap of the paired per-period returns; see the module docstring.

    The p-value for "greater" is ``(1 + #{d*_b - d >= d}) / (n_boot + 1)`` (never 0), for "less" the
    mirror image, for "two-sided" it compares ``|d*_b - d|`` with ``|d|``. ``block`` (mean block length
    in periods) defaults to :func:`default_block`; the CI is the two-sided percentile interval at ``ci``.
    """
    return bootstrap_sharpe_diffs({"challenger": challenger}, active, block, n_boot, seed, ci, alternative)[
        "challenger"
    ]


# --- probabilistic and deflated Sharpe ratios -----------------------------------------------------------


def psr_from_stats(sr: float, n: int, skew: float, kurt: float, benchmark_sr: float = 0.0) -> float:
    """PSR from its ingredients: per-period Sharpe, periods, skewness, Pearson kurtosis (normal 3)."""
    if n < 2:
        raise ValueError(f"need at least 2 periods, got {n}")
    var = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr
    if not var > 0:  # extreme moments make the delta-method variance meaningless
        return 0.5 if sr == benchmark_sr else float(sr > benchmark_sr)
    return float(stats.norm.cdf((sr - benchmark_sr) * math.sqrt(n - 1) / math.sqrt(var)))


def _moments(returns: np.ndarray) -> tuple[float, float]:
    """Sample skewness and Pearson kurtosis from the biased central moments (``scipy.stats.skew`` /
    ``kurtosis(fisher=False)`` with their defaults), without scipy's per-call overhead."""
    centred = returns - returns.mean()
    m2 = float(np.mean(centred**2))
    if m2 <= 1e-14 * float(returns.mean()) ** 2 or m2 == 0.0:
        return 0.0, 3.0  # constant: skew/kurtosis undefined; the Sharpe is 0 anyway
    return float(np.mean(centred**3)) / m2**1.5, float(np.mean(centred**4)) / m2**2


def probabilistic_sharpe_ratio(returns: ArmData, benchmark_sr: float = 0.0) -> float:
    """Probability that the true per-period Sharpe ratio exceeds ``benchmark_sr``, allowing for the
    skewness and fat tails of the returns (biased sample moments, as in the paper)."""
    r = _returns_of(returns)
    skew, kurt = _moments(r)
    return psr_from_stats(sharpe(r), r.shape[0], skew, kurt, benchmark_sr)


def expected_max_sharpe(n_trials: int, trials_sr_variance: float) -> float:
    """Expected largest per-period Sharpe estimate of ``n_trials`` skill-less trials (0 for one trial)."""
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if trials_sr_variance < 0:
        raise ValueError("trials_sr_variance must be >= 0")
    if n_trials == 1:
        return 0.0
    z1 = stats.norm.ppf(1.0 - 1.0 / n_trials)
    z2 = stats.norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(trials_sr_variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


def deflated_sharpe_ratio(returns: ArmData, n_trials: int, trials_sr_variance: float | None = None) -> float:
    """PSR against :func:`expected_max_sharpe`: the probability the Sharpe ratio is not just the
    luckiest of ``n_trials`` tries. ``trials_sr_variance`` (per-period Sharpe units) defaults to
    ``1 / (T - 1)``. Falls as ``n_trials`` grows."""
    r = _returns_of(returns)
    n = r.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 periods, got {n}")
    variance = 1.0 / (n - 1) if trials_sr_variance is None else trials_sr_variance
    skew, kurt = _moments(r)
    return psr_from_stats(sharpe(r), n, skew, kurt, expected_max_sharpe(n_trials, variance))


# --- multiple comparisons -------------------------------------------------------------------------------


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values, in the input order:
    ``p_adj(i) = max_{j <= i} min(1, (m - j + 1) p_(j))`` over the ascending p-values."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("p_values must be one-dimensional")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p-values must lie in [0, 1]")
    m = p.shape[0]
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.maximum.accumulate(scaled)
    return out


# --- the decision ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionRule:
    """What "significantly better" means; see the module docstring for the rule in words.

    ``min_effect`` is a minimum *annualised* Sharpe-ratio difference (challenger - active, point
    estimate): scale-free, comparable across markets and bar sizes, and the number users read in every
    report; significance is the tests' business, practical relevance this one's.
    ``n_trials`` is how many distinct configurations the search behind a challenger evaluated (the GA's
    fitness-cache size), for the deflated Sharpe ratio; :func:`decide` overrides it per arm (buy-and-hold
    and the active config: 1). ``trials_sr_variance`` is the variance of those trials' per-period Sharpe
    estimates when known (default ``1 / (T - 1)``, pure noise).
    """

    alpha: float = DECISION["alpha"].default
    min_effect: float = DECISION["min_effect"].default
    tests: tuple[TestName, ...] = DEFAULT_TESTS
    use_dsr: bool = DECISION["use_dsr"].default
    n_trials: int = 1
    trials_sr_variance: float | None = None
    min_periods: int = DECISION["min_periods"].default
    n_boot: int = DECISION["n_boot"].default
    block: float | None = None
    ci: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        unknown = set(self.tests) - set(ALL_TESTS)
        if unknown or not self.tests:
            raise ValueError(f"tests must be a non-empty subset of {ALL_TESTS}, got {self.tests}")
        if self.n_trials < 1 or self.min_periods < 3 or self.n_boot < 1:
            raise ValueError("need n_trials >= 1, min_periods >= 3 and n_boot >= 1")
        object.__setattr__(self, "tests", tuple(self.tests))

    def describe(self) -> str:
        tests = ", ".join(self.tests) + (" and the deflated Sharpe ratio" if self.use_dsr else "")
        return (
            f"promote only if {tests} all find the challenger better (one-sided), the largest of their "
            f"p-values, Holm-adjusted across challengers, is <= {self.alpha:g}, and the annualised Sharpe "
            f"ratio beats the active one by >= {self.min_effect:g}"
        )


@dataclass(frozen=True)
class ArmReport:
    """One challenger against the active configuration (Sharpe values annualised)."""

    name: str
    n_periods: int
    mean_diff: float  # per period, challenger - active
    sharpe: float
    sharpe_active: float
    sharpe_diff: float
    ci_low: float
    ci_high: float
    p_welch: float
    p_mann_whitney: float
    p_bootstrap: float
    psr: float
    dsr: float
    n_trials: int
    p_value: float  # the largest of the required p-values (and 1 - DSR)
    p_adjusted: float  # Holm across the challengers
    significant: bool
    meets_effect: bool
    promotable: bool
    reason: str


@dataclass(frozen=True)
class Decision:
    """What :func:`decide` concluded: the arm to promote (None: keep the active config), why, and
    every arm's numbers, so a report can show the evidence and not just the verdict."""

    winner: str | None
    reason: str
    arms: dict[str, ArmReport]
    rule: DecisionRule
    bars_per_year: float
    n_periods: int
    active_sharpe: float = 0.0

    @property
    def promoted(self) -> bool:
        return self.winner is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (floats, strings, lists) for asset metadata and reports."""
        return {
            "winner": self.winner,
            "reason": self.reason,
            "rule": {**asdict(self.rule), "tests": list(self.rule.tests), "text": self.rule.describe()},
            "bars_per_year": self.bars_per_year,
            "n_periods": self.n_periods,
            "active_sharpe": self.active_sharpe,
            "arms": {name: asdict(arm) for name, arm in self.arms.items()},
        }


def decide(
    active: ArmData,
    challengers: Mapping[str, ArmData],
    rule: DecisionRule | None = None,
    *,
    bars_per_year: float | None = None,
    n_trials: Mapping[str, int] | None = None,
    trials_sr_variance: Mapping[str, float] | None = None,
    yardstick: str | None = YARDSTICK,
) -> Decision:
    """Apply ``rule`` to the challengers' held-out returns against the active one's (see the module
    docstring). Arms are return arrays or BacktestResults on the same bars; ``bars_per_year`` defaults
    to the active BacktestResult's. ``n_trials`` / ``trials_sr_variance`` override the rule per arm.
    The ``yardstick`` arm (buy-and-hold) can win, but its reason then says the active config stays."""
    rule = rule or DecisionRule()
    base = _returns_of(active)
    bpy = bars_per_year if bars_per_year is not None else _bars_per_year_of(active)
    if bpy is None or not bpy > 0:
        raise ValueError("bars_per_year is needed to annualise (pass it, or BacktestResults)")
    annual = math.sqrt(bpy)
    n = base.shape[0]
    arms = {name: _returns_of(data) for name, data in challengers.items()}
    for name, r in arms.items():
        if r.shape[0] != n:
            raise ValueError(f"arm {name!r} has {r.shape[0]} periods, the active one {n}: not the same bars")
    active_sr = sharpe(base) * annual
    if not arms:
        return Decision(None, "no challengers", {}, rule, bpy, n, active_sr)
    if n < rule.min_periods:
        reason = f"only {n} held-out periods (< {rule.min_periods}): no decision, the active config stays"
        return Decision(None, reason, {}, rule, bpy, n, active_sr)

    boots = bootstrap_sharpe_diffs(
        arms, base, block=rule.block, n_boot=rule.n_boot, seed=rule.seed, ci=rule.ci
    )
    raw: dict[str, dict] = {}
    for name, r in arms.items():
        trials = (n_trials or {}).get(name, rule.n_trials)
        variance = (trials_sr_variance or {}).get(name, rule.trials_sr_variance)
        boot = boots[name]
        p_tests = {
            "welch": welch_t(r, base).p_value,
            "mann_whitney": mann_whitney(r, base).p_value,
            "bootstrap": boot.p_value,
        }
        skew, kurt = _moments(r)
        sr = sharpe(r)
        sr0 = expected_max_sharpe(trials, 1.0 / (n - 1) if variance is None else variance)
        dsr = psr_from_stats(sr, n, skew, kurt, sr0)
        required = [p_tests[t] for t in rule.tests] + ([1.0 - dsr] if rule.use_dsr else [])
        raw[name] = {
            "boot": boot,
            "p_tests": p_tests,
            "dsr": dsr,
            "psr": psr_from_stats(sr, n, skew, kurt),
            "trials": trials,
            "p": max(required),
            "r": r,
        }
    names = list(raw)
    adjusted = holm([raw[name]["p"] for name in names])

    reports: dict[str, ArmReport] = {}
    for name, p_adj in zip(names, adjusted, strict=True):
        item = raw[name]
        boot: BootstrapResult = item["boot"]
        sharpe_diff = boot.diff * annual
        significant = bool(p_adj <= rule.alpha)
        meets_effect = bool(sharpe_diff >= rule.min_effect)
        if not significant:
            reason = f"not significant: Holm-adjusted p = {p_adj:.4g} > alpha = {rule.alpha:g}"
        elif not meets_effect:
            reason = f"significant, but the Sharpe gain {sharpe_diff:.3g} < min_effect {rule.min_effect:g}"
        else:
            reason = f"better: Holm-adjusted p = {p_adj:.4g}, Sharpe +{sharpe_diff:.3g} (annualised)"
        reports[name] = ArmReport(
            name=name,
            n_periods=n,
            mean_diff=float(item["r"].mean() - base.mean()),
            sharpe=sharpe(item["r"]) * annual,
            sharpe_active=active_sr,
            sharpe_diff=sharpe_diff,
            ci_low=boot.ci_low * annual,
            ci_high=boot.ci_high * annual,
            p_welch=item["p_tests"]["welch"],
            p_mann_whitney=item["p_tests"]["mann_whitney"],
            p_bootstrap=item["p_tests"]["bootstrap"],
            psr=item["psr"],
            dsr=item["dsr"],
            n_trials=item["trials"],
            p_value=item["p"],
            p_adjusted=float(p_adj),
            significant=significant,
            meets_effect=meets_effect,
            promotable=significant and meets_effect,
            reason=reason,
        )
    passing = [arm for arm in reports.values() if arm.promotable]
    if not passing:
        best = min(reports.values(), key=lambda arm: arm.p_adjusted)
        reason = f"no challenger beats the active config; closest: {best.name} ({best.reason})"
        return Decision(None, reason, reports, rule, bpy, n, active_sr)
    winner = max(passing, key=lambda arm: (arm.sharpe_diff, -arm.p_adjusted))
    evidence = f"{winner.reason}; {rule.ci:.0%} bootstrap CI of the gain "
    evidence += f"[{winner.ci_low:.3g}, {winner.ci_high:.3g}]"
    if winner.name == yardstick:  # it wins the test, but there is no config to put in force
        reason = (
            f"{winner.name} beat the active config, by more than any challenger that passed: {evidence}; "
            "keep active (a yardstick is never promoted)"
        )
    else:
        reason = f"promote {winner.name}: {evidence}"
    return Decision(winner.name, reason, reports, rule, bpy, n, active_sr)


def decision_summary(
    winner: str | None,
    promoted: bool,
    conflict: str | None,
    *,
    version: int | None = None,
    note: str | None = None,
    yardstick: str = YARDSTICK,
) -> str:
    """One line saying what an experiment changed, for reports and ``rof experiments list``.

    Buy-and-hold can win the test but is never promoted (the agent cannot run it), so its win reads
    as what it is, a warning that no config beat holding, and not as a failed promotion.
    ``version`` is the active config version a promotion wrote; ``note`` says why a winner was not
    promoted when there was no conflict (e.g. auto-promotion off)."""
    if winner is None:
        return "keep active: no challenger beat it"
    if winner == yardstick:
        return "buy-and-hold beat every config: keep active (a yardstick is never promoted)"
    if promoted:
        return f"promoted {winner}" + (f" as active config v{version}" if version is not None else "")
    if conflict:
        return f"{winner} won, not promoted: another promotion changed the active config first (conflict)"
    return f"{winner} won, not promoted" + (f": {note}" if note else "")
