"""``ab_report``: the A/B test of one market and day (arms on the held-out folds, statistics, decision,
promotion); ``strategy_knowledge``: the finished task it adds to the meta/transfer knowledge base.

Both are load, call core (``core.experiment``), write (``adapters.experiments``), report."""

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetRecordsFilter,
    MetadataValue,
    Output,
)

from rof_pipelines.adapters.experiments import (
    Promotion,
    experiment_record,
    finish_experiment,
)
from rof_pipelines.adapters.resources import QuoteStoreResource, RofSettings, StateStoreResource
from rof_pipelines.adapters.state_store import ActiveConfig
from rof_pipelines.core.abtest import DecisionRule, decision_summary
from rof_pipelines.core.experiment import (
    CHAMPION,
    ExperimentOutcome,
    arm_table,
    build_arms,
    decide_experiment,
    evaluate_arms,
    genes_of,
    knowledge_task_id,
    market_base_params,
    trials_key,
)
from rof_pipelines.core.ga.space import SearchSpace
from rof_pipelines.core.knowledge import TaskRecord, market_features
from rof_pipelines.defs.load_time import step_tags
from rof_pipelines.defs.market_day import MarketWindow, market_day_asset, open_market_window
from rof_pipelines.defs.reporting import finite_metadata, line_plot_markdown
from rof_pipelines.defs.resilience import state_store_required

UPSTREAM = ("quote_snapshots", "indicator_frame", "ga_population")
TRIALS_RULE = (
    "the deflated Sharpe ratio and Holm count every configuration ever scored for this market, "
    "experiment and window (the state store's trial ledger), so re-running any partition gives the "
    "same decision"
)


def upstream_links(context: AssetExecutionContext, names: tuple[str, ...]) -> dict[str, Any]:
    """Run id and partition of each upstream materialisation this report read (the lineage the UI
    draws, pinned to the exact runs)."""
    links: dict[str, Any] = {}
    for name in names:
        found = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(name), asset_partitions=[context.partition_key]), limit=1
        ).records
        if found:
            links[f"upstream/{name}"] = f"run {found[0].run_id} partition {context.partition_key}"
    return links


def q_table_artifact(context: AssetExecutionContext) -> str | None:
    """Where this partition's production agent is stored (its materialisation's path), if any."""
    found = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("q_table"), asset_partitions=[context.partition_key]), limit=1
    ).records
    materialization = found[0].asset_materialization if found else None
    path = materialization.metadata.get("path") if materialization else None
    return str(path.value) if path is not None else None


def ga_metadata(context: AssetExecutionContext) -> dict[str, Any]:
    found = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("ga_population"), asset_partitions=[context.partition_key]),
        limit=1,
    ).records
    if not found:
        return {}
    materialization = found[0].asset_materialization
    return {k: v.value for k, v in materialization.metadata.items()} if materialization else {}


def arms_markdown(frame: pd.DataFrame) -> MetadataValue:
    """Arms x (held-out metrics, p-values, verdict), one row each."""
    columns = list(frame.columns)
    lines = ["| arm | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, row in frame.iterrows():
        cells = [
            f"{v:.4g}" if isinstance(v, float) and np.isfinite(v) else ("" if v is None else str(v))
            for v in row
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return MetadataValue.md("\n".join(lines))


def decision_rule(ab: Any) -> DecisionRule:
    """``ab_tests``' statistics settings as the core's rule."""
    return DecisionRule(
        alpha=ab.alpha,
        min_effect=ab.min_effect,
        tests=tuple(ab.tests),
        use_dsr=ab.use_dsr,
        min_periods=ab.min_periods,
        n_boot=ab.n_boot,
    )


@dataclass(frozen=True)
class ExperimentInputs:
    """What the experiment reads from the state store before evaluating: the active config (its
    version is what a promotion must still find), the trial ledger, and a transfer source's genes."""

    active: ActiveConfig | None
    trials: int
    trials_variance: float | None
    transfer_params: dict[str, Any] | None


def read_experiment_inputs(state_store: StateStoreResource, mw: MarketWindow) -> ExperimentInputs:
    md, ab = mw.day, mw.day.settings.ab_tests
    ledger = trials_key(md.market.key, ab.experiment.id, mw.start, mw.end)
    transfer_params = None
    with (
        state_store_required(md.where, "the active config, the trial count and the experiment"),
        state_store.open() as store,
    ):
        active = store.configs.get_active(md.market.key)
        searched, trials_variance = store.trials.stats(ledger)
        if ab.transfer_learning.enabled:
            plan = mw.seed_plan(store)
            transfer_params = plan.transfer[0].task.best_params if plan.transfer else None
    return ExperimentInputs(active, searched, trials_variance, transfer_params)


def run_experiment(mw: MarketWindow, inputs: ExperimentInputs, population: pd.DataFrame) -> ExperimentOutcome:
    """The arms (active, GA champion, Pareto challengers, transfer source) evaluated and decided."""
    ab = mw.day.settings.ab_tests
    space = SearchSpace.from_mapping(ab.experiment.ga.search_space)
    base = market_base_params(mw.day.settings.ai_config, mw.day.profile)
    arms = build_arms(
        population,
        space,
        base,
        active_params=inputs.active.params if inputs.active else None,
        pareto_challengers=ab.pareto_challengers,
        transfer_params=inputs.transfer_params,
    )
    evaluation = evaluate_arms(
        mw.frame,
        arms,
        base,
        space,
        n_folds=ab.folds,
        train_fraction=ab.train_fraction,
        scheme=ab.fold_scheme,
        embargo=ab.embargo_bars,
    )
    return decide_experiment(evaluation, decision_rule(ab), inputs.trials, inputs.trials_variance)


def experiment_details(
    context: AssetExecutionContext,
    mw: MarketWindow,
    outcome: ExperimentOutcome,
    ga_meta: dict[str, Any],
    links: dict[str, Any],
) -> dict[str, Any]:
    """Lineage: the partition and run behind this decision, the GA run and generations that produced
    the champion, and the quote/indicator days the window read."""
    frame = mw.frame
    return {
        "folds": outcome.evaluation.folds,
        "ga_task_id": ga_meta.get("task_id"),
        "seeding": ga_meta.get("seeding"),
        "partition_date": mw.day.day.isoformat(),
        "partition_key": str(context.partition_key),
        "run_id": context.run.run_id,
        "upstream_runs": {key.removeprefix("upstream/"): link.split()[1] for key, link in links.items()},
        "ga_generations": {
            "first": int(ga_meta.get("resumed_from_generation", -1)) + 1,
            "last": ga_meta.get("generations_run"),
            "resumed_from": ga_meta.get("resumed_from_generation"),
        },
        "trials": outcome.trials,
        "window_days": [frame.index[0].date().isoformat(), frame.index[-1].date().isoformat()],
        "market_profile": mw.day.profile.as_dict(),
    }


@market_day_asset(
    group_name="experiments",
    kinds={"pandas", "scipy"},
    ins={"ga_population": AssetIn()},
    deps=[AssetDep("quote_snapshots"), AssetDep("indicator_frame")],
    op_tags=step_tags("ab_optimizer"),
)
def ab_report(
    context: AssetExecutionContext,
    settings: RofSettings,
    quote_store: QuoteStoreResource,
    state_store: StateStoreResource,
    ga_population: pd.DataFrame,
):
    """A/B test of the market's active config against the GA champion (optionally more of the Pareto
    front), a transferred config and buy-and-hold, on the held-out part of the window only (walk-forward
    folds: `ab_tests.folds`), with the same costs. The decision rule (core/abtest.py) is quoted in the
    metadata; a winner becomes the active config with optimistic locking (a lost race is recorded, not
    retried). Stored: one row per arm with held-out metrics and p-values; every experiment is also kept
    in the state store (ab_experiments / ab_arms)."""
    mw = open_market_window(context, settings, quote_store)
    if mw is None:
        return
    md, ab = mw.day, mw.day.settings.ab_tests
    experiment_id = f"{ab.experiment.id}:{md.market.key}:{md.day.isoformat()}:{context.run.run_id[:8]}"
    started = time.perf_counter()
    inputs = read_experiment_inputs(state_store, mw)
    outcome = run_experiment(mw, inputs, ga_population)
    ga_meta, links = ga_metadata(context), upstream_links(context, UPSTREAM)
    record = experiment_record(
        outcome,
        experiment_id=experiment_id,
        market=md.market.key,
        label=ab.experiment.id,
        window_start=mw.start,
        window_end=mw.end,
        active_version=inputs.active.version if inputs.active else None,
        details=experiment_details(context, mw, outcome, ga_meta, links),
    )
    with (
        state_store_required(md.where, "the experiment record and any promotion"),
        state_store.open() as store,
    ):
        _, promotion = finish_experiment(store, record, outcome.winner_params, auto_promote=ab.promote)
    if promotion.conflict:
        context.log.warning(f"{md.market}: {promotion.conflict}")
    table = arm_table(outcome.arms, outcome.decision)
    report = ReportFacts(mw, experiment_id, inputs, outcome, promotion, ga_meta)
    yield Output(
        table.reset_index(),
        metadata={
            **report_metadata(report, table),
            **links,
            "wall_seconds": round(time.perf_counter() - started, 3),
        },
    )


@dataclass(frozen=True)
class ReportFacts:
    """Everything ab_report's metadata says, gathered once."""

    mw: MarketWindow
    experiment_id: str
    inputs: ExperimentInputs
    outcome: ExperimentOutcome
    promotion: Promotion
    ga_meta: dict[str, Any]


def lineage_markdown(facts: ReportFacts) -> MetadataValue:
    """What the promoted config came from, or that nothing was promoted."""
    frame, market, ga_meta = facts.mw.frame, facts.mw.day.market, facts.ga_meta
    days = f"{market} {frame.index[0].date()} .. {frame.index[-1].date()}"
    ga_task = ga_meta.get("task_id", "unknown")
    if facts.promotion.promoted:
        return MetadataValue.md(
            f"active config v{facts.promotion.version} <- experiment `{facts.experiment_id}` <- GA task "
            f"`{ga_task}` (generations 0..{ga_meta.get('generations_run', '?')}) "
            f"<- quote_snapshots / indicator_frame of {days}; `rof experiments show {facts.experiment_id}`"
        )
    return MetadataValue.md(
        f"nothing promoted; experiment `{facts.experiment_id}` <- GA task `{ga_task}` <- {days}"
    )


def report_metadata(facts: ReportFacts, table: pd.DataFrame) -> dict[str, Any]:
    """ab_report's metadata (the UI, the demo and the tests read these keys)."""
    mw, outcome, promotion, ga_meta = facts.mw, facts.outcome, facts.promotion, facts.ga_meta
    decision, active = outcome.decision, facts.inputs.active
    ab = mw.day.settings.ab_tests
    return {
        **mw.day.profile_metadata(),
        "experiment_id": facts.experiment_id,
        "decision": decision_summary(
            decision.winner,
            promotion.promoted,
            promotion.conflict,
            version=promotion.version,
            note=promotion.reason,
        ),
        "winner": decision.winner or "none",
        "reason": decision.reason,
        "decision_rule": outcome.rule.describe(),
        "promotion": promotion.reason,
        "promoted": promotion.promoted,
        "conflict": promotion.conflict or "none",
        "active_version_read": active.version if active else 0,
        "arms": arms_markdown(table),
        "equity_curves": line_plot_markdown(
            "Held-out equity of every arm (folds chained)", outcome.equity, "held-out step", "equity"
        ),
        "held_out_steps": int(decision.n_periods),
        "folds": ab.folds,
        "train_bars": len(mw.split.train),
        "test_bars": len(mw.split.test),
        **mw.bounds_metadata(),
        "ga_task_id": str(ga_meta.get("task_id", "unknown")),
        "ga_generations_run": int(ga_meta.get("generations_run") or 0),
        "lineage": lineage_markdown(facts),
        "n_trials_for_dsr": outcome.trials,
        "trials_sharpe_variance": outcome.trials_variance if outcome.trials_variance is not None else "n/a",
        "trials_rule": TRIALS_RULE,
        **finite_metadata(_uplift(ga_meta)),
    }


def _uplift(ga_meta: dict[str, Any]) -> dict[str, Any]:
    """What warm-starting bought: the seeding used and, when the GA was seeded, generations and
    evaluations to reach the cold run's champion fitness with and without the seeds."""
    seeding = ga_meta.get("seeding") or {}
    return {
        "uplift/seeded": int(ga_meta.get("seeded") or 0),
        "uplift/seeding": str(seeding.get("reason", "unknown")),
        "uplift/generations_run": int(ga_meta.get("generations_run") or 0),
        "uplift/evaluations": int(ga_meta.get("evaluations") or 0),
        # The cold comparison ga_population ran beside a seeded run (absent when nothing was seeded).
        **{key: value for key, value in ga_meta.items() if key.startswith("uplift/")},
    }


def champion_task(
    context: AssetExecutionContext, mw: MarketWindow, champion: pd.Series, held_out: pd.DataFrame
) -> TaskRecord:
    """The finished task as the knowledge base keeps it: the champion's genes and held-out score."""
    md, ab = mw.day, mw.day.settings.ab_tests
    tested = CHAMPION in held_out.index
    return TaskRecord(
        task_id=knowledge_task_id(md.market.key, md.day.isoformat(), ab.experiment.id),
        market=md.market.key,
        finished_at=min(md.end, datetime.now(UTC)),
        features=market_features(mw.split.train),
        best_params=genes_of(champion, SearchSpace.from_mapping(ab.experiment.ga.search_space)),
        score=float(held_out.loc[CHAMPION, "sharpe"]) if tested else float("nan"),
        outcome={k: float(held_out.loc[CHAMPION, k]) for k in ("total_return", "max_drawdown")}
        if tested
        else {},
        generations=int(ga_metadata(context).get("generations_run") or 0) or None,
        artifact=q_table_artifact(context),  # transfer_learning.seed_q_table warm-starts from it
    )


def knowledge_frame(tasks: list[TaskRecord]) -> pd.DataFrame:
    """The knowledge base as retained, one row per task."""
    return pd.DataFrame(
        [
            {
                "task_id": t.task_id,
                "market": t.market,
                "finished_at": t.finished_at,
                "score": t.score,
                "generations": t.generations,
                **{f"feature/{k}": v for k, v in t.features.items()},
            }
            for t in tasks
        ]
    )


@market_day_asset(  # nothing materialised without a champion to learn from
    group_name="experiments",
    kinds={"pandas"},
    ins={"ga_population": AssetIn(), "ab_report": AssetIn()},
    deps=[AssetDep("indicator_frame")],
    op_tags=step_tags("ab_optimizer"),
)
def strategy_knowledge(
    context: AssetExecutionContext,
    settings: RofSettings,
    quote_store: QuoteStoreResource,
    state_store: StateStoreResource,
    ga_population: pd.DataFrame,
    ab_report: pd.DataFrame,
):
    """Adds this market-day's finished task (market features of the training part, the GA champion's
    genes, its held-out Sharpe from the A/B test, generations) to the knowledge base meta/transfer
    learning seed from, and prunes tasks older than `knowledge_retention_days`. Stored: the knowledge
    base as retained at this day (one row per task)."""
    mw = open_market_window(context, settings, quote_store)
    if mw is None:
        return
    md, ab = mw.day, mw.day.settings.ab_tests
    champions = ga_population[ga_population["champion"]]
    if champions.empty:
        context.log.info(f"{md.market} {md.day}: no GA champion (flat landscape), no knowledge to add")
        return
    task = champion_task(context, mw, champions.iloc[0], ab_report.set_index("arm"))
    retention = ab.meta_learning.knowledge_retention_days
    with state_store_required(md.where, "the knowledge base"), state_store.open() as store:
        store.knowledge.add(task)
        pruned = store.knowledge.prune(retention, now=md.end)
        tasks = store.knowledge.tasks(now=md.end, retention_days=retention)
    yield Output(
        knowledge_frame(tasks),
        metadata={
            "market": md.market.key,
            "date": md.day.isoformat(),
            "task_id": task.task_id,
            "stored": "state store",
            "tasks_retained": len(tasks),
            "tasks_pruned": int(pruned),
            "retention_days": retention,
            "meta_learning": "on" if ab.meta_learning.enabled else "off",
            "transfer_learning": "on" if ab.transfer_learning.enabled else "off",
            "best_params": MetadataValue.json(task.best_params),
            "features": MetadataValue.json({k: v for k, v in task.to_dict()["features"].items()}),
            **finite_metadata({"held_out_sharpe": task.score}),
        },
    )
