"""RabbitMQ sensors (the seed's TaskWorker): every valid message becomes exactly one run request.

One tick, per queue (DESIGN.md's protocol):
1. back-pressure: when ``queue_size`` runs of the job's pool are already waiting, drain nothing;
2. drain at most ``max_messages_per_tick`` with basic_get, insert them into the inbox in one
   transaction, ack only after COMMIT; malformed messages go to the dead-letter queue with the reason;
3. turn inbox rows after the sensor's cursor into RunRequests whose run_key is the message id (a
   replayed row asks again under the same key, which Dagster ignores), adding markets it has not seen
   to the `markets` partitions in the same result, and move the cursor.
A tick that dies after step 2 or during step 3 loses nothing: the rows stay after the cursor.
No connection outlives the tick. When RabbitMQ is down the tick still serves committed inbox rows and
says why it could not drain; the breaker lets it resume by itself.
"""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from rof_pipelines.adapters.inbox import Inbox, InboxRow
from rof_pipelines.adapters.resources import RabbitMQResource, RofSettings, StateStoreResource
from rof_pipelines.defs.jobs import all_market_day_assets_job, nightly_optimisation_job
from rof_pipelines.defs.load_time import settings_at_load
from rof_pipelines.defs.ops.backups import state_backup_job
from rof_pipelines.errors import StoreUnavailableError
from rof_pipelines.partitions import market_day_key, markets_partitions

WAITING = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING]
INTERVAL = settings_at_load().storage.rabbitmq.sensor_interval_seconds


def _tags(row: InboxRow, **extra: str) -> dict[str, str]:
    return {"rof/trigger": f"message:{row.message_id}", "rof/message_id": row.message_id, **extra}


def task_requests(row: InboxRow) -> list[RunRequest]:
    """Optimise the market for the message's day, or the last complete day when it was sent."""
    payload = row.payload
    day = payload.get("date") or (_created(payload) - timedelta(days=1)).date().isoformat()
    return [
        RunRequest(
            run_key=row.message_id,
            partition_key=market_day_key(payload["market"], day),
            tags=_tags(row, **{"rof/market": payload["market"], "rof/date": day}),
        )
    ]


def quotes_updated_requests(row: InboxRow) -> list[RunRequest]:
    """Rerun every day the new quotes touch (and, through the job, what depends on them)."""
    payload = row.payload
    start = _parse(payload["start"])
    last = _parse(payload["end"]) - timedelta(microseconds=1)
    days = [(start + timedelta(days=i)).date() for i in range((last.date() - start.date()).days + 1)]
    return [
        RunRequest(
            run_key=f"{row.message_id}:{day.isoformat()}",
            partition_key=market_day_key(payload["market"], day),
            tags=_tags(row, **{"rof/market": payload["market"], "rof/date": day.isoformat()}),
        )
        for day in days
    ]


def backup_requests(row: InboxRow) -> list[RunRequest]:
    target = row.payload.get("target")
    run_config = {"ops": {"backup_state_store": {"config": {"target": target}}}} if target else {}
    return [RunRequest(run_key=row.message_id, run_config=run_config, tags=_tags(row))]


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _created(payload: dict) -> datetime:
    return _parse(payload["created_at"])


def queue_sensor(
    kind: str,
    job: Any,  # a job or an asset job (whose class Dagster does not export)
    pool: str,
    to_requests: Callable[[InboxRow], list[RunRequest]],
    description: str,
):
    @sensor(
        name=f"{kind.replace('.', '_')}_messages_sensor",
        job=job,
        minimum_interval_seconds=INTERVAL,
        default_status=DefaultSensorStatus.RUNNING,
        description=description,
    )
    def _sensor(
        context: SensorEvaluationContext,
        settings: RofSettings,
        state_store: StateStoreResource,
        rabbitmq: RabbitMQResource,
    ):
        config = settings.load()
        limits = getattr(config.system_setup.worker_pool, pool)
        batch = config.storage.rabbitmq.max_messages_per_tick
        waiting = context.instance.get_runs_count(RunsFilter(statuses=WAITING, tags={"rof/pool": pool}))
        cursor = int(context.cursor or 0)
        notes = []
        with state_store.open() as store:
            inbox = Inbox(store)
            if waiting >= limits.queue_size:
                notes.append(
                    f"back-pressure: {waiting} runs of pool {pool} waiting (queue_size {limits.queue_size})"
                )
            else:
                try:
                    drained = rabbitmq.open().drain(kind, batch, inbox.add)
                    if drained.dead_lettered:
                        reasons = "; ".join(item.error.reason for item in drained.dead_lettered if item.error)
                        context.log.warning(
                            f"{len(drained.dead_lettered)} malformed message(s) dead-lettered: {reasons}"
                        )
                    notes.append(f"drained {drained.received}, {drained.remaining or 0} left")
                except StoreUnavailableError as exc:
                    notes.append(f"RabbitMQ unavailable, will retry: {exc}")
            rows = inbox.after(kind, cursor, batch)
        if not rows:
            return SkipReason("; ".join(notes) or "no messages")
        known = set(context.instance.get_dynamic_partitions(markets_partitions.name))
        new_markets = sorted({row.market for row in rows if row.market and row.market not in known})
        context.log.info(f"{'; '.join(notes)}; {len(rows)} inbox rows -> runs; new markets {new_markets}")
        return SensorResult(
            run_requests=[request for row in rows for request in to_requests(row)],
            dynamic_partitions_requests=[markets_partitions.build_add_request(new_markets)]
            if new_markets
            else [],
            cursor=str(rows[-1].seq),
        )

    return _sensor


tasks_sensor = queue_sensor(
    "task",
    nightly_optimisation_job,
    "ab_optimizer",
    task_requests,
    "`tasks` queue: optimise a market now, one run per message (run key = message id).",
)
quotes_updated_sensor = queue_sensor(
    "quotes.updated",
    all_market_day_assets_job,
    "ab_optimizer",
    quotes_updated_requests,
    "`quotes.updated` queue: rerun every market/day the new quotes touch, and what depends on them.",
)
backup_sensor = queue_sensor(
    "backup",
    state_backup_job,
    "task_worker",
    backup_requests,
    "`backup` queue: back up the state store now.",
)
