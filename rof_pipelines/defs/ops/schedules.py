"""The nightly optimisation: every known market, yesterday's partition, once."""

from datetime import datetime, timedelta

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from rof_pipelines.defs.jobs import nightly_optimisation_job
from rof_pipelines.defs.load_time import settings_at_load
from rof_pipelines.partitions import market_day_key, markets_partitions

_nightly = settings_at_load().system_setup.schedules.nightly_optimisation


def nightly_requests(markets: list[str], scheduled: datetime) -> list[RunRequest]:
    """One run per market for the day before ``scheduled``; run keys make a re-evaluation (a restarted
    daemon, a second tick) a no-op instead of a second run."""
    day = (scheduled - timedelta(days=1)).date()
    return [
        RunRequest(
            run_key=f"nightly:{day.isoformat()}:{market}",
            partition_key=market_day_key(market, day),
            tags={"rof/trigger": "schedule", "rof/market": market, "rof/date": day.isoformat()},
        )
        for market in sorted(markets)
    ]


@schedule(
    job=nightly_optimisation_job,
    cron_schedule=_nightly.cron,
    execution_timezone=_nightly.timezone,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Nightly: optimise every market in the `markets` partitions for yesterday "
    "(system_setup.schedules.nightly_optimisation).",
)
def nightly_optimisation_schedule(context: ScheduleEvaluationContext):
    markets = context.instance.get_dynamic_partitions(markets_partitions.name)
    if not markets:
        return SkipReason(
            "no markets yet: add them in config.yaml (storage.markets) or via a `tasks` message"
        )
    return nightly_requests(markets, context.scheduled_execution_time)
