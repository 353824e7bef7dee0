"""``ga_population`` as an island GA (``ab_tests.experiment.ga.islands > 1`` at load): a graph-backed
asset with the single GA's key, partitions, IO manager, output frame and metadata, whose steps are the
islands of each epoch (core/ga/islands.py).

Dagster graphs are acyclic and dynamic fan-outs do not nest, so the epochs are unrolled at load
(``ceil(generations / migration_interval)`` of them)::

    ga_islands_start -> K x ga_island_epoch_1 -> ga_islands_migrate_1 -> K x ga_island_epoch_2 -> ...
                     -> K x ga_island_epoch_E -> ga_islands_merge (the population frame)

What passes between steps is a small ticket (task id, island, epoch, the seeding plan and overrides);
the populations go through the state store (``store.islands``), so a step may run in any process or
on any machine, and a re-executed step reuses an island-epoch already stored. On a day the market is
closed the start step yields no island and nothing is materialised.
"""

import time
from typing import Any

from dagster import (
    AssetIn,
    BackfillPolicy,
    ConfigMapping,
    DynamicOut,
    DynamicOutput,
    In,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    graph_asset,
    op,
)

from rof_pipelines.adapters.optimisation import (
    Optimisation,
    finish_islands,
    record_trials,
    run_island_step,
    start_islands,
)
from rof_pipelines.adapters.pushgateway import pushed_step
from rof_pipelines.adapters.resources import QuoteStoreResource, RofSettings, StateStoreResource
from rof_pipelines.core.ga.islands import IslandPlan
from rof_pipelines.defs.load_time import step_tags
from rof_pipelines.defs.market_day import MarketWindow, open_market_window
from rof_pipelines.defs.optimisation.assets import (
    GAPopulationConfig,
    GARun,
    ga_overrides,
    landscape_text,
    measure_uplift,
    population_frame,
    population_metadata,
    seeding_plan,
    window_optimisation,
)
from rof_pipelines.defs.profiling import profiled_step
from rof_pipelines.defs.resilience import TRANSIENT_RETRY, state_store_required
from rof_pipelines.errors import DataValidationError
from rof_pipelines.partitions import market_day_partitions
from rof_pipelines.settings import GAConfig, Settings


def island_op_tags(at_load: Settings) -> dict[str, str]:
    """The tags of every op of the island graph: under the celery executor each island step is a task
    on the ab_optimizer pool's queue, like the single GA's step."""
    return step_tags("ab_optimizer")


def island_plan(ga: GAConfig) -> IslandPlan:
    """The islands and epochs the graph is unrolled into (settings at load)."""
    from rof_pipelines.core.ga.engine import GASettings

    return IslandPlan.from_settings(GASettings.from_config(ga, 1))


def _island_job(context: OpExecutionContext, mw: MarketWindow, ticket: dict[str, Any]) -> Optimisation:
    """The task of the ticket, rebuilt from this step's own read of the window; a window that changed
    since the start step fails the step (its islands would belong to another task)."""
    md = mw.day
    job = window_optimisation(
        mw, workers=ticket["workers"], overrides=ticket["overrides"], seeds=ticket["seeding"]["seeds"]
    )
    if job.key.task_id != ticket["task_id"]:
        raise DataValidationError(
            f"{md.where}: the window or settings changed during the run ({job.key.task_id} is not "
            f"{ticket['task_id']}); rerun the partition"
        )
    return job


def _open(
    context: OpExecutionContext, settings: RofSettings, quote_store: QuoteStoreResource
) -> MarketWindow:
    mw = open_market_window(context, settings, quote_store)  # type: ignore[arg-type]
    if mw is None:  # the start step saw an open day: only a changed calendar gets here
        raise DataValidationError("the market's calendar changed during the run: the day is closed now")
    return mw


def _observed(fn: Any) -> Any:
    """An island op's body with what every market-day step has: its figures pushed as
    ``ga_population`` (the GA's generations included), and per-run profiling, one artifact per step."""
    return profiled_step(pushed_step(fn, asset="ga_population"), per_step=True)


def build_island_ga_population(at_load: Settings):  # type: ignore[no-untyped-def]
    """The island graph asset for the settings at load (the number of islands and epochs)."""
    plan = island_plan(at_load.ab_tests.experiment.ga)
    tags = island_op_tags(at_load)

    @op(
        name="ga_islands_start",
        ins={"indicator_frame": In(Nothing)},
        out=DynamicOut(dict),
        tags=tags,
        retry_policy=TRANSIENT_RETRY,
    )
    @_observed
    def ga_islands_start(
        context: OpExecutionContext,
        config: GAPopulationConfig,
        settings: RofSettings,
        quote_store: QuoteStoreResource,
        state_store: StateStoreResource,
    ):
        """Window, seeding and the islands' initial populations (stored as epoch 0); one ticket per
        island. Nothing on a closed day."""
        mw = open_market_window(context, settings, quote_store)  # type: ignore[arg-type]
        if mw is None:
            return
        overrides = ga_overrides(config)
        ga = mw.day.settings.ab_tests.experiment.ga
        seeding = seeding_plan(context, state_store, mw, overrides.get("population_size", ga.population_size))  # type: ignore[arg-type]
        ticket = {"seeding": seeding, "overrides": overrides, "workers": config.workers}
        job = window_optimisation(mw, workers=config.workers, overrides=overrides, seeds=seeding["seeds"])
        now = IslandPlan.from_settings(job.ga)
        if (now.islands, now.epochs) != (plan.islands, plan.epochs):
            raise DataValidationError(
                f"{mw.day.where}: {now.islands} islands x {now.epochs} epochs asked for, but the code "
                f"location loaded {plan.islands} x {plan.epochs}; islands and the number of epochs "
                f"(generations / migration_interval) are fixed at load: reload it, or keep them"
            )
        with state_store_required(mw.day.where, "the island GA's populations"), state_store.open() as store:
            start_islands(job, store)
        context.log.info(
            f"{mw.day.market}: {plan.islands} islands x {plan.epochs} epochs, task {job.key.task_id}"
        )
        for island in range(plan.islands):
            yield DynamicOutput(
                {**ticket, "task_id": job.key.task_id, "island": island, "epoch": 1},
                mapping_key=f"island_{island}",
            )

    @op(name="ga_island_epoch", out=Out(dict), tags=tags, retry_policy=TRANSIENT_RETRY)
    @_observed
    def ga_island_epoch(
        context: OpExecutionContext,
        ticket: dict,
        settings: RofSettings,
        quote_store: QuoteStoreResource,
        state_store: StateStoreResource,
    ):  # no return annotation: under a profile the body's dict comes back as an Output
        """One island for one epoch: its immigrants and state from the store, the epoch's generations,
        the result stored (or reused when stored already)."""
        mw = _open(context, settings, quote_store)
        island, epoch = ticket["island"], ticket["epoch"]
        with state_store_required(mw.day.where, "the island GA's populations"), state_store.open() as store:
            job = _island_job(context, mw, ticket)
            result, reused = run_island_step(job, store, island, epoch)
        what = "reused the stored" if reused else f"computed ({result.evaluations} evaluations)"
        context.log.info(f"{mw.day.market} island {island} epoch {epoch}/{plan.epochs}: {what} result")
        return {**ticket, "reused": reused, "evaluations": 0 if reused else result.evaluations}

    @op(name="ga_islands_migrate", out=DynamicOut(dict), tags=tags)
    def ga_islands_migrate(context: OpExecutionContext, tickets: list) -> Any:
        """The barrier between epochs: every island of the epoch is stored, so each next island can
        take its neighbour's emigrants; one ticket per island for the next epoch."""
        for ticket in sorted(tickets, key=lambda t: t["island"]):
            yield DynamicOutput(
                {**ticket, "epoch": ticket["epoch"] + 1}, mapping_key=f"island_{ticket['island']}"
            )

    @op(
        name="ga_islands_merge",
        out=Out(io_manager_key="frame_io_manager", is_required=False),
        tags=tags,
        retry_policy=TRANSIENT_RETRY,
    )
    @_observed
    def ga_islands_merge(
        context: OpExecutionContext,
        tickets: list,
        settings: RofSettings,
        quote_store: QuoteStoreResource,
        state_store: StateStoreResource,
    ):
        """The last epoch's islands as one population, with the single GA's frame and metadata."""
        if not tickets:
            return
        started = time.perf_counter()
        mw = _open(context, settings, quote_store)
        ticket = tickets[0]
        with (
            state_store_required(mw.day.where, "the GA's island epochs and trial count"),
            state_store.open() as store,
        ):
            job = _island_job(context, mw, ticket)
            result = finish_islands(job, store)
            uplift, cold = measure_uplift(context, mw, job, result, ticket["overrides"])  # type: ignore[arg-type]
            n_trials, variance = record_trials(store, job, result)
            if cold is not None:
                n_trials, variance = record_trials(store, cold[0], cold[1])
        run = GARun(
            job, result, result.wall_seconds + time.perf_counter() - started, uplift, n_trials, variance
        )
        population = population_frame(result)
        landscape = landscape_text(result, population, mw)
        if result.flat:
            context.log.warning(f"{mw.day.market}: {landscape}")
        metadata = population_metadata(mw, run, population, ticket["seeding"], landscape)
        metadata.update(islands=plan.islands, epochs=plan.epochs, checkpointing="state store (island epochs)")
        yield Output(population, metadata=metadata)

    def to_start_op(config: Any) -> dict[str, Any]:
        """The asset's run config (``ops: {ga_population: {config: ...}}``, as the single GA's) to the
        start op."""
        values = config.model_dump() if hasattr(config, "model_dump") else dict(config)
        return {"ga_islands_start": {"config": {k: v for k, v in values.items() if v is not None}}}

    @graph_asset(
        name="ga_population",
        group_name="optimisation",
        kinds={"pandas", "numba"},
        partitions_def=market_day_partitions,
        # One partition per run: the island steps are one partition's each (the single GA's ranges
        # of days per backfill run do not apply; a job with both takes the smaller).
        backfill_policy=BackfillPolicy.multi_run(1),
        ins={"indicator_frame": AssetIn(dagster_type=Nothing)},
        config=ConfigMapping(config_fn=to_start_op, config_schema=GAPopulationConfig.to_fields_dict()),
        description=ISLAND_DESCRIPTION,
    )
    def ga_population(indicator_frame):  # type: ignore[no-untyped-def]
        tickets = ga_islands_start(indicator_frame)
        for epoch in range(1, plan.epochs + 1):
            done = tickets.map(ga_island_epoch.alias(f"ga_island_epoch_{epoch}")).collect()
            if epoch < plan.epochs:
                tickets = ga_islands_migrate.alias(f"ga_islands_migrate_{epoch}")(done)
        return ga_islands_merge(done)

    return ga_population


ISLAND_DESCRIPTION = (
    "NSGA-II search (pygad) as an island GA: `islands` sub-populations, each its own step per epoch of "
    "`migration_interval` generations, the best `migrants` of each island replacing the worst of the "
    "next (ring) between epochs, through the state store. Same seed, same champion and front wherever "
    "and in whatever order the island steps run. Otherwise as the single GA: training part only, "
    "objectives return, Sharpe and max drawdown on its last `validation_fraction`, stored: the final "
    "population with objectives, Pareto-front flags and the champion (rule: core/ga/engine.py)."
)
