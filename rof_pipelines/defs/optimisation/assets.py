"""``ga_population``: the genetic optimiser's final population for one market and day."""

import base64
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pandas as pd
from dagster import AssetDep, AssetExecutionContext, Config, MetadataValue, Output

from rof_pipelines.adapters.optimisation import (
    Optimisation,
    prepare_optimisation,
    record_trials,
    run_optimisation,
)
from rof_pipelines.adapters.resources import QuoteStoreResource, RofSettings, StateStoreResource
from rof_pipelines.core.experiment import market_base_params
from rof_pipelines.core.ga.engine import OBJECTIVES, GAResult, objectives_dict
from rof_pipelines.core.ga.seeding import generations_to_reach
from rof_pipelines.defs.load_time import step_tags
from rof_pipelines.defs.market_day import MarketWindow, market_day_asset, open_market_window
from rof_pipelines.defs.reporting import finite_metadata, line_plot_markdown, metrics_markdown
from rof_pipelines.defs.resilience import state_store_optional, state_store_required


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


def ga_overrides(config: GAPopulationConfig) -> dict[str, int]:
    """The run's overrides of ``ab_tests.experiment.ga``; a population size also bounds the adaptive
    resizing: at least 20 (or the size, if smaller), at most twice the size."""
    overrides = {
        name: value
        for name, value in (("generations", config.generations), ("population_size", config.population_size))
        if value is not None
    }
    if "population_size" in overrides:
        size = overrides["population_size"]
        overrides.update(min_population=min(size, 20), max_population=2 * size)
    return overrides


def seeding_plan(
    context: AssetExecutionContext, state_store: StateStoreResource, mw: MarketWindow, population_size: int
) -> dict[str, Any]:
    """Seeds from the knowledge base (meta/transfer learning) as ``{seeds, reason, ...}``. Seeding is
    optional: without the state store the GA starts cold and the reason says why."""
    md, ab = mw.day, mw.day.settings.ab_tests
    if not (ab.meta_learning.enabled or ab.transfer_learning.enabled):
        return {"seeds": [], "reason": "meta-learning off; transfer learning off; 0 seeds"}
    plan = None
    with (
        state_store_optional(context.log, f"{md.market} GA seeding") as degraded,
        state_store.open() as store,
    ):
        plan = mw.seed_plan(store, population_size=population_size)
    seeding = (
        plan.to_dict()
        if plan is not None and not degraded
        else {"seeds": [], "reason": f"no seeds: {degraded.reason}"}
    )
    context.log.info(f"{md.market} GA seeding: {seeding['reason']}")
    return seeding


def generation_logger(context: AssetExecutionContext, mw: MarketWindow, job: Optimisation) -> Callable:
    def log_generation(stats: dict) -> None:
        context.log.info(
            f"{mw.day.market} generation {stats['generation']}/{job.ga.generations}: best Sharpe "
            f"{stats['best_sharpe']:.3f}, best return {stats['best_return']:+.4f}, population "
            f"{stats['population']}, mutation {stats['mutation_rate']:.3f}, ETA {stats['eta_seconds']:.1f}s"
        )

    return log_generation


@dataclass(frozen=True)
class GARun:
    """The optimisation's result with what was recorded about it."""

    job: Optimisation
    result: GAResult
    wall_seconds: float
    uplift: dict[str, Any]
    trials: int
    trials_variance: float | None


def optimise_and_record(
    context: AssetExecutionContext,
    state_store: StateStoreResource,
    mw: MarketWindow,
    job: Optimisation,
    overrides: dict[str, int],
) -> GARun:
    """Run (or resume) the GA with checkpoints, measure the seeds' uplift, and add every scored
    configuration to the trial ledger the A/B test deflates by."""
    started = time.perf_counter()
    with (
        state_store_required(mw.day.where, "the GA's checkpoints and trial count"),
        state_store.open() as store,
    ):
        result = run_optimisation(job, store, on_generation=generation_logger(context, mw, job))
        wall = time.perf_counter() - started
        uplift, cold = measure_uplift(context, mw, job, result, overrides)
        n_trials, trials_variance = record_trials(store, job, result)
        if cold is not None:
            n_trials, trials_variance = record_trials(store, cold[0], cold[1])
    return GARun(job, result, wall, uplift, n_trials, trials_variance)


def window_optimisation(
    mw: MarketWindow, *, workers: int | None, overrides: dict[str, int], seeds: list[Any]
) -> Optimisation:
    """The GA task of a market window's training part: the single asset and every island step build
    it the same way, so they agree on its task id."""
    md = mw.day
    return prepare_optimisation(
        md.settings,
        md.market.key,
        mw.split.train,
        mw.start,
        mw.end,
        base=market_base_params(md.settings.ai_config, md.profile),
        workers=workers,
        ga_overrides=overrides,
        seeds=seeds,
    )


@market_day_asset(
    group_name="optimisation",
    kinds={"pandas", "numba"},
    deps=[AssetDep("indicator_frame")],
    op_tags=step_tags("ab_optimizer"),
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
    mw = open_market_window(context, settings, quote_store)
    if mw is None:
        return
    md = mw.day
    overrides = ga_overrides(config)
    population_size = overrides.get("population_size", md.settings.ab_tests.experiment.ga.population_size)
    seeding = seeding_plan(context, state_store, mw, population_size)
    job = window_optimisation(mw, workers=config.workers, overrides=overrides, seeds=seeding["seeds"])
    run = optimise_and_record(context, state_store, mw, job, overrides)
    population = population_frame(run.result)
    landscape = landscape_text(run.result, population, mw)
    if run.result.flat:
        context.log.warning(f"{md.market}: {landscape}")
    yield Output(population, metadata=population_metadata(mw, run, population, seeding, landscape))


def landscape_text(result: GAResult, population: pd.DataFrame, mw: MarketWindow) -> str:
    """ "varied", or why a flat landscape names no champion."""
    if not result.flat:
        return "varied"
    objectives = objectives_dict(result.fitness[0])
    return (
        f"flat: all {len(population)} genomes score the same ({objectives}); no configuration "
        f"trades profitably under these costs ({mw.day.profile.costs_text()}), so no champion is named"
    )


def champion_metadata(run: GARun) -> dict[str, Any]:
    """The champion's parameters and validation objectives; nothing when the landscape was flat."""
    result = run.result
    if result.flat:
        return {}
    champion = result.space.decode(result.champion_genome, run.job.data.base)
    objectives = finite_metadata(result.champion_objectives())
    return {
        "champion_params": MetadataValue.json(champion.to_dict()),
        "champion": metrics_markdown({"champion (validation)": objectives}),
        **{f"champion/{k}": v for k, v in objectives.items()},
    }


def history_plots(result: GAResult) -> dict[str, MetadataValue]:
    """Sharpe and return per generation, best and mean."""
    history = result.history
    gens = [h["generation"] for h in history]
    return {
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
    }


def population_metadata(
    mw: MarketWindow, run: GARun, population: pd.DataFrame, seeding: dict[str, Any], landscape: str
) -> dict[str, Any]:
    """ga_population's metadata (the UI, ab_report and the tests read these keys)."""
    job, result = run.job, run.result
    return {
        **mw.day.profile_metadata(),
        "task_id": job.key.task_id,
        "experiment_id": job.key.experiment_id,
        "train_bars": len(mw.split.train),
        **mw.bounds_metadata(),
        "generations_run": result.generations_run,
        "stop_reason": result.stop_reason,
        "resumed_from_generation": -1 if result.resumed_from is None else result.resumed_from,
        "checkpointing": "state store",
        "seeded": len(job.seeds),
        "seeding": MetadataValue.json(seeding),
        **run.uplift,
        "workers": job.workers,
        "evaluations": result.evaluations,
        "trials": run.trials,
        "trials_sharpe_variance": run.trials_variance if run.trials_variance is not None else "n/a",
        "trials_rule": "every configuration ever scored for this market, experiment and window "
        "(resumed, rerun, seeded and cold runs alike), stored in the state store; the A/B test's "
        "deflated Sharpe ratio and Holm count them all",
        "cache_hits": result.cache_hits,
        "wall_seconds": round(run.wall_seconds, 3),
        "population_size": len(population),
        "pareto_size": int(population["pareto"].sum()),
        "landscape": landscape,
        "champion_rule": "Pareto-front member nearest the ideal point after min-max normalising "
        "each objective over the front; ties: Sharpe, return, drawdown, genome; none when every "
        "genome scores the same",
        **champion_metadata(run),
        **history_plots(result),
        "pareto_front": pareto_plot_markdown(population),
    }


def measure_uplift(
    context: AssetExecutionContext,
    mw: MarketWindow,
    job: Optimisation,
    result: GAResult,
    overrides: dict[str, int],
) -> tuple[dict, tuple[Optimisation, GAResult] | None]:
    """What warm-starting bought: the same GA run cold (no seeds, no checkpoints), then the
    generations and evaluations each run needed to reach the cold champion's Sharpe. Returns the
    metadata and the cold run (its trials count too)."""
    if not job.seeds:
        return {"uplift/measured": "no: the population was not seeded"}, None
    if not mw.day.settings.ab_tests.measure_uplift:
        return {"uplift/measured": "no: ab_tests.measure_uplift is off"}, None
    market = job.key.market
    cold_job = prepare_optimisation(
        mw.day.settings,
        market,
        mw.split.train,
        mw.start,
        mw.end,
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
