"""What every market-day asset shares: how it is declared (:func:`market_day_asset`), and what it
opens with: the partition's market and day, the market's profile (calendar, bar interval, window,
costs), closed days, and the window read in one store query.

:func:`open_market_window` is the one opening of the window assets (q_table, ga_population, ab_report,
strategy_knowledge): ``None`` on a closed day (logged), else the window and its train/held-out split.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    Definitions,
    Failure,
    asset,
)
from dagster._record import copy as record_copy

from rof_pipelines.adapters.experiments import seed_plan_for
from rof_pipelines.adapters.pushgateway import pushed_step
from rof_pipelines.adapters.resources import QuoteStoreResource, RofSettings
from rof_pipelines.adapters.windows import read_frame, read_window
from rof_pipelines.core.experiment import knowledge_task_id
from rof_pipelines.core.ga.space import SearchSpace
from rof_pipelines.core.knowledge import SeedPlan
from rof_pipelines.core.market import Market, MarketProfile
from rof_pipelines.core.window_frame import WindowFrame
from rof_pipelines.core.windows import WindowSplit, split_train_test
from rof_pipelines.defs.partition_ranges import ranged_step
from rof_pipelines.defs.profiling import profiled_step
from rof_pipelines.defs.resilience import TRANSIENT_RETRY, step_errors
from rof_pipelines.errors import ConfigError
from rof_pipelines.partitions import day_bounds, market_and_day, market_day_partitions
from rof_pipelines.settings import Settings

# A backfill runs up to this many partitions of one market per run (defs/partition_ranges.py); one
# run per partition spent most of a backfill starting run workers. system_setup's
# backfill_partitions_per_run replaces it when the code location loads (with_partitions_per_run).
PARTITIONS_PER_RUN = 31


def market_day_asset(*, checks: tuple[str, ...] = (), **kwargs: Any):  # type: ignore[no-untyped-def]
    """``@asset`` with what every market-day asset has: the date x market partitions, the frame IO
    manager, nothing materialised on a day the market is closed (``output_required=False``), the one
    retry policy, its ``checks`` on the same partitions, backfills in runs of up to
    :data:`PARTITIONS_PER_RUN` partitions (each body still sees one partition), and per-run profiling
    (the run tag ``rof/profile: cpu|memory``, ``defs/profiling.py``) and the step's metrics push
    (``adapters/pushgateway.py``). ``kwargs`` go to ``@asset``."""

    def decorate(fn):  # type: ignore[no-untyped-def]
        specs = [
            AssetCheckSpec(name, asset=fn.__name__, partitions_def=market_day_partitions) for name in checks
        ]
        return asset(
            partitions_def=market_day_partitions,
            io_manager_key="frame_io_manager",
            output_required=False,
            retry_policy=TRANSIENT_RETRY,
            check_specs=specs or None,
            backfill_policy=BackfillPolicy.multi_run(PARTITIONS_PER_RUN),
            **kwargs,
        )(ranged_step(profiled_step(pushed_step(fn)), inputs=kwargs.get("ins") or {}))

    return decorate


def with_partitions_per_run(defs: Definitions, partitions_per_run: int) -> Definitions:
    """``defs`` with every ranged market-day asset backfilled in runs of ``partitions_per_run`` days.

    Assets that cannot take a range (a policy of one partition per run, such as the island GA's
    graph) keep theirs."""

    def ranged(item: Any) -> Any:
        policy = getattr(item, "backfill_policy", None)
        if (
            not isinstance(item, AssetsDefinition)
            or policy is None
            or policy.max_partitions_per_run in (None, 1)
            or policy.max_partitions_per_run == partitions_per_run
        ):
            return item
        return item.with_attributes(backfill_policy=BackfillPolicy.multi_run(partitions_per_run))

    # Definitions is a Dagster record: its `copy` keeps jobs, sensors and resources as they are.
    return record_copy(defs, assets=[ranged(item) for item in defs.assets or []])


@dataclass(frozen=True)
class MarketDay:
    settings: Settings
    profile: MarketProfile
    market: Market
    day: date
    start: datetime
    end: datetime

    @property
    def closed_reason(self) -> str | None:
        return self.profile.calendar.closed_reason(self.day)

    @property
    def where(self) -> str:
        """How failures and logs name the partition."""
        return f"{self.market} {self.day}"

    def profile_metadata(self) -> dict[str, object]:
        return {
            "market": self.market.key,
            "date": self.day.isoformat(),
            "calendar": self.profile.calendar_name,
            "bar_interval": self.profile.as_dict()["bar_interval"],
            "bars_per_year": round(self.profile.bars_per_year, 2),
            "costs": self.profile.costs_text(),
        }


@dataclass(frozen=True)
class MarketWindow:
    """An open day's window ending with the day, and its train/held-out split."""

    day: MarketDay
    window: WindowFrame
    split: WindowSplit

    @property
    def frame(self) -> pd.DataFrame:
        return self.window.frame

    @property
    def start(self) -> datetime:
        """The window's first bar."""
        return self.frame.index[0].to_pydatetime()

    @property
    def end(self) -> datetime:
        """Where the window ends: the end of the partition's day."""
        return pd.Timestamp(self.day.end).to_pydatetime()

    def bounds_metadata(self) -> dict[str, str]:
        return {"window_start": str(self.frame.index[0]), "window_end": str(self.frame.index[-1])}

    def seed_plan(
        self, store: Any, *, population_size: int | None = None, exclude_own_task: bool = True
    ) -> SeedPlan:
        """The knowledge base's meta/transfer seeds for this market-day's training part (the GA's
        initial population, the A/B test's transfer arm, the agent's warm start); with
        ``exclude_own_task`` this day's own finished task is not its own source."""
        md, ab = self.day, self.day.settings.ab_tests
        own = knowledge_task_id(md.market.key, md.day.isoformat(), ab.experiment.id)
        return seed_plan_for(
            store,
            ab,
            md.market.key,
            self.split.train,
            self.end,
            population_size=population_size or ab.experiment.ga.population_size,
            gene_names=SearchSpace.from_mapping(ab.experiment.ga.search_space).names,
            exclude_ids=[own] if exclude_own_task else [],
        )


def market_day(context: AssetExecutionContext, settings: RofSettings) -> MarketDay:
    try:
        config = settings.load()
    except ConfigError as exc:  # a bad config is not fixed by retrying
        raise Failure(description=str(exc), allow_retries=False) from exc
    market, day = market_and_day(context.partition_key)
    start, end = day_bounds(day)
    return MarketDay(config, config.market_profile(market), market, day, start, end)


def skipped_closed_day(context: AssetExecutionContext, md: MarketDay) -> bool:
    """A closed day (weekend, holiday) has no work: the step logs why and materialises nothing, so
    the partition stays empty rather than red and later steps of the run are skipped."""
    reason = md.closed_reason
    if reason is None:
        return False
    context.log.info(f"{md.market} {md.day}: skipped, the market is closed: {reason}")
    return True


def closed_day_checks(reason: str, names: tuple[str, ...]) -> Iterator[AssetCheckResult]:
    """The asset's checks on a closed day: passed, saying why nothing was materialised."""
    for name in names:
        yield AssetCheckResult(
            check_name=name,
            passed=True,
            metadata={"market_closed": reason},
            description=f"market closed: {reason}",
        )


def day_frame(context: AssetExecutionContext, md: MarketDay, quote_store: QuoteStoreResource) -> WindowFrame:
    with step_errors(), quote_store.open() as store:
        return read_frame(store, md.profile, md.start, md.end)


def window_frame(
    context: AssetExecutionContext, md: MarketDay, quote_store: QuoteStoreResource
) -> tuple[WindowFrame, WindowSplit]:
    """The market's window ending with the day, and its train/held-out split; too few bars for the
    agent, the GA and the A/B test fail the step with the numbers."""
    with step_errors(), quote_store.open() as store:
        window = read_window(store, md.profile, md.end)
    budget = md.settings.window_budget(len(window.frame))
    problems = budget.problems()
    if problems:
        first = str(window.frame.index[0]) if len(window.frame) else "none"
        raise Failure(
            description=(
                f"{md.market}: the {md.profile.window} window ending {md.day} holds {budget.describe()} "
                f"(first bar {first}); too few: {'; '.join(problems)}. Import earlier history or "
                f"shorten the window"
            ),
            allow_retries=False,
        )
    return window, split_train_test(window.frame, md.settings.ab_tests.train_fraction)


def open_market_window(
    context: AssetExecutionContext, settings: RofSettings, quote_store: QuoteStoreResource
) -> MarketWindow | None:
    """The partition's window, or ``None`` on a day the market is closed (after logging why)."""
    md = market_day(context, settings)
    if skipped_closed_day(context, md):
        return None
    window, split = window_frame(context, md, quote_store)
    return MarketWindow(md, window, split)
