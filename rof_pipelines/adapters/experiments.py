"""A/B experiments against the state store: evaluate the arms on the held-out folds, decide, promote
the winner with optimistic locking, record everything; and the knowledge base meta/transfer learning
reads. The statistics live in ``core.abtest``, the split in ``core.windows``, seeds in ``core.knowledge``.

Arms are evaluated exactly as the optimiser scores a genome (``core.ga.fitness``: the agent trains on a
fold's training bars, walks its test bars greedily with Kelly sizing, indicator windows and exits), so
the active config, the GA champion, a transferred config and buy-and-hold differ only in parameters,
never in protocol or costs.

Promotion: the caller reads the active config (version v) before evaluating; a winner is written with
``expected_version=v`` (create when there was none). If another experiment promoted first, the store
raises ConflictError: the conflict is recorded on this experiment and nothing is retried - the next
experiment re-evaluates against whatever is active then. So concurrent experiments for one market
leave exactly one active config and a recorded conflict, never a lost update.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from rof_pipelines.adapters.state_store import ArmRecord, ExperimentRecord, StateStore
from rof_pipelines.core.abtest import Decision, DecisionRule, decide
from rof_pipelines.core.backtest import buy_and_hold, compute_metrics
from rof_pipelines.core.ga.fitness import FULL, build_fitness_data, walk
from rof_pipelines.core.ga.space import Candidate, FeatureWindows, SearchSpace
from rof_pipelines.core.kelly import KellyParams
from rof_pipelines.core.knowledge import SeedPlan, TaskRecord, market_features, plan_seeds
from rof_pipelines.core.rl.agent import RLParams, TrainedAgent, train
from rof_pipelines.core.windows import walk_forward_folds
from rof_pipelines.errors import ConflictError

BASELINE = "buy_and_hold"
ACTIVE = "active"
CANDIDATE_KEYS = ("rl", "indicator_windows", "strategy")
_UNIT = KellyParams(use_kelly=False, window_trades=1)


# --- parameters -----------------------------------------------------------------------------------


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
        return Candidate(
            params=rl_params_from(base, params.get("rl") or {}),
            windows=FeatureWindows(**{k: int(v) for k, v in (params.get("indicator_windows") or {}).items()}),
            stop_loss=float((params.get("strategy") or {}).get("stop_loss", 0.0)),
            take_profit=float((params.get("strategy") or {}).get("take_profit", 0.0)),
        )
    if space is not None and set(params) & set(space.names) and set(params) <= set(space.names):
        genes = [params.get(name) for name in space.names]
        if all(v is not None for v in genes):
            return space.decode(space.canonical(genes), base)
        partial = [g for g in space.genes if g.name in params]  # the rest keep the base's values
        sub = SearchSpace(tuple(partial))
        return sub.decode(tuple(params[g.name] for g in partial), base)
    return Candidate(params=rl_params_from(base, params), windows=FeatureWindows())


def rl_params_from(base: RLParams, overrides: Mapping[str, Any]) -> RLParams:
    """``base`` with ``overrides`` (RLParams.to_dict form, possibly partial) applied."""
    return RLParams.from_dict({**base.to_dict(), **dict(overrides)})


def active_rl_params(base: RLParams, params: Mapping[str, Any]) -> tuple[RLParams, list[str]]:
    """What ``q_table`` can apply of an active config, and what it cannot (said, not dropped): the
    agent's parameters apply; indicator windows and stop-loss/take-profit exits are applied by the
    A/B evaluation and the optimiser but not yet by q_table's own walk."""
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
    fold_facts, index_parts = [], []
    bars_per_year = math.nan
    for fold in folds:
        whole = pd.concat([fold.train, fold.test])
        data = build_fitness_data(whole, base, space, validation_fraction=len(fold.test) / len(whole))
        fold_returns: dict[str, np.ndarray] = {}
        step_ret = None
        for name, (_, cand) in candidates.items():
            run = run_candidate(data, cand)
            fold_returns[name] = run.returns
            trades[name] += int(run.trade_returns.shape[0])
            if step_ret is None or len(run.val_env.step_ret) < len(step_ret):
                step_ret, bars_per_year = run.val_env.step_ret, run.val_env.bars_per_year()
        assert step_ret is not None, "no arms to evaluate"
        fold_returns[BASELINE] = buy_and_hold(step_ret, base.cost, bars_per_year).returns
        trades[BASELINE] += 1
        steps = min(len(r) for r in fold_returns.values())  # same bars: align on the common tail
        for name, r in fold_returns.items():
            per_arm[name].append(r[len(r) - steps :])
        index_parts.append(fold.test.index[len(fold.test) - steps - 1 :])
        fold_facts.append(
            {
                "fold": fold.number,
                "train_start": str(fold.train.index[0]),
                "train_end": str(fold.train.index[-1]),
                "test_start": str(fold.test.index[0]),
                "test_end": str(fold.test.index[-1]),
                "test_steps": steps,
            }
        )
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


# --- promotion and records --------------------------------------------------------------------------


@dataclass(frozen=True)
class Promotion:
    promoted: bool
    version: int | None
    conflict: str | None
    reason: str


def promote(
    store: StateStore,
    market: str,
    params: Mapping[str, Any],
    expected_version: int | None,
    experiment_id: str,
) -> Promotion:
    """Write the winner with the version read before the experiment (None: create). A conflict is
    returned, not raised or retried: the next experiment decides against the new active config."""
    try:
        stored = store.set_active_config(
            market, params, "ab_test", experiment_id=experiment_id, expected_version=expected_version
        )
    except ConflictError as exc:
        return Promotion(False, None, str(exc), "promotion lost the optimistic-lock race")
    return Promotion(True, stored.version, None, f"promoted as active config v{stored.version}")


def finish_experiment(
    store: StateStore,
    record: ExperimentRecord,
    winner_params: Mapping[str, Any] | None,
    *,
    auto_promote: bool = True,
) -> tuple[ExperimentRecord, Promotion]:
    """Promote the winner (if any and allowed), then store the experiment with the outcome."""
    if record.winner is None or winner_params is None:
        promotion = Promotion(False, None, None, "no winner: the active config stays")
    elif not auto_promote:
        promotion = Promotion(False, None, None, "winner found, auto-promotion is off (ab_tests.promote)")
    else:
        promotion = promote(store, record.market, winner_params, record.active_version, record.experiment_id)
    final = ExperimentRecord(
        **{
            **{k: getattr(record, k) for k in record.__dataclass_fields__},
            "promoted": promotion.promoted,
            "promoted_version": promotion.version,
            "conflict": promotion.conflict,
            "details": {**record.details, "promotion": promotion.reason},
        }
    )
    store.record_experiment(final)
    return final, promotion


def arm_records(evaluation: Evaluation, decision: Decision) -> tuple[ArmRecord, ...]:
    """One row per arm: params, held-out metrics, and (challengers) the p-values against active."""
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
        out.append(ArmRecord(name, arm.role, arm.params, arm.metrics(evaluation.bars_per_year), p_values))
    return tuple(out)


def genes_of(frame_row: Mapping[str, Any], space: SearchSpace) -> dict[str, Any]:
    """A population row's genes as ``{gene: value}`` (the knowledge base's best_params form)."""
    return {name: _plain(frame_row[name]) for name in space.names}


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def top_pareto(population: pd.DataFrame, k: int) -> list[int]:
    """Row positions of the ``k`` best non-champion Pareto members by Sharpe (optional extra arms)."""
    if k <= 0:
        return []
    front = population[population["pareto"] & ~population["champion"]]
    front = front.sort_values(["sharpe", "total_return"], ascending=False)
    return [population.index.get_loc(i) for i in front.index[:k]]


def gene_tuple(row: Mapping[str, Any], names: Sequence[str]) -> tuple:
    return tuple(_plain(row[name]) for name in names)


# --- knowledge base -------------------------------------------------------------------------------


def knowledge_task_id(market: str, day: str, experiment: str) -> str:
    """One knowledge task per market, day and experiment label (a rerun replaces its record)."""
    return f"{market}|{day}|{experiment}"


def seed_plan_for(
    store: StateStore | None,
    ab: Any,
    market: str,
    train_frame: pd.DataFrame,
    now: datetime,
    *,
    population_size: int,
    gene_names: Sequence[str],
    exclude_ids: Sequence[str] = (),
) -> SeedPlan:
    """Meta/transfer seeds for one GA run from the knowledge base (``ab`` is ``settings.ab_tests``);
    both switched off: no seeds and the store is not even read."""
    meta, transfer = ab.meta_learning, ab.transfer_learning
    max_seeds = int(meta.seed_fraction * population_size)
    tasks: list[TaskRecord] = []
    if (meta.enabled or transfer.enabled) and store is not None:
        tasks = store.knowledge_tasks(now=now, retention_days=meta.knowledge_retention_days)
    features = market_features(train_frame)
    return plan_seeds(
        market,
        features,
        tasks,
        meta,
        transfer,
        now=now,
        max_seeds=max_seeds,
        gene_names=gene_names,
        exclude_ids=exclude_ids,
    )
