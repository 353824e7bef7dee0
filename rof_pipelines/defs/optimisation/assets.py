"""``ga_population``: the genetic optimiser's final population for one market and day."""

import base64
import io
import time
from datetime import datetime
from typing import Optional

import numpy as np
import pandas as pd
from dagster import AssetDep, AssetExecutionContext, Config, MetadataValue, Output, asset

from rof_pipelines.adapters.experiments import knowledge_task_id, seed_plan_for
from rof_pipelines.adapters.optimisation import (
    Optimisation,
    generations_to_reach,
    market_base_params,
    prepare_optimisation,
    record_trials,
    run_optimisation,
)
from rof_pipelines.adapters.resources import QuoteStoreResource, RofSettings, StateStoreResource
from rof_pipelines.core.ga.engine import OBJECTIVES, GAResult, objectives_dict
from rof_pipelines.core.ga.space import SearchSpace
from rof_pipelines.defs.market_day import (
    STATE_STORE_RETRY,
    market_day,
    skipped_closed_day,
    state_store_failure,
    window_frame,
)
from rof_pipelines.defs.reporting import finite_metadata, line_plot_markdown, metrics_markdown
from rof_pipelines.errors import TransientError
from rof_pipelines.partitions import market_day_partitions
from rof_pipelines.settings import Settings


class GAPopulationConfig(Config):
    """Run-time overrides of ``ab_tests.experiment.ga`` (a smaller GA for a quick look, say)."""

    generations: Optional[int] = None  # noqa: UP045 - Dagster's config schema needs Optional
    population_size: Optional[int] = None  # noqa: UP045
    workers: Optional[int] = None  # noqa: UP045 - default: worker_pool.ab_optimizer.max_workers


def population_frame(result: GAResult) -> pd.DataFrame:
    """One row per final genome: decoded genes, objectives, front membership, champion."""
    genes = pd.DataFrame(result.genomes, columns=list(result.space.names))
    objectives = pd.DataFrame([objectives_dict(f) for f in result.fitness], columns=list(OBJECTIVES))
    frame = pd.concat([genes, objectives], axis=1)
    frame["pareto"] = result.pareto
    # A flat landscape has no champion: any pick would be arbitrary.
    frame["champion"] = (np.arange(len(frame)) == result.champion) & (not result.flat)
    return frame


def pareto_plot_markdown(frame: pd.DataFrame) -> MetadataValue:
    """Return against drawdown, Sharpe as colour; the front highlighted, the champion starred."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 3.6), dpi=100)
    rest, front = frame[~frame["pareto"]], frame[frame["pareto"]]
    axes.scatter(rest["max_drawdown"], rest["total_return"], c="lightgrey", s=14, label="population")
    points = axes.scatter(
        front["max_drawdown"],
        front["total_return"],
        c=front["sharpe"],
        cmap="viridis",
        s=28,
        label="Pareto front",
    )
    champ = frame[frame["champion"]]
    axes.scatter(champ["max_drawdown"], champ["total_return"], marker="*", s=220, c="red", label="champion")
    figure.colorbar(points, ax=axes, label="Sharpe")
    axes.set_xlabel("max drawdown")
    axes.set_ylabel("total return")
    axes.set_title("Final population (validation part of the training data)")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return MetadataValue.md(f"![Pareto front](data:image/png;base64,{encoded})")


@asset(
    partitions_def=market_day_partitions,
    group_name="optimisation",
    io_manager_key="frame_io_manager",
    kinds={"pandas", "numba"},
    deps=[AssetDep("indicator_frame")],
    output_required=False,  # nothing on a day the market is closed
    retry_policy=STATE_STORE_RETRY,
)
def ga_population(
    context: AssetExecutionContext,
    config: GAPopulationConfig,
    settings: RofSettings,
    quote_store: QuoteStoreResource,
    state_store: StateStoreResource,
):
    """NSGA-II search (pygad) over the RL agent's and the strategy's parameters for the market, on the
    training part (first `ab_tests.train_fraction`) of the `ab_tests.data_period` window ending with this
    day - never its held-out part. With meta/transfer learning on, the initial population is seeded from
    the knowledge base (metadata `seeding` says from which tasks). Objectives: return, Sharpe and max drawdown of the trained agent on the last
    `validation_fraction` of that training part. Checkpoints every `checkpoint_interval` generations
    into the state store and resumes from them after a restart. Stored: the final population with its
    objectives, Pareto-front flags and the champion (rule: core/ga/engine.py)."""
    md = market_day(context, settings)
    if skipped_closed_day(context, md):
        return
    settings_obj, market, day = md.settings, md.market, md.day
    window, split = window_frame(context, md, quote_store)
    frame = window.frame
    end_ts = pd.Timestamp(md.end)
    window_start = frame.index[0].to_pydatetime()
    overrides = {
        name: value
        for name, value in (("generations", config.generations), ("population_size", config.population_size))
        if value is not None
    }
    if "population_size" in overrides:
        size = overrides["population_size"]
        overrides.update(min_population=min(size, 20), max_population=max(size, 2 * size))
    ab = settings_obj.ab_tests
    seeding: dict = {"seeds": [], "reason": "meta-learning off; transfer learning off; 0 seeds"}
    if ab.meta_learning.enabled or ab.transfer_learning.enabled:  # warm start from the knowledge base
        try:
            with state_store.open() as store:
                plan = seed_plan_for(
                    store,
                    ab,
                    market.key,
                    split.train,
                    end_ts.to_pydatetime(),
                    population_size=overrides.get("population_size", ab.experiment.ga.population_size),
                    gene_names=SearchSpace.from_mapping(ab.experiment.ga.search_space).names,
                    exclude_ids=[knowledge_task_id(market.key, day.isoformat(), ab.experiment.id)],
                )
            seeding = plan.to_dict()
        except TransientError as exc:
            seeding["reason"] = f"no seeds: state store unavailable ({type(exc).__name__})"
        context.log.info(f"{market} GA seeding: {seeding['reason']}")
    job = prepare_optimisation(
        settings_obj,
        market.key,
        split.train,
        window_start,
        end_ts.to_pydatetime(),
        base=market_base_params(settings_obj, md.profile),
        workers=config.workers,
        ga_overrides=overrides,
        seeds=seeding["seeds"],
    )

    def log_generation(stats: dict) -> None:
        context.log.info(
            f"{market} generation {stats['generation']}/{job.ga.generations}: best Sharpe "
            f"{stats['best_sharpe']:.3f}, best return {stats['best_return']:+.4f}, population "
            f"{stats['population']}, mutation {stats['mutation_rate']:.3f}, ETA {stats['eta_seconds']:.1f}s"
        )

    started = time.perf_counter()
    try:
        with state_store.open() as store:
            result = run_optimisation(job, store, on_generation=log_generation)
            wall = time.perf_counter() - started
            uplift, cold = measure_uplift(context, settings_obj, job, result, split.train, window_start, end_ts, overrides)
            n_trials, trials_variance = record_trials(store, job, result)
            if cold is not None:
                n_trials, trials_variance = record_trials(store, cold[0], cold[1])
    except TransientError as exc:
        raise state_store_failure(md, "the GA's checkpoints and trial count", exc) from exc
    checkpointing = "state store"

    population = population_frame(result)
    champion = result.space.decode(result.champion_genome, job.data.base)
    landscape = "varied"
    if result.flat:
        objectives = objectives_dict(result.fitness[0])
        landscape = (
            f"flat: all {len(population)} genomes score the same ({objectives}); no configuration "
            f"trades profitably under these costs ({md.profile.costs_text()}), so no champion is named"
        )
        context.log.warning(f"{market}: {landscape}")
    history = result.history
    gens = [h["generation"] for h in history]
    champion_objectives = finite_metadata(result.champion_objectives())
    yield Output(
        population,
        metadata={
            **md.profile_metadata(),
            "task_id": job.key.task_id,
            "experiment_id": job.key.experiment_id,
            "train_bars": len(split.train),
            "window_start": str(frame.index[0]),
            "window_end": str(frame.index[-1]),
            "generations_run": result.generations_run,
            "stop_reason": result.stop_reason,
            "resumed_from_generation": -1 if result.resumed_from is None else result.resumed_from,
            "checkpointing": checkpointing,
            "seeded": len(job.seeds),
            "seeding": MetadataValue.json(seeding),
            **uplift,
            "workers": job.workers,
            "evaluations": result.evaluations,
            "trials": n_trials,
            "trials_sharpe_variance": trials_variance if trials_variance is not None else "n/a",
            "trials_rule": "every configuration ever scored for this market, experiment and window "
            "(resumed, rerun, seeded and cold runs alike), stored in the state store; the A/B test's "
            "deflated Sharpe ratio and Holm count them all",
            "cache_hits": result.cache_hits,
            "wall_seconds": round(wall, 3),
            "population_size": len(population),
            "pareto_size": int(population["pareto"].sum()),
            "landscape": landscape,
            "champion_rule": "Pareto-front member nearest the ideal point after min-max normalising "
            "each objective over the front; ties: Sharpe, return, drawdown, genome; none when every "
            "genome scores the same",
            **(
                {}
                if result.flat
                else {
                    "champion_params": MetadataValue.json(champion.to_dict()),
                    "champion": metrics_markdown({"champion (validation)": champion_objectives}),
                    **{f"champion/{k}": v for k, v in champion_objectives.items()},
                }
            ),
            "fitness_per_generation": line_plot_markdown(
                "Sharpe per generation",
                {
                    "best Sharpe": [h["best_sharpe"] for h in history],
                    "mean Sharpe": [h["mean_sharpe"] for h in history],
                },
                "generation",
                "Sharpe",
                x=gens,
            ),
            "return_per_generation": line_plot_markdown(
                "Return per generation",
                {
                    "best return": [h["best_return"] for h in history],
                    "mean return": [h["mean_return"] for h in history],
                },
                "generation",
                "total return",
                x=gens,
            ),
            "pareto_front": pareto_plot_markdown(population),
        },
    )


def measure_uplift(
    context: AssetExecutionContext,
    settings_obj: Settings,
    job: Optimisation,
    result: GAResult,
    train: pd.DataFrame,
    window_start: datetime,
    end_ts: pd.Timestamp,
    overrides: dict,
) -> tuple[dict, tuple[Optimisation, GAResult] | None]:
    """What warm-starting bought: the same GA run cold (no seeds, no checkpoints), then the
    generations and evaluations each run needed to reach the cold champion's Sharpe. Returns the
    metadata and the cold run (its trials count too)."""
    if not job.seeds:
        return {"uplift/measured": "no: the population was not seeded"}, None
    if not settings_obj.ab_tests.measure_uplift:
        return {"uplift/measured": "no: ab_tests.measure_uplift is off"}, None
    market = job.key.market
    cold_job = prepare_optimisation(
        settings_obj,
        market,
        train,
        window_start,
        end_ts.to_pydatetime(),
        base=job.data.base,
        workers=job.workers,
        ga_overrides=overrides,
        seeds=[],
    )
    cold = run_optimisation(cold_job, None)
    target = max(entry["best_sharpe"] for entry in cold.history)
    seeded_gen = generations_to_reach(result.history, target)
    cold_gen = generations_to_reach(cold.history, target)
    context.log.info(
        f"{market} uplift: cold champion Sharpe {target:.3f} reached at generation {seeded_gen} seeded "
        f"vs {cold_gen} cold"
    )
    return {
        "uplift/measured": "yes: same GA settings, slice schedule and seed, without the seeds",
        "uplift/cold_champion_sharpe": float(target),
        "uplift/generations_to_cold_fitness_seeded": -1 if seeded_gen is None else seeded_gen,
        "uplift/generations_to_cold_fitness_cold": -1 if cold_gen is None else cold_gen,
        "uplift/evaluations_seeded": int(result.evaluations),
        "uplift/evaluations_cold": int(cold.evaluations),
    }, (cold_job, cold)
