"""``ab_report``: the A/B test of one market and day (arms on the held-out folds, statistics, decision,
promotion); ``strategy_knowledge``: the finished task it adds to the meta/transfer knowledge base."""

import time
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
    asset,
)

from rof_pipelines.adapters.experiments import (
    ACTIVE,
    BASELINE,
    arm_records,
    candidate_from_params,
    decide_arms,
    evaluate_arms,
    finish_experiment,
    gene_tuple,
    genes_of,
    knowledge_task_id,
    seed_plan_for,
    top_pareto,
)
from rof_pipelines.adapters.optimisation import market_base_params, trials_key
from rof_pipelines.adapters.resources import QuoteStoreResource, RofSettings, StateStoreResource
from rof_pipelines.adapters.state_store import ExperimentRecord
from rof_pipelines.core.abtest import DecisionRule, decision_summary
from rof_pipelines.core.ga.space import SearchSpace
from rof_pipelines.core.knowledge import TaskRecord, market_features
from rof_pipelines.defs.market_day import (
    STATE_STORE_RETRY,
    market_day,
    skipped_closed_day,
    state_store_failure,
    window_frame,
)
from rof_pipelines.defs.reporting import finite_metadata, line_plot_markdown
from rof_pipelines.errors import TransientError
from rof_pipelines.partitions import market_day_partitions

CHAMPION = "ga_champion"
TRANSFER = "transfer_source"
METRIC_COLUMNS = ("total_return", "sharpe", "sortino", "max_drawdown", "n_trades")


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


@asset(
    partitions_def=market_day_partitions,
    group_name="experiments",
    io_manager_key="frame_io_manager",
    kinds={"pandas", "scipy"},
    ins={"ga_population": AssetIn()},
    deps=[AssetDep("quote_snapshots"), AssetDep("indicator_frame")],
    output_required=False,  # nothing on a day the market is closed
    retry_policy=STATE_STORE_RETRY,
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
    md = market_day(context, settings)
    if skipped_closed_day(context, md):
        return
    config, market, day = md.settings, md.market, md.day
    ab = config.ab_tests
    window, split = window_frame(context, md, quote_store)
    frame = window.frame
    end_ts = pd.Timestamp(md.end)
    space = SearchSpace.from_mapping(ab.experiment.ga.search_space)
    base = market_base_params(config, md.profile)
    experiment_id = f"{ab.experiment.id}:{market.key}:{day.isoformat()}:{context.run.run_id[:8]}"
    started = time.perf_counter()

    # The active config, read once: its version is what a promotion must still find. The trial
    # ledger: every configuration ever scored for this task, whatever ran how often.
    ledger = trials_key(market.key, ab.experiment.id, frame.index[0].to_pydatetime(), end_ts.to_pydatetime())
    tasks_plan = None
    try:
        with state_store.open() as store:
            active = store.get_active_config(market.key)
            searched, trials_variance = store.trial_stats(ledger)
            if ab.transfer_learning.enabled:
                tasks_plan = seed_plan_for(
                    store,
                    ab,
                    market.key,
                    split.train,
                    end_ts.to_pydatetime(),
                    population_size=ab.experiment.ga.population_size,
                    gene_names=space.names,
                    exclude_ids=[knowledge_task_id(market.key, day.isoformat(), ab.experiment.id)],
                )
    except TransientError as exc:
        raise state_store_failure(md, "the active config, the trial count and the experiment", exc) from exc

    arms = {ACTIVE: ("active", candidate_from_params(active.params if active else None, base, space))}
    champions = ga_population[ga_population["champion"]]
    if len(champions):  # none when the GA's landscape was flat
        champion_genome = gene_tuple(champions.iloc[0], space.names)
        arms[CHAMPION] = ("challenger", space.decode(space.canonical(champion_genome), base))
    for rank, pos in enumerate(top_pareto(ga_population, ab.pareto_challengers), start=1):
        genome = gene_tuple(ga_population.iloc[pos], space.names)
        arms[f"pareto_{rank}"] = ("challenger", space.decode(space.canonical(genome), base))
    if tasks_plan is not None and tasks_plan.transfer:
        source = tasks_plan.transfer[0]
        arms[TRANSFER] = ("challenger", candidate_from_params(source.task.best_params, base, space))

    evaluation = evaluate_arms(
        frame,
        arms,
        base,
        space,
        n_folds=ab.folds,
        train_fraction=ab.train_fraction,
        scheme=ab.fold_scheme,
        embargo=ab.embargo_bars,
    )
    ga_meta = ga_metadata(context)
    searched = max(searched, 1)
    rule = DecisionRule(
        alpha=ab.alpha,
        min_effect=ab.min_effect,
        tests=tuple(ab.tests),
        use_dsr=ab.use_dsr,
        min_periods=ab.min_periods,
        n_boot=ab.n_boot,
    )
    searched_arms = [name for name in evaluation.arms if name == CHAMPION or name.startswith("pareto_")]
    n_trials = dict.fromkeys(searched_arms, searched)
    # The ledger holds annualised Sharpes; the deflated Sharpe ratio works per period.
    per_period = None if trials_variance is None else trials_variance / evaluation.bars_per_year
    variances = dict.fromkeys(searched_arms, per_period) if per_period else None
    decision = decide_arms(evaluation, rule, n_trials=n_trials, trials_sr_variance=variances)
    winner_params = evaluation.arms[decision.winner].params if decision.winner else None
    if decision.winner == BASELINE:
        winner_params = None  # buy-and-hold is a yardstick, not a config the agent can run
    record = ExperimentRecord(
        experiment_id=experiment_id,
        market=market.key,
        label=ab.experiment.id,
        window_start=frame.index[0].to_pydatetime(),
        window_end=end_ts.to_pydatetime(),
        decision=decision.to_dict(),
        winner=decision.winner,
        promoted=False,
        active_version=active.version if active else None,
        promoted_version=None,
        conflict=None,
        details={
            "folds": evaluation.folds,
            "ga_task_id": ga_meta.get("task_id"),
            "seeding": ga_meta.get("seeding"),
            # Lineage: the partition and run behind this decision, the GA run and generations that
            # produced the champion, and the quote/indicator days the window read.
            "partition_date": day.isoformat(),
            "partition_key": str(context.partition_key),
            "run_id": context.run.run_id,
            "upstream_runs": {
                name: link.split()[1]
                for name, link in (
                    (key.removeprefix("upstream/"), value)
                    for key, value in upstream_links(
                        context, ("quote_snapshots", "indicator_frame", "ga_population")
                    ).items()
                )
            },
            "ga_generations": {
                "first": int(ga_meta.get("resumed_from_generation", -1)) + 1,
                "last": ga_meta.get("generations_run"),
                "resumed_from": ga_meta.get("resumed_from_generation"),
            },
            "trials": searched,
            "window_days": [frame.index[0].date().isoformat(), frame.index[-1].date().isoformat()],
            "market_profile": md.profile.as_dict(),
        },
        arms=arm_records(evaluation, decision),
    )
    try:
        with state_store.open() as store:
            _, promotion = finish_experiment(store, record, winner_params, auto_promote=ab.promote)
    except TransientError as exc:
        raise state_store_failure(md, "the experiment record and any promotion", exc) from exc
    promoted, conflict, promotion_text = promotion.promoted, promotion.conflict, promotion.reason
    if conflict:
        context.log.warning(f"{market}: {conflict}")

    # One row per arm: held-out metrics, p-values against the active config, the verdict.
    rows = []
    for arm_record in record.arms:
        report = decision.arms.get(arm_record.arm)
        rows.append(
            {
                "arm": arm_record.arm,
                "role": arm_record.role,
                **{k: arm_record.metrics.get(k) for k in METRIC_COLUMNS},
                "p_welch": report.p_welch if report else np.nan,
                "p_bootstrap": report.p_bootstrap if report else np.nan,
                "dsr": report.dsr if report else np.nan,
                "p_adjusted": report.p_adjusted if report else np.nan,
                "verdict": report.reason if report else "the config in force",
            }
        )
    table = pd.DataFrame(rows).set_index("arm")
    decision_text = decision_summary(
        decision.winner, promoted, conflict, version=promotion.version, note=promotion.reason
    )
    equity = {name: arm.equity for name, arm in evaluation.arms.items()}
    uplift = _uplift(ga_meta)
    yield Output(
        table.reset_index(),
        metadata={
            **md.profile_metadata(),
            "experiment_id": experiment_id,
            "decision": decision_text,
            "winner": decision.winner or "none",
            "reason": decision.reason,
            "decision_rule": rule.describe(),
            "promotion": promotion_text,
            "promoted": promoted,
            "conflict": conflict or "none",
            "active_version_read": active.version if active else 0,
            "arms": arms_markdown(table),
            "equity_curves": line_plot_markdown(
                "Held-out equity of every arm (folds chained)", equity, "held-out step", "equity"
            ),
            "held_out_steps": int(decision.n_periods),
            "folds": ab.folds,
            "train_bars": len(split.train),
            "test_bars": len(split.test),
            "window_start": str(frame.index[0]),
            "window_end": str(frame.index[-1]),
            "ga_task_id": str(ga_meta.get("task_id", "unknown")),
            "ga_generations_run": int(ga_meta.get("generations_run") or 0),
            "lineage": MetadataValue.md(
                f"active config v{promotion.version} <- experiment `{experiment_id}` <- GA task "
                f"`{ga_meta.get('task_id', 'unknown')}` (generations 0..{ga_meta.get('generations_run', '?')}) "
                f"<- quote_snapshots / indicator_frame of {market} {frame.index[0].date()} .. "
                f"{frame.index[-1].date()}; `rof experiments show {experiment_id}`"
                if promoted
                else f"nothing promoted; experiment `{experiment_id}` <- GA task `{ga_meta.get('task_id', 'unknown')}` "
                f"<- {market} {frame.index[0].date()} .. {frame.index[-1].date()}"
            ),
            "n_trials_for_dsr": searched,
            "trials_sharpe_variance": trials_variance if trials_variance is not None else "n/a",
            "trials_rule": "the deflated Sharpe ratio and Holm count every configuration ever scored for "
            "this market, experiment and window (the state store's trial ledger), so re-running any "
            "partition gives the same decision",
            **finite_metadata(uplift),
            **upstream_links(context, ("quote_snapshots", "indicator_frame", "ga_population")),
            "wall_seconds": round(time.perf_counter() - started, 3),
        },
    )


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


@asset(
    partitions_def=market_day_partitions,
    group_name="experiments",
    io_manager_key="frame_io_manager",
    kinds={"pandas"},
    output_required=False,  # nothing without a champion to learn from
    retry_policy=STATE_STORE_RETRY,
    ins={"ga_population": AssetIn(), "ab_report": AssetIn()},
    deps=[AssetDep("indicator_frame")],
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
    md = market_day(context, settings)
    config, market, day, end = md.settings, md.market, md.day, md.end
    ab = config.ab_tests
    _, split = window_frame(context, md, quote_store)
    space = SearchSpace.from_mapping(ab.experiment.ga.search_space)
    champions = ga_population[ga_population["champion"]]
    if champions.empty:
        context.log.info(f"{market} {day}: no GA champion (flat landscape), no knowledge to add")
        return
    champion = champions.iloc[0]
    held_out = ab_report.set_index("arm")
    score = float(held_out.loc[CHAMPION, "sharpe"]) if CHAMPION in held_out.index else float("nan")
    ga_meta = ga_metadata(context)
    task = TaskRecord(
        task_id=knowledge_task_id(market.key, day.isoformat(), ab.experiment.id),
        market=market.key,
        finished_at=min(end, datetime.now(UTC)),
        features=market_features(split.train),
        best_params=genes_of(champion, space),
        score=score,
        outcome={k: float(held_out.loc[CHAMPION, k]) for k in ("total_return", "max_drawdown")}
        if CHAMPION in held_out.index
        else {},
        generations=int(ga_meta.get("generations_run") or 0) or None,
        artifact=q_table_artifact(context),  # transfer_learning.seed_q_table warm-starts from it
    )
    retention = ab.meta_learning.knowledge_retention_days
    try:
        with state_store.open() as store:
            store.add_knowledge_task(task)
            pruned = store.prune_knowledge(retention, now=end)
            tasks = store.knowledge_tasks(now=end, retention_days=retention)
        stored = "state store"
    except TransientError as exc:
        raise state_store_failure(md, "the knowledge base", exc) from exc
    rows = [
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
    yield Output(
        pd.DataFrame(rows),
        metadata={
            "market": market.key,
            "date": day.isoformat(),
            "task_id": task.task_id,
            "stored": stored,
            "tasks_retained": len(tasks),
            "tasks_pruned": int(pruned),
            "retention_days": retention,
            "meta_learning": "on" if ab.meta_learning.enabled else "off",
            "transfer_learning": "on" if ab.transfer_learning.enabled else "off",
            "best_params": MetadataValue.json(task.best_params),
            "features": MetadataValue.json({k: v for k, v in task.to_dict()["features"].items()}),
            **finite_metadata({"held_out_sharpe": score}),
        },
    )
