"""What every market-day asset opens with: the partition's market and day, the market's profile
(calendar, bar interval, window, costs), closed days, and the window read in one store query."""

from dataclasses import dataclass
from datetime import date, datetime

from dagster import AssetExecutionContext, Backoff, Failure, RetryPolicy

from rof_pipelines.adapters.resources import QuoteStoreResource, RofSettings
from rof_pipelines.adapters.windows import read_frame, read_window
from rof_pipelines.core.market import Market, MarketProfile
from rof_pipelines.core.window_frame import WindowFrame
from rof_pipelines.core.windows import WindowSplit, split_train_test
from rof_pipelines.errors import ConfigError, PermanentError
from rof_pipelines.partitions import day_bounds, market_and_day
from rof_pipelines.settings import Settings

# A result that could not be stored fails the step, which retries (then the run retry policy applies).
STATE_STORE_RETRY = RetryPolicy(max_retries=2, delay=5, backoff=Backoff.EXPONENTIAL)


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

    def profile_metadata(self) -> dict[str, object]:
        return {
            "market": self.market.key,
            "date": self.day.isoformat(),
            "calendar": self.profile.calendar_name,
            "bar_interval": self.profile.as_dict()["bar_interval"],
            "bars_per_year": round(self.profile.bars_per_year, 2),
            "costs": self.profile.costs_text(),
        }


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


def _permanent(exc: PermanentError) -> Failure:
    return Failure(description=str(exc), allow_retries=False)


def day_frame(context: AssetExecutionContext, md: MarketDay, quote_store: QuoteStoreResource) -> WindowFrame:
    try:
        with quote_store.open() as store:
            return read_frame(store, md.profile, md.start, md.end)
    except PermanentError as exc:
        raise _permanent(exc) from exc


def window_frame(
    context: AssetExecutionContext, md: MarketDay, quote_store: QuoteStoreResource
) -> tuple[WindowFrame, WindowSplit]:
    """The market's window ending with the day, and its train/held-out split; too few bars for the
    agent, the GA and the A/B test fail the step with the numbers."""
    try:
        with quote_store.open() as store:
            window = read_window(store, md.profile, md.end)
    except PermanentError as exc:
        raise _permanent(exc) from exc
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


def state_store_failure(md: MarketDay, what: str, exc: Exception) -> Failure:
    """The state store holds what makes a result auditable (checkpoints, trial counts, experiments,
    the active config): without it the step fails visibly and is retried, never a green run that
    lost its record."""
    return Failure(
        description=(
            f"{md.market} {md.day}: the state store is unavailable ({type(exc).__name__}: {exc}); "
            f"{what} cannot be stored or read, so this step fails instead of reporting a result that "
            f"was not recorded. It is retried; start the state store's PostgreSQL (state_storage.*)"
        ),
        allow_retries=True,
    )
