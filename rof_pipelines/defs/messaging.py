"""The RabbitMQ queue sensors' shared tick (the task worker): every valid message becomes exactly one
run request. Each domain builds its own queue sensor with :func:`queue_sensor`, naming the queue, the
job and how one inbox row becomes run requests (defs/quotes/sensors.py, defs/optimisation/sensors.py,
defs/ops/sensors.py).

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
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from rof_pipelines.adapters.inbox import Inbox, InboxRow
from rof_pipelines.adapters.messages import MessageLimits
from rof_pipelines.adapters.pushgateway import pushed_tick
from rof_pipelines.adapters.resources import RabbitMQResource, RofSettings, StateStoreResource
from rof_pipelines.core.market import Market
from rof_pipelines.errors import (
    MalformedMessage,
    NotFoundError,
    PartitionOutOfRange,
    PermanentError,
    StoreUnavailableError,
    UnrunnableMessage,
)
from rof_pipelines.partitions import HISTORY_START, last_partition_day, market_and_day, markets_partitions
from rof_pipelines.settings import Settings

WAITING = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING]
# No inbox row is turned into more requests than any storage.rabbitmq.max_runs_per_message allows.
MAX_REQUESTS_PER_ROW = 10_000
# A broker problem is logged at most this often per sensor (a sensor ticks every
# storage.rabbitmq.sensor_interval_seconds).
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


def message_tags(row: InboxRow, **extra: str) -> dict[str, str]:
    """The run tags every message's run carries: what triggered it, and the message id."""
    return {"rof/trigger": f"message:{row.message_id}", "rof/message_id": row.message_id, **extra}


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
    at_load: Settings,
) -> SensorDefinition:
    """The sensor ``<kind>_messages_sensor`` that drains the ``kind`` queue into runs of ``job`` (in
    worker pool ``pool``). It ticks every storage.rabbitmq.sensor_interval_seconds of
    ``at_load``, the settings read when the code location loads; each tick reads the rest of
    the configuration afresh through the ``settings`` resource."""
    name = f"{kind.replace('.', '_')}_messages_sensor"

    @sensor(
        name=name,
        job=job,
        minimum_interval_seconds=at_load.storage.rabbitmq.sensor_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=description,
    )
    @pushed_tick(name)  # the tick's message and inbox counters, to the Pushgateway (when configured)
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
