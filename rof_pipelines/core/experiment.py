"""The A/B experiment without I/O: which arms run, how they are evaluated on the held-out folds, what
the decision rule is fed, and the per-arm rows a report and the state store keep. The statistics live
in ``core.abtest``, the split in ``core.windows``; reading and writing the state store (the active
config, the trial ledger, promotion) is ``adapters.experiments``.

Arms are evaluated exactly as the optimiser scores a genome (``core.ga.fitness``: the agent trains on a
fold's training bars, walks its test bars greedily with Kelly sizing, indicator windows and exits), so
the active config, the GA champion, a transferred config and buy-and-hold differ only in parameters,
never in protocol or costs.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rof_pipelines.core.abtest import Decision, DecisionRule, decide
from rof_pipelines.core.backtest import buy_and_hold, compute_metrics
from rof_pipelines.core.ga.fitness import FULL, build_fitness_data, walk
from rof_pipelines.core.ga.space import Candidate, FeatureWindows, SearchSpace
from rof_pipelines.core.kelly import KellyParams
from rof_pipelines.core.market import Market, MarketProfile
from rof_pipelines.core.rl.agent import RLParams, TrainedAgent, train
from rof_pipelines.core.windows import walk_forward_folds

if TYPE_CHECKING:
    from rof_pipelines.settings import AIConfig

# Arm names: the config in force, the yardstick, the GA's champion, a transferred config.
ACTIVE = "active"
BASELINE = "buy_and_hold"
CHAMPION = "ga_champion"
TRANSFER = "transfer_source"
PARETO_PREFIX = "pareto_"
CANDIDATE_KEYS = ("rl", "indicator_windows", "strategy")
METRIC_COLUMNS = ("total_return", "sharpe", "sortino", "max_drawdown", "n_trades")
_UNIT = KellyParams(use_kelly=False, window_trades=1)


# --- parameters -----------------------------------------------------------------------------------


def market_base_params(ai_config: "AIConfig", profile: MarketProfile) -> RLParams:
    """The agent's fixed parameters for one market: the config's, with the market's own costs."""
    return RLParams.from_settings(ai_config, fee=profile.fee, slippage=profile.slippage)


def candidate_from_params(
    params: Mapping[str, Any] | None, base: RLParams, space: SearchSpace | None = None
) -> Candidate:
    """An arm's strategy from stored parameters in any of their forms: the champion's
    ``{rl, indicator_windows, strategy}`` (what promotion stores), flat genes ``{gene: value}`` (the
    knowledge base: gene names only), flat RLParams overrides (older active configs), or nothing (the
    config's agent)."""
    if not params:
        return Candidate(params=base, windows=FeatureWindows())
    if any(key in params for key in CANDIDATE_KEYS):
        return _stored_candidate(params, base)
    if space is not None and set(params) & set(space.names) and set(params) <= set(space.names):
        return _genes_candidate(params, base, space)
    return Candidate(params=rl_params_from(base, params), windows=FeatureWindows())


def _stored_candidate(params: Mapping[str, Any], base: RLParams) -> Candidate:
    """The champion's stored form ``{rl, indicator_windows, strategy}``."""
    strategy = params.get("strategy") or {}
    return Candidate(
        params=rl_params_from(base, params.get("rl") or {}),
        windows=FeatureWindows(**{k: int(v) for k, v in (params.get("indicator_windows") or {}).items()}),
        stop_loss=float(strategy.get("stop_loss", 0.0)),
        take_profit=float(strategy.get("take_profit", 0.0)),
    )


def _genes_candidate(params: Mapping[str, Any], base: RLParams, space: SearchSpace) -> Candidate:
    """Flat genes ``{gene: value}``; genes left out keep the base's values."""
    genes = [params.get(name) for name in space.names]
    if all(v is not None for v in genes):
        return space.decode(space.canonical(genes), base)
    partial = [g for g in space.genes if g.name in params]
    sub = SearchSpace(tuple(partial))
    return sub.decode(tuple(params[g.name] for g in partial), base)


def rl_params_from(base: RLParams, overrides: Mapping[str, Any]) -> RLParams:
    """``base`` with ``overrides`` (RLParams.to_dict form, possibly partial) applied."""
    return RLParams.from_dict({**base.to_dict(), **dict(overrides)})


def active_rl_params(base: RLParams, params: Mapping[str, Any]) -> tuple[RLParams, list[str]]:
    """What an agent-only walk can apply of an active config, and what it cannot (said, not dropped):
    the agent's parameters apply; indicator windows and stop-loss/take-profit exits need the A/B
    evaluation's or the optimiser's walk."""
    if not any(key in params for key in CANDIDATE_KEYS):
        return rl_params_from(base, params), []
    rl = {k: v for k, v in dict(params.get("rl") or {}).items() if k != "seed"}  # q_table seeds per day
    ignored = []
    windows = {k: v for k, v in (params.get("indicator_windows") or {}).items() if v is not None}
    if windows:
        ignored.append(f"indicator_windows {windows} (q_table uses the indicator frame's columns)")
    exits = {k: v for k, v in (params.get("strategy") or {}).items() if v}
    if exits:
        ignored.append(f"exits {exits} (q_table's walk has no stop-loss/take-profit yet)")
    return rl_params_from(base, rl), ignored


def candidate_params(candidate: Candidate) -> dict[str, Any]:
    """The form promotion stores (and :func:`candidate_from_params` reads back)."""
    return candidate.to_dict()


def trials_key(market: str, experiment_id: str, window_start: datetime, window_end: datetime) -> str:
    """The A/B task a trial belongs to: market, experiment and window, whatever the GA's settings,
    seeds or data fingerprint, so resumed, rerun, seeded and cold runs all add to one count."""
    window = f"{window_start.isoformat()}/{window_end.isoformat()}"
    return f"trials:{Market.parse(market).key}:{experiment_id}:{window}"


def knowledge_task_id(market: str, day: str, experiment: str) -> str:
    """One knowledge task per market, day and experiment label (a rerun replaces its record)."""
    return f"{market}|{day}|{experiment}"


# --- the GA's population as arms --------------------------------------------------------------------


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def genes_of(frame_row: Mapping[str, Any], space: SearchSpace) -> dict[str, Any]:
    """A population row's genes as ``{gene: value}`` (the knowledge base's best_params form)."""
    return {name: _plain(frame_row[name]) for name in space.names}


def gene_tuple(row: Mapping[str, Any], names: Sequence[str]) -> tuple:
    return tuple(_plain(row[name]) for name in names)


def top_pareto(population: pd.DataFrame, k: int) -> list[int]:
    """Row positions of the ``k`` best non-champion Pareto members by Sharpe (optional extra arms)."""
    if k <= 0:
        return []
    front = population[population["pareto"] & ~population["champion"]]
    front = front.sort_values(["sharpe", "total_return"], ascending=False)
    return [population.index.get_loc(i) for i in front.index[:k]]


def _row_candidate(row: Mapping[str, Any], space: SearchSpace, base: RLParams) -> Candidate:
    return space.decode(space.canonical(gene_tuple(row, space.names)), base)


def build_arms(
    population: pd.DataFrame,
    space: SearchSpace,
    base: RLParams,
    *,
    active_params: Mapping[str, Any] | None,
    pareto_challengers: int = 0,
    transfer_params: Mapping[str, Any] | None = None,
) -> dict[str, tuple[str, Candidate]]:
    """``name -> (role, candidate)``: the active config, the GA champion (none when the landscape was
    flat), the best ``pareto_challengers`` other front members, and a transferred config if given."""
    arms = {ACTIVE: ("active", candidate_from_params(active_params, base, space))}
    champions = population[population["champion"]]
    if len(champions):
        arms[CHAMPION] = ("challenger", _row_candidate(champions.iloc[0], space, base))
    for rank, pos in enumerate(top_pareto(population, pareto_challengers), start=1):
        arms[f"{PARETO_PREFIX}{rank}"] = ("challenger", _row_candidate(population.iloc[pos], space, base))
    if transfer_params is not None:
        arms[TRANSFER] = ("challenger", candidate_from_params(transfer_params, base, space))
    return arms


# --- evaluation -----------------------------------------------------------------------------------


@dataclass
class CandidateRun:
    """A candidate trained on the fit part and walked on the held-out part, the one protocol the
    optimiser, the A/B test and the production agent (q_table) share."""

    agent: TrainedAgent
    fit_env: Any
    val_env: Any
    equity: np.ndarray
    trade_returns: np.ndarray
    level_exits: int

    @property
    def returns(self) -> np.ndarray:
        return self.equity[1:] / self.equity[:-1] - 1.0


def run_candidate(data: Any, candidate: Candidate, *, init_q: np.ndarray | None = None) -> CandidateRun:
    """Train ``candidate`` (its agent parameters, state bins and indicator windows) on ``data``'s fit
    part, then walk the held-out part greedily with its Kelly settings and exits; the in-sample
    trades at unit size seed Kelly's record. ``init_q`` warm-starts the Q-table (transfer)."""
    params = candidate.params
    fit_env, val_env = data.envs(FULL, params.bins, candidate.windows, params.allow_short)
    agent = train(fit_env, params, init_q=init_q)
    _, history, _ = walk(agent.q, fit_env, params, _UNIT, candidate.stop_loss, candidate.take_profit)
    equity, trades, exits = walk(
        agent.q, val_env, params, params.kelly, candidate.stop_loss, candidate.take_profit, history
    )
    return CandidateRun(agent, fit_env, val_env, equity, trades, int(exits))


@dataclass
class ArmResult:
    """An arm's held-out equity over all folds, back to back (each fold restarts at 1)."""

    name: str
    role: str
    params: dict[str, Any]
    returns: np.ndarray
    fold_equity: list[np.ndarray] = field(default_factory=list)
    n_trades: int = 0

    @property
    def equity(self) -> np.ndarray:
        """The folds chained: the equity curve the plot shows."""
        return np.concatenate([[1.0], np.cumprod(1.0 + self.returns)])

    def metrics(self, bars_per_year: float) -> dict[str, float]:
        return compute_metrics(self.equity, np.empty(0), np.ones(len(self.returns)), bars_per_year) | {
            "n_trades": float(self.n_trades)
        }


@dataclass
class Evaluation:
    arms: dict[str, ArmResult]
    bars_per_year: float
    folds: list[dict[str, Any]]
    index: pd.DatetimeIndex | None = None


@dataclass
class _FoldRuns:
    """One fold's held-out returns per arm, cut to the bars every arm walked."""

    returns: dict[str, np.ndarray]
    trades: dict[str, int]
    bars_per_year: float
    steps: int


def _run_fold(
    fold: Any, candidates: Mapping[str, tuple[str, Candidate]], base: RLParams, space: SearchSpace
) -> _FoldRuns:
    whole = pd.concat([fold.train, fold.test])
    data = build_fitness_data(whole, base, space, validation_fraction=len(fold.test) / len(whole))
    returns: dict[str, np.ndarray] = {}
    trades: dict[str, int] = {}
    step_ret, bars_per_year = None, math.nan
    for name, (_, cand) in candidates.items():
        run = run_candidate(data, cand)
        returns[name] = run.returns
        trades[name] = int(run.trade_returns.shape[0])
        if step_ret is None or len(run.val_env.step_ret) < len(step_ret):
            step_ret, bars_per_year = run.val_env.step_ret, run.val_env.bars_per_year()
    assert step_ret is not None, "no arms to evaluate"
    returns[BASELINE] = buy_and_hold(step_ret, base.cost, bars_per_year).returns
    trades[BASELINE] = 1
    steps = min(len(r) for r in returns.values())  # same bars: align on the common tail
    return _FoldRuns({name: r[len(r) - steps :] for name, r in returns.items()}, trades, bars_per_year, steps)


def _fold_facts(fold: Any, steps: int) -> dict[str, Any]:
    return {
        "fold": fold.number,
        "train_start": str(fold.train.index[0]),
        "train_end": str(fold.train.index[-1]),
        "test_start": str(fold.test.index[0]),
        "test_end": str(fold.test.index[-1]),
        "test_steps": steps,
    }


def evaluate_arms(
    frame: pd.DataFrame,
    candidates: Mapping[str, tuple[str, Candidate]],
    base: RLParams,
    space: SearchSpace,
    *,
    n_folds: int = 1,
    train_fraction: float = 0.7,
    scheme: str = "expanding",
    embargo: int = 0,
) -> Evaluation:
    """Every arm (``name -> (role, candidate)``) plus buy-and-hold, on each walk-forward fold's test
    bars only (trained on that fold's training bars), with the base agent's costs for all."""
    folds = walk_forward_folds(frame, n_folds, train_fraction, scheme=scheme, embargo=embargo)  # type: ignore[arg-type]
    per_arm: dict[str, list[np.ndarray]] = {name: [] for name in [*candidates, BASELINE]}
    trades = dict.fromkeys(per_arm, 0)
    fold_facts = []
    bars_per_year = math.nan
    for fold in folds:
        runs = _run_fold(fold, candidates, base, space)
        bars_per_year = runs.bars_per_year
        for name, r in runs.returns.items():
            per_arm[name].append(r)
            trades[name] += runs.trades[name]
        fold_facts.append(_fold_facts(fold, runs.steps))
    roles = {name: role for name, (role, _) in candidates.items()} | {BASELINE: "baseline"}
    params = {name: candidate_params(cand) for name, (_, cand) in candidates.items()} | {BASELINE: {}}
    arms = {
        name: ArmResult(
            name,
            roles[name],
            params[name],
            np.concatenate(parts),
            [np.concatenate([[1.0], np.cumprod(1.0 + p)]) for p in parts],
            trades[name],
        )
        for name, parts in per_arm.items()
    }
    return Evaluation(arms, float(bars_per_year), fold_facts)


# --- decision -------------------------------------------------------------------------------------


def decide_arms(
    evaluation: Evaluation,
    rule: DecisionRule,
    n_trials: Mapping[str, int] | None = None,
    trials_sr_variance: Mapping[str, float] | None = None,
) -> Decision:
    """The rule on the held-out returns: every arm but the active one challenges it."""
    active = evaluation.arms[ACTIVE].returns
    challengers = {name: arm.returns for name, arm in evaluation.arms.items() if name != ACTIVE}
    return decide(
        active,
        challengers,
        rule,
        bars_per_year=evaluation.bars_per_year,
        n_trials=n_trials,
        trials_sr_variance=trials_sr_variance,
    )


def searched_arms(evaluation: Evaluation) -> list[str]:
    """The arms the GA's search produced: the deflated Sharpe ratio counts its trials for them."""
    return [name for name in evaluation.arms if name == CHAMPION or name.startswith(PARETO_PREFIX)]


@dataclass(frozen=True)
class ArmSummary:
    """One arm as a report and the state store keep it: params, held-out metrics, and (challengers)
    the p-values against the active config."""

    arm: str
    role: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    p_values: dict[str, Any]


def arm_summaries(evaluation: Evaluation, decision: Decision) -> tuple[ArmSummary, ...]:
    """One row per arm, in evaluation order."""
    out = []
    for name, arm in evaluation.arms.items():
        report = decision.arms.get(name)
        p_values = (
            {
                "welch": report.p_welch,
                "mann_whitney": report.p_mann_whitney,
                "bootstrap": report.p_bootstrap,
                "dsr": report.dsr,
                "p_value": report.p_value,
                "p_adjusted": report.p_adjusted,
            }
            if report is not None
            else {}
        )
        out.append(ArmSummary(name, arm.role, arm.params, arm.metrics(evaluation.bars_per_year), p_values))
    return tuple(out)


@dataclass(frozen=True)
class ExperimentOutcome:
    """An evaluation decided: the rule, the trial count it deflated by, the decision and its rows."""

    evaluation: Evaluation
    rule: DecisionRule
    decision: Decision
    trials: int
    trials_variance: float | None

    @property
    def winner_params(self) -> dict[str, Any] | None:
        """What promotion would store; buy-and-hold is a yardstick, not a config the agent can run."""
        winner = self.decision.winner
        if winner is None or winner == BASELINE:
            return None
        return self.evaluation.arms[winner].params

    @cached_property
    def arms(self) -> tuple[ArmSummary, ...]:
        return arm_summaries(self.evaluation, self.decision)

    @property
    def equity(self) -> dict[str, np.ndarray]:
        return {name: arm.equity for name, arm in self.evaluation.arms.items()}


def decide_experiment(
    evaluation: Evaluation, rule: DecisionRule, trials: int, trials_variance: float | None
) -> ExperimentOutcome:
    """The decision with the trial ledger's count (every configuration ever scored for the task, at
    least one) and Sharpe variance applied to the searched arms."""
    trials = max(trials, 1)
    searched = searched_arms(evaluation)
    # The ledger holds annualised Sharpes; the deflated Sharpe ratio works per period.
    per_period = None if trials_variance is None else trials_variance / evaluation.bars_per_year
    variances = dict.fromkeys(searched, per_period) if per_period else None
    decision = decide_arms(
        evaluation, rule, n_trials=dict.fromkeys(searched, trials), trials_sr_variance=variances
    )
    return ExperimentOutcome(evaluation, rule, decision, trials, trials_variance)


def arm_table(arms: Sequence[ArmSummary], decision: Decision) -> pd.DataFrame:
    """Arms x (held-out metrics, p-values against the active config, verdict), indexed by arm."""
    rows = []
    for summary in arms:
        report = decision.arms.get(summary.arm)
        rows.append(
            {
                "arm": summary.arm,
                "role": summary.role,
                **{k: summary.metrics.get(k) for k in METRIC_COLUMNS},
                "p_welch": report.p_welch if report else np.nan,
                "p_bootstrap": report.p_bootstrap if report else np.nan,
                "dsr": report.dsr if report else np.nan,
                "p_adjusted": report.p_adjusted if report else np.nan,
                "verdict": report.reason if report else "the config in force",
            }
        )
    return pd.DataFrame(rows).set_index("arm")
