"""A/B experiments against the state store: promote the winner with optimistic locking, record the
experiment with its arms, and read the knowledge base for meta/transfer learning seeds. Which arms
run, their evaluation and the decision are ``core.experiment`` (no I/O); the statistics
``core.abtest``; the seeds ``core.knowledge``.

Promotion: the caller reads the active config (version v) before evaluating; a winner is written with
``expected_version=v`` (create when there was none). If another experiment promoted first, the store
raises ConflictError: the conflict is recorded on this experiment and nothing is retried - the next
experiment re-evaluates against whatever is active then. So concurrent experiments for one market
leave exactly one active config and a recorded conflict, never a lost update.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from rof_pipelines.adapters.state_store import ArmRecord, ExperimentRecord, StateStore
from rof_pipelines.core.abtest import Decision
from rof_pipelines.core.experiment import ArmSummary, Evaluation, ExperimentOutcome, arm_summaries
from rof_pipelines.core.knowledge import SeedPlan, TaskRecord, market_features, plan_seeds
from rof_pipelines.errors import ConflictError

# --- records --------------------------------------------------------------------------------------


def _arm_record(summary: ArmSummary) -> ArmRecord:
    return ArmRecord(summary.arm, summary.role, summary.params, summary.metrics, summary.p_values)


def arm_records(evaluation: Evaluation, decision: Decision) -> tuple[ArmRecord, ...]:
    """One stored row per arm: params, held-out metrics, and (challengers) the p-values against active."""
    return tuple(_arm_record(summary) for summary in arm_summaries(evaluation, decision))


def experiment_record(
    outcome: ExperimentOutcome,
    *,
    experiment_id: str,
    market: str,
    label: str,
    window_start: datetime,
    window_end: datetime,
    active_version: int | None,
    details: dict[str, Any],
) -> ExperimentRecord:
    """The experiment as the state store keeps it, before promotion (:func:`finish_experiment`)."""
    return ExperimentRecord(
        experiment_id=experiment_id,
        market=market,
        label=label,
        window_start=window_start,
        window_end=window_end,
        decision=outcome.decision.to_dict(),
        winner=outcome.decision.winner,
        promoted=False,
        active_version=active_version,
        promoted_version=None,
        conflict=None,
        details=details,
        arms=tuple(_arm_record(summary) for summary in outcome.arms),
    )


# --- promotion ------------------------------------------------------------------------------------


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
        stored = store.configs.set_active(
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
    store.experiments.record(final)
    return final, promotion


# --- knowledge base -------------------------------------------------------------------------------


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
        tasks = store.knowledge.tasks(now=now, retention_days=meta.knowledge_retention_days)
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
