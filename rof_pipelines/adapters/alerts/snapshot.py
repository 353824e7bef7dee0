"""The snapshot alert rules read: the metrics exporter's own collectors, plus what only alerts need.

The figures that are Prometheus families come from the same :class:`InstanceCollector` and
:class:`StateStoreCollector` the ops service scrapes (``ops/collectors.py``), so a rule and a
dashboard never disagree. On top come the run outcomes per job (newest finished run per job and
market, with its error), the config-refusal state, recent promotions and this process's circuit
breakers. Names and types are :data:`~rof_pipelines.core.alerts.figures.FIGURES`'.

A source that does not answer puts its kinds in ``Snapshot.unknown``, so rules over it change no
alert (a database outage does not "resolve" every failed-run alert).
"""

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from rof_pipelines.adapters.breakers import breaker_states
from rof_pipelines.core.alerts.figures import FIGURES
from rof_pipelines.core.alerts.model import Snapshot
from rof_pipelines.ops.collectors import (
    NO_POOL,
    POOL_TAG,
    InstanceCollector,
    StateStoreCollector,
    config_version_summary,
)
from rof_pipelines.partitions import MARKETS_PARTITION, market_and_day

log = logging.getLogger(__name__)

RECENT_FINISHED_RUNS = 500  # the window in which each job's newest outcome is looked for
ERROR_LOOKUPS = 20  # failed runs whose error text is read per evaluation, at most
PARTITION_TAG = "dagster/partition"
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")

# Families with exactly these labels feed that kind's entities (the entity key is the label value).
_KIND_OF_LABELS = {("market",): "market", ("pool",): "pool", ("daemon",): "daemon", ("sensor",): "sensor"}
_GLOBAL_FAMILIES = {"workerpool_instance_up": "instance_up", "ga_state_store_up": "state_store_up"}
_INSTANCE_KINDS = frozenset({"pool", "daemon", "sensor", "job"})
_STORE_KINDS = frozenset({"promotion"})


def _typed(kind: str, name: str, value: Any) -> Any:
    """A figure in its documented CEL type (CEL does not mix int and double in arithmetic)."""
    cel_type = FIGURES[kind][name][0]
    if cel_type == "int":
        return int(value)
    if cel_type == "double":
        return float(value)
    if cel_type == "bool":
        return bool(value)
    return str(value)


class _Builder:
    """Collects figures per kind and key, keeping only documented names."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.globals: dict[str, Any] = {"now": now.timestamp()}
        self.entities: dict[str, dict[str, dict[str, Any]]] = {
            kind: {} for kind in FIGURES if kind != "global"
        }
        self.labels: dict[str, dict[str, dict[str, str]]] = {kind: {} for kind in self.entities}
        self.unknown: set[str] = set()

    def put(self, kind: str, key: str, labels: Mapping[str, str], **figures: Any) -> None:
        entity = self.entities[kind].setdefault(key, {})
        self.labels[kind].setdefault(key, dict(labels))
        for name, value in figures.items():
            if value is not None and name in FIGURES[kind]:
                entity[name] = _typed(kind, name, value)

    def families(self, families: Iterable[Any]) -> None:
        for family in families:
            name = family.name if family.type != "counter" else f"{family.name}_total"
            for sample in family.samples:
                if sample.name != name and sample.name != family.name:
                    continue
                labels = tuple(sorted(sample.labels))
                if not labels and name in _GLOBAL_FAMILIES:
                    self.globals[_GLOBAL_FAMILIES[name]] = float(sample.value)
                    continue
                kind = _KIND_OF_LABELS.get(labels)
                if kind is None or name not in FIGURES[kind]:
                    continue
                key = sample.labels[labels[0]]
                figures = {name: sample.value, labels[0]: key}
                if kind == "market":
                    figures["exchange"] = key.split(":", 1)[0]
                self.put(kind, key, {labels[0]: key}, **figures)

    def build(self) -> Snapshot:
        return Snapshot(
            taken_at=self.now,
            globals=self.globals,
            entities=self.entities,
            labels=self.labels,
            unknown=frozenset(self.unknown),
        )


def _first_line(text: str | None, limit: int = 300) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line[:limit]


def _run_market(tags: Mapping[str, str]) -> str:
    partition = tags.get(PARTITION_TAG)
    if not partition:
        return tags.get(f"{PARTITION_TAG}/{MARKETS_PARTITION}", "")
    try:
        return market_and_day(partition)[0].key
    except Exception:  # a partition of another definition: the job has no market
        return ""


def _root_cause(error: Any) -> str:
    """The innermost cause of a Dagster error ("RuntimeError: disk full"), not Dagster's wrapper
    ("DagsterExecutionStepExecutionError: Error occurred while executing op ...")."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    message = (getattr(error, "message", "") or "").strip()
    name = getattr(error, "cls_name", None)
    if name and message and not message.startswith(name):
        message = f"{name}: {message}"
    return _first_line(message)


def _run_error(instance: Any, run_id: str) -> str:
    """The failed step's (or the run's) error, first line of its root cause."""
    from dagster import DagsterEventType

    records = instance.get_records_for_run(
        run_id, of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}, limit=5
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        error = getattr(getattr(event, "event_specific_data", None), "error", None)
        text = _root_cause(error) if error is not None else _first_line(record.event_log_entry.message)
        if text:
            return text
    return ""


def job_outcomes(builder: _Builder, instance: Any) -> None:
    """The newest finished run per job (and market, for partitioned runs), with failures in a row."""
    from dagster import DagsterRunStatus, RunsFilter

    records = instance.get_run_records(
        filters=RunsFilter(statuses=[DagsterRunStatus[s] for s in FINISHED]), limit=RECENT_FINISHED_RUNS
    )
    by_key: dict[tuple[str, str], list[Any]] = {}
    failed_per_pool: dict[str, int] = {}
    for record in records:
        run = record.dagster_run
        by_key.setdefault((run.job_name, _run_market(run.tags)), []).append(record)
        if run.status.value == "FAILURE":
            pool = run.tags.get(POOL_TAG, NO_POOL)
            failed_per_pool[pool] = failed_per_pool.get(pool, 0) + 1
    for pool in builder.entities["pool"]:  # the pools the collector reported: 0 when none failed
        builder.put("pool", pool, {"pool": pool}, runs_failed_recent=failed_per_pool.get(pool, 0))
    lookups = 0
    for (job, market), runs in sorted(by_key.items()):
        runs.sort(key=lambda r: (r.end_time or 0.0, r.storage_id), reverse=True)
        newest = runs[0]
        status = newest.dagster_run.status.value
        in_a_row = 0
        for record in runs:
            if record.dagster_run.status.value != "FAILURE":
                break
            in_a_row += 1
        error = ""
        if status == "FAILURE" and lookups < ERROR_LOOKUPS:
            lookups += 1
            error = _run_error(instance, newest.dagster_run.run_id)
        pool = newest.dagster_run.tags.get(POOL_TAG, NO_POOL)
        labels = {"job": job, "pool": pool} | ({"market": market} if market else {})
        builder.put(
            "job",
            f"{job}|{market}" if market else job,
            labels,
            job=job,
            pool=pool,
            market=market,
            last_status=status,
            last_run_id=newest.dagster_run.run_id,
            last_finished_seconds=newest.end_time,
            last_error=error,
            failures_in_a_row=in_a_row,
        )


def sensor_ticks(builder: _Builder, instance: Any) -> None:
    """Each sensor's newest tick: its status, time and, when it failed, the error."""
    from dagster._core.scheduler.instigation import InstigatorType  # no public API for tick records

    if instance.schedule_storage is None:  # DagsterInstance.ephemeral(): no sensors, not an outage
        return
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        if not ticks:
            continue
        tick = ticks[0]
        name = state.instigator_name
        builder.put(
            "sensor",
            name,
            {"sensor": name},
            sensor=name,
            last_tick_status=tick.status.value,
            last_tick_seconds=tick.timestamp,
            last_error=_root_cause(tick.error) if tick.error is not None else "",
        )


def store_extras(builder: _Builder, store: Any, promotion_window: timedelta) -> None:
    """Config refusal (global) and the promotions recorded within ``promotion_window``."""
    versions = config_version_summary(store)
    newest = versions[1] if versions is not None else None
    refused = newest is not None and newest[0] == "refused"
    builder.globals["config_refused"] = refused
    builder.globals["config_refused_error"] = (newest[1] or "") if refused and newest else ""
    since = builder.now - promotion_window
    for record in store.experiments.recent(limit=200):  # newest first
        created = record.created_at
        if created is None or created < since:
            break
        if not record.promoted:
            continue
        builder.put(
            "promotion",
            record.experiment_id,
            {"market": record.market, "experiment_id": record.experiment_id},
            experiment_id=record.experiment_id,
            market=record.market,
            winner=record.winner or "",
            promoted_seconds=created.timestamp(),
            age_seconds=max(0.0, (builder.now - created).total_seconds()),
        )


def process_breakers(builder: _Builder, process: str = "sensor") -> None:
    """This process's circuit breakers (the alerts sensor shares its process with the other sensors)."""
    for breaker in breaker_states():
        builder.put(
            "service",
            f"{breaker.service}@{process}",
            {"service": breaker.service, "process": process},
            service=breaker.service,
            process=process,
            state=breaker.state,
            open_seconds=breaker.open_seconds,
            circuit_breaker_failures_total=breaker.failures,
        )


class SnapshotSource:
    """Builds snapshots for one process. The instance collector keeps its incremental cursors between
    evaluations, so a tick reads only the materialisations recorded since the last one."""

    def __init__(
        self,
        pools: Callable[[], list[str]],
        calendar_of: Callable[[str], Any],
        max_workers: Callable[[str], float] | None = None,
    ) -> None:
        self._calendar_of = calendar_of
        self._max_workers = max_workers  # pool -> its configured max_workers (run_queue_waiting's message)
        self._collector = InstanceCollector(None, pools, calendar_of)
        self._lock = threading.Lock()

    def snapshot(
        self,
        instance: Any,
        store: Any,
        *,
        promotion_window: timedelta = timedelta(hours=24),
        now: datetime | None = None,
    ) -> Snapshot:
        builder = _Builder(now or datetime.now(UTC))
        with self._lock:
            self._collector.use(instance)
            builder.families(self._collector.collect(now=builder.now.timestamp()))
        if builder.globals.get("instance_up", 0.0) < 1.0:
            builder.unknown |= _INSTANCE_KINDS | {"market"}
        else:
            try:
                job_outcomes(builder, instance)
                sensor_ticks(builder, instance)
            except Exception as exc:
                log.warning("alerts: run outcomes unreadable (%s: %s)", type(exc).__name__, exc)
                builder.unknown |= {"job", "sensor"}
            try:  # the dynamic partitions, as documented (not the markets that happen to have figures)
                builder.globals["markets_known"] = len(instance.get_dynamic_partitions(MARKETS_PARTITION))
            except Exception as exc:  # unset: a rule reading it cannot decide, rather than see 0
                log.warning("alerts: markets unreadable (%s: %s)", type(exc).__name__, exc)
        builder.families(StateStoreCollector(store).collect())
        if builder.globals.get("state_store_up", 0.0) < 1.0:
            builder.unknown |= _STORE_KINDS | {"market"}
        else:
            try:
                store_extras(builder, store, promotion_window)
            except Exception as exc:
                log.warning("alerts: state store figures unreadable (%s: %s)", type(exc).__name__, exc)
                builder.unknown |= _STORE_KINDS
        self._pool_sizes(builder)
        markets = builder.entities["market"]
        for key, figures in markets.items():
            fresh = figures.get("data_manager_freshness_seconds")
            if fresh is not None:  # the collector measured it at builder.now
                figures["last_quote_timestamp_seconds"] = builder.now.timestamp() - fresh
            try:
                figures["calendar"] = str(self._calendar_of(key).name)
            except Exception:  # a market the settings cannot profile: no calendar figure
                figures.pop("calendar", None)
        process_breakers(builder)
        return builder.build()

    def _pool_sizes(self, builder: _Builder) -> None:
        """Each pool's ``max_workers`` (0 for runs without a pool tag), when the source knows them."""
        if self._max_workers is None:
            return
        for pool in builder.entities["pool"]:
            try:
                size = 0.0 if pool == NO_POOL else float(self._max_workers(pool))
            except Exception:  # a pool the config no longer has: no figure rather than a wrong one
                continue
            builder.put("pool", pool, {"pool": pool}, max_workers=size)
