"""The nightly optimisation: every known market that traded yesterday, yesterday's partition, once."""

from datetime import datetime, timedelta
from typing import Any

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from rof_pipelines.adapters.resources import RofSettings
from rof_pipelines.partitions import market_day_key, markets_partitions
from rof_pipelines.settings import Settings


def nightly_requests(
    markets: list[str], scheduled: datetime, settings: Settings | None = None
) -> list[RunRequest]:
    """One run per market for the day before ``scheduled``, if the market's calendar had trading that
    day (no FX run for a Saturday, no stock run for a holiday); run keys make a re-evaluation (a
    restarted daemon, a second tick) a no-op instead of a second run."""
    day = (scheduled - timedelta(days=1)).date()
    if settings is not None:
        markets = [m for m in markets if settings.market_profile(m).calendar.is_open_day(day)]
    return [
        RunRequest(
            run_key=f"nightly:{day.isoformat()}:{market}",
            partition_key=market_day_key(market, day),
            tags={"rof/trigger": "schedule", "rof/market": market, "rof/date": day.isoformat()},
        )
        for market in sorted(markets)
    ]


def build_nightly_optimisation_schedule(
    at_load: Settings, nightly_optimisation_job: Any
) -> ScheduleDefinition:
    """``nightly_optimisation_schedule`` at system_setup.schedules.nightly_optimisation's cron and
    timezone, as they were when the code location loaded."""
    nightly = at_load.system_setup.schedules.nightly_optimisation

    @schedule(
        name="nightly_optimisation_schedule",
        job=nightly_optimisation_job,
        cron_schedule=nightly.cron,
        execution_timezone=nightly.timezone,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Nightly: optimise every market in the `markets` partitions for yesterday "
        "(system_setup.schedules.nightly_optimisation).",
    )
    def nightly_optimisation_schedule(context: ScheduleEvaluationContext, settings: RofSettings):
        markets = context.instance.get_dynamic_partitions(markets_partitions.name)
        if not markets:
            return SkipReason(
                "no markets yet: add them in config.yaml (storage.markets) or via a `tasks` message"
            )
        requests = nightly_requests(markets, context.scheduled_execution_time, settings.load())
        if not requests:
            day = (context.scheduled_execution_time - timedelta(days=1)).date()
            return SkipReason(f"no market traded on {day} (all {len(markets)} markets' calendars closed)")
        return requests

    return nightly_optimisation_schedule
