"""RabbitMQ sensors (the task worker): every valid message becomes exactly one run request.

One tick, per queue:
1. back-pressure: when ``queue_size`` runs of the job's pool are already waiting, drain nothing;
2. drain at most ``max_messages_per_tick`` with basic_get, insert them into the inbox in one
   transaction, ack only after COMMIT; malformed messages, and messages this deployment cannot run
   (a day outside the partitions, more than ``max_days_per_message`` / ``max_runs_per_message``), go
   to the dead-letter queue with the reason;
3. turn inbox rows after the sensor's cursor into RunRequests whose run_key is the message id (a
   replayed row asks again under the same key, which Dagster ignores), adding markets it has not seen
   to the `markets` partitions in the same result, and move the cursor.
A tick that dies after step 2 or during step 3 loses nothing: the rows stay after the cursor.
A row that cannot become valid run requests is quarantined (see adapters/inbox.py) and logged as an
error, and the cursor moves past it: one poison row must not fail every later tick.
No connection outlives the tick. When RabbitMQ is down or refuses the connection (wrong credentials,
vhost), the tick still serves committed inbox rows and skips with the reason; the reason is logged at
most once a minute per sensor, and the breaker lets it resume by itself.
"""

import logging
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import pika.exceptions as pika_errors
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
from rof_pipelines.adapters.messages import (
    MalformedMessage,
    MessageLimits,
    QuotesUpdatedMessage,
    TaskMessage,
    UnrunnableMessage,
    planned_runs,
)
from rof_pipelines.adapters.resources import RabbitMQResource, RofSettings, StateStoreResource
from rof_pipelines.core.market import Market
from rof_pipelines.defs.jobs import all_market_day_assets_job, nightly_optimisation_job
from rof_pipelines.defs.load_time import settings_at_load
from rof_pipelines.defs.ops.backups import state_backup_job
from rof_pipelines.errors import NotFoundError, PartitionOutOfRange, PermanentError, StoreUnavailableError
from rof_pipelines.partitions import (
    HISTORY_START,
    last_partition_day,
    market_and_day,
    market_day_key,
    markets_partitions,
)

WAITING = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING]
INTERVAL = settings_at_load().storage.rabbitmq.sensor_interval_seconds
# No inbox row is turned into more requests than any storage.rabbitmq.max_runs_per_message allows.
MAX_REQUESTS_PER_ROW = 10_000
# A broker problem is logged at most this often per sensor (a sensor ticks every INTERVAL seconds).
BROKER_LOG_INTERVAL_S = 60.0
_broker_logged_at: dict[str, float] = {}  # sensor name -> time.monotonic() of its last broker log
# pika logs every failed connection attempt at ERROR, with a traceback; the adapter turns the failure
# into the project's error, which the sensor reports itself. Left alone if someone configured pika.
if logging.getLogger("pika").level == logging.NOTSET:
    logging.getLogger("pika").setLevel(logging.CRITICAL)


def broker_problem(exc: Exception) -> str | None:
    """Why the drain could not talk to RabbitMQ, or None when ``exc`` is not the broker's problem."""
    if isinstance(exc, StoreUnavailableError):
        return f"RabbitMQ unavailable, will retry: {exc}"
    if isinstance(exc, PermanentError) and isinstance(exc.__cause__, pika_errors.AMQPError):
        return f"RabbitMQ refused the connection, will retry: {exc}"
    return None


def log_broker_problem(context: SensorEvaluationContext, sensor_name: str, reason: str) -> bool:
    """Log ``reason`` unless this sensor logged a broker problem less than a minute ago."""
    now = time.monotonic()
    last = _broker_logged_at.get(sensor_name)
    if last is not None and now - last < BROKER_LOG_INTERVAL_S:
        return False
    _broker_logged_at[sensor_name] = now
    context.log.warning(f"{reason} (skipping ticks; logged at most once a minute)")
    return True


def _tags(row: InboxRow, **extra: str) -> dict[str, str]:
    return {"rof/trigger": f"message:{row.message_id}", "rof/message_id": row.message_id, **extra}


def task_requests(row: InboxRow) -> list[RunRequest]:
    """Optimise the market for the message's day, or the last complete day when it was sent."""
    payload = row.payload
    day = TaskMessage.model_validate(payload).run_day.isoformat()
    return [
        RunRequest(
            run_key=row.message_id,
            partition_key=market_day_key(payload["market"], day),
            tags=_tags(row, **{"rof/market": payload["market"], "rof/date": day}),
        )
    ]


def quotes_updated_requests(row: InboxRow) -> list[RunRequest]:
    """Rerun every day the new quotes touch (and, through the job, what depends on them); today's
    partition does not exist yet, so today is left to the nightly run once it is over."""
    payload = row.payload
    message = QuotesUpdatedMessage.model_validate(payload)
    last_day = last_partition_day()
    runs = planned_runs(message, last_day)
    if runs > MAX_REQUESTS_PER_ROW:  # checked before building them: an old row may span centuries
        raise UnrunnableMessage(f"asks for {runs} runs, more than any configuration allows")
    days = message.run_days(last_day)
    return [
        RunRequest(
            run_key=f"{row.message_id}:{day.isoformat()}",
            partition_key=market_day_key(payload["market"], day),
            tags=_tags(row, **{"rof/market": payload["market"], "rof/date": day.isoformat()}),
        )
        for day in days
    ]


def backup_requests(row: InboxRow) -> list[RunRequest]:
    """Back up to the destination the message names. A row inboxed before destinations existed
    carries a ``target`` URL instead: it is passed on as a name, so its run fails visibly with
    "no destination named ..." rather than writing there or silently to the default."""
    destination = row.payload.get("destination") or row.payload.get("target")
    run_config = (
        {"ops": {"backup_state_store": {"config": {"destination": destination}}}} if destination else {}
    )
    return [RunRequest(run_key=row.message_id, run_config=run_config, tags=_tags(row))]


def check_requests(requests: list[RunRequest], last_day: date, max_runs: int) -> None:
    """Raise unless Dagster will take every request: each partition key inside the partitions (it
    would fail the whole tick otherwise) and no more than ``max_runs`` of them."""
    if len(requests) > max_runs:
        raise UnrunnableMessage(
            f"asks for {len(requests)} runs, more than storage.rabbitmq.max_runs_per_message ({max_runs})"
        )
    for request in requests:
        if request.partition_key is None:
            continue
        _, day = market_and_day(request.partition_key)
        if not HISTORY_START <= day <= last_day:
            raise PartitionOutOfRange(
                f"day {day} is outside the `date` partitions {HISTORY_START} .. {last_day}"
            )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MalformedMessage):
        return exc.reason
    return str(exc) if isinstance(exc, PermanentError) else f"{type(exc).__name__}: {exc}"


def queue_sensor(
    kind: str,
    job: Any,  # a job or an asset job (whose class Dagster does not export)
    pool: str,
    to_requests: Callable[[InboxRow], list[RunRequest]],
    description: str,
):
    name = f"{kind.replace('.', '_')}_messages_sensor"

    @sensor(
        name=name,
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
        rabbit_config = config.storage.rabbitmq
        batch = rabbit_config.max_messages_per_tick
        last_day = last_partition_day()
        message_limits = MessageLimits(
            first_day=HISTORY_START,
            last_day=last_day,
            max_days_per_message=rabbit_config.max_days_per_message,
            max_runs_per_message=rabbit_config.max_runs_per_message,
        )
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
                    client = rabbitmq.open()
                    try:
                        drained = client.drain(kind, batch, inbox.add, message_limits)
                    except NotFoundError:  # a fresh broker: declare the queues (idempotent), then read
                        client.declare_topology()
                        drained = client.drain(kind, batch, inbox.add, message_limits)
                    if drained.dead_lettered:
                        reasons = "; ".join(item.error.reason for item in drained.dead_lettered if item.error)
                        context.log.warning(
                            f"{len(drained.dead_lettered)} malformed or unrunnable message(s) "
                            f"dead-lettered: {reasons}"
                        )
                    notes.append(f"drained {drained.received}, {drained.remaining or 0} left")
                except (StoreUnavailableError, PermanentError) as exc:
                    reason = broker_problem(exc)
                    if reason is None:
                        raise
                    log_broker_problem(context, name, reason)
                    notes.append(reason)
            rows = inbox.after(kind, cursor, batch)
            if not rows:
                return SkipReason("; ".join(notes) or "no messages")
            requests: list[RunRequest] = []
            markets: set[str] = set()
            quarantined: list[tuple[InboxRow, str]] = []
            for row in rows:
                try:
                    row_requests = to_requests(row)
                    check_requests(row_requests, last_day, rabbit_config.max_runs_per_message)
                    market = Market.parse(row.market).key if row.market else None
                except Exception as exc:  # this row's problem: set it aside, serve the others
                    quarantined.append((row, _describe(exc)))
                    continue
                requests.extend(row_requests)
                markets.update([market] if market else [])
            if quarantined:
                inbox.quarantine(quarantined)
                for row, reason in quarantined:
                    context.log.error(
                        f"ALERT: quarantined inbox row {row.seq} (message {row.message_id}, kind {row.kind}); "
                        f"no run requested: {reason}"
                    )
                notes.append(f"{len(quarantined)} inbox row(s) quarantined")
        known = set(context.instance.get_dynamic_partitions(markets_partitions.name))
        new_markets = sorted(markets - known)
        context.log.info(
            f"{'; '.join(notes)}; {len(rows)} inbox rows -> {len(requests)} runs; new markets {new_markets}"
        )
        return SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[markets_partitions.build_add_request(new_markets)]
            if new_markets
            else [],
            cursor=str(rows[-1].seq),
            skip_reason=None if requests else "; ".join(notes) or "no runnable inbox rows",
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
