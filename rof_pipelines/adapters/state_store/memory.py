"""An in-memory state store with the PostgreSQL store's repositories and behaviour, for tests about
Dagster wiring rather than about PostgreSQL.

Same checks and messages (it shares :mod:`values` and :mod:`versioned` with the SQL store), same
optimistic locking, the CHECK constraints that matter, retention pruning, ordering of lists, JSON
round trips (a stored mapping comes back as a fresh copy, datetimes inside it as ISO text).
``test_state_store_contract.py`` runs one set of tests against both, so the two cannot drift.
Set :attr:`InMemoryStateStore.unavailable` to a reason to make every call fail as if the database
were down.
"""

import json
import statistics
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from rof_pipelines.adapters.state_store.alerts import (
    FINISHED_DELIVERY_STATUSES,
    check_claim,
    check_retention,
    clip,
    delivery_from_row,
    delivery_row,
    state_from_row,
    state_rows,
)
from rof_pipelines.adapters.state_store.checkpoints import TASK_COLUMNS, checkpoint_values
from rof_pipelines.adapters.state_store.configs import config_values
from rof_pipelines.adapters.state_store.experiments import experiment_rows
from rof_pipelines.adapters.state_store.islands import island_epoch_values
from rof_pipelines.adapters.state_store.knowledge import knowledge_row, task_from_row
from rof_pipelines.adapters.state_store.progress import progress_values
from rof_pipelines.adapters.state_store.quote_gaps import quote_gap_rows
from rof_pipelines.adapters.state_store.records import (
    ActiveConfig,
    ArmRecord,
    ExperimentRecord,
    GACheckpoint,
    IslandEpochRecord,
    QuoteGapRecord,
    WorkerProgress,
)
from rof_pipelines.adapters.state_store.tables import PROGRESS_STATUSES
from rof_pipelines.adapters.state_store.trials import trial_rows
from rof_pipelines.adapters.state_store.values import (
    DEFAULT_UPDATED_BY,
    SERVICE,
    check_choice,
    json_dumps,
    market_key,
    utc,
)
from rof_pipelines.adapters.state_store.versioned import check_expected, conflict_error, planned_write
from rof_pipelines.core.alerts.model import DELIVERY_STATUSES, AlertState, Delivery
from rof_pipelines.errors import DataValidationError, PermanentError, RofError, StoreUnavailableError

if TYPE_CHECKING:
    from rof_pipelines.core.knowledge import TaskRecord

T = TypeVar("T")


def _utc(moment: datetime | None) -> datetime | None:
    """A timestamptz as PostgreSQL keeps it: aware (naive means UTC here)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _jsonb(value: Any) -> Any:
    """What a jsonb column gives back for ``value``: a fresh copy through JSON (ValueError on NaN)."""
    return json.loads(json_dumps(value))


def _violates(table: str, constraint: str) -> PermanentError:
    return PermanentError(
        f'{SERVICE} (in-memory): IntegrityError: new row for relation "{table}" violates check '
        f'constraint "{constraint}"'
    )


def _check_window(table: str, start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and not end > start:
        raise _violates(table, f"ck_{table}_window")


class InMemoryStateStore:
    """The state store in a process's memory: ``progress``, ``configs``, ``checkpoints``,
    ``experiments``, ``trials``, ``knowledge``, ``alerts``, ``islands`` and ``quote_gaps`` like :class:`StateStore`, no SQL. Thread-safe; every
    call is atomic (one lock), as a transaction would be."""

    def __init__(self, schema: str = "rof_state") -> None:
        self.schema = schema
        self.unavailable: str | None = None  # a reason: every call raises StoreUnavailableError
        self._lock = threading.RLock()
        self._last_now = datetime.min.replace(tzinfo=UTC)
        self.progress = MemoryProgress(self)
        self.configs = MemoryActiveConfigs(self)
        self.checkpoints = MemoryCheckpoints(self)
        self.experiments = MemoryExperiments(self)
        self.trials = MemoryTrials(self)
        self.knowledge = MemoryKnowledge(self)
        self.alerts = MemoryAlerts(self)
        self.islands = MemoryIslands(self)
        self.quote_gaps = MemoryQuoteGaps(self)

    def describe(self) -> str:
        return f"in-memory state store (schema {self.schema})"

    def __repr__(self) -> str:
        return f"InMemoryStateStore({self.describe()})"

    def ping(self) -> None:
        self.guarded_call(lambda: None, operation="ping")

    def dispose(self) -> None:
        """Nothing to close; the data stays (as it would in the database)."""

    def __enter__(self) -> "InMemoryStateStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()

    def now(self) -> datetime:
        """The store's clock: UTC, strictly increasing (so "newest first" is never a tie)."""
        with self._lock:
            moment = max(datetime.now(UTC), self._last_now + timedelta(microseconds=1))
            self._last_now = moment
            return moment

    def guarded_call(self, fn: Callable[..., T], *args: Any, operation: str) -> T:
        """``fn(*args)`` under the store's lock, failing like the SQL store would: errors tagged with
        the service and ``operation``, JSON the database refuses as PermanentError."""
        with self._lock:
            try:
                if self.unavailable is not None:
                    raise StoreUnavailableError(f"{SERVICE} ({self.describe()}): {self.unavailable}")
                return fn(*args)
            except RofError as exc:
                exc.with_context(SERVICE, operation)
                raise
            except (ValueError, TypeError) as exc:
                message = f"{SERVICE} ({self.describe()}): {type(exc).__name__}: {exc}"
                raise PermanentError(message).with_context(SERVICE, operation) from exc

    def prune_older_than(
        self, rows: dict[Any, dict[str, Any]], column: str, retention_days: int, now: datetime | None
    ) -> int:
        """Delete the ``rows`` whose ``column`` is more than ``retention_days`` before ``now`` (the
        store's clock when None); returns how many went."""
        if retention_days < 1:
            raise DataValidationError(f"{SERVICE}: retention_days must be >= 1, got {retention_days}")

        def run() -> int:
            cutoff = (_utc(now) or self.now()) - timedelta(days=int(retention_days))
            old = [key for key, row in rows.items() if row[column] < cutoff]
            for key in old:
                del rows[key]
            return len(old)

        return self.guarded_call(run, operation="delete")


class _MemoryRepository:
    def __init__(self, store: InMemoryStateStore) -> None:
        self._store = store

    def _read(self, fn: Callable[[], T]) -> T:
        return self._store.guarded_call(fn, operation="read")

    def _write(self, fn: Callable[[], T]) -> T:
        return self._store.guarded_call(fn, operation="write")

    def _qualified(self, table: str) -> str:
        return f"{self._store.schema}.{table}"


class MemoryProgress(_MemoryRepository):
    """``store.progress`` without SQL."""

    def __init__(self, store: InMemoryStateStore) -> None:
        super().__init__(store)
        self._rows: dict[str, dict[str, Any]] = {}

    def record(
        self,
        task_id: str,
        market: str,
        generation: int,
        total_generations: int,
        best_fitness: float | None,
        eta_seconds: float | None,
        status: str,
        details: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
        *,
        worker_id: str | None = None,
        experiment_id: str | None = None,
        window_start: datetime | None = None,
        window_end: datetime | None = None,
    ) -> int:
        """See :meth:`SqlProgress.record`."""
        check_expected(expected_version)
        identity = {
            "worker_id": worker_id,
            "experiment_id": experiment_id,
            "window_start": _utc(window_start),
            "window_end": _utc(window_end),
        }
        values = progress_values(
            market, generation, total_generations, best_fitness, eta_seconds, status, details, identity
        )

        def run() -> tuple[int | None, int | None]:
            values["details"] = _jsonb(values["details"])
            if values["generation"] < 0 or values["total_generations"] < 0:
                raise _violates("worker_progress", "ck_worker_progress_generations")
            current = self._rows.get(task_id)
            version = current["version"] if current is not None else None
            write = planned_write(expected_version, version, blind_overwrite=True)
            if write is None:
                return None, version
            now = self._store.now()
            if write == "insert":
                row = {
                    "task_id": task_id,
                    "worker_id": None,
                    "experiment_id": None,
                    "window_start": None,
                    "window_end": None,
                    **values,
                    "version": 1,
                    "started_at": now,
                }
            else:
                row = {**current, **values, "version": version + 1}
            _check_window("worker_progress", row["window_start"], row["window_end"])
            self._rows[task_id] = {**row, "updated_at": now}
            return self._rows[task_id]["version"], None

        new_version, current = self._write(run)
        if new_version is None:
            raise conflict_error(
                self._qualified("worker_progress"), {"task_id": task_id}, expected_version, current
            )
        return new_version

    def get(self, task_id: str) -> WorkerProgress | None:
        def run() -> WorkerProgress | None:
            row = self._rows.get(task_id)
            return WorkerProgress(**_jsonb_copy(row, "details")) if row is not None else None

        return self._read(run)

    def find(self, market: str | None = None, status: str | None = None) -> list[WorkerProgress]:
        wanted_market = market_key(market) if market is not None else None
        wanted_status = check_choice("status", status, PROGRESS_STATUSES) if status is not None else None

        def run() -> list[WorkerProgress]:
            rows = [
                row
                for row in self._rows.values()
                if (wanted_market is None or row["market"] == wanted_market)
                and (wanted_status is None or row["status"] == wanted_status)
            ]
            rows.sort(key=lambda row: row["task_id"])
            rows.sort(key=lambda row: row["updated_at"], reverse=True)
            return [WorkerProgress(**_jsonb_copy(row, "details")) for row in rows]

        return self._read(run)


def _jsonb_copy(row: Mapping[str, Any], *columns: str) -> dict[str, Any]:
    """``row`` with its JSON ``columns`` copied, so a caller cannot change what is stored."""
    return {**row, **{column: _jsonb(row[column]) for column in columns}}


class MemoryActiveConfigs(_MemoryRepository):
    """``store.configs`` without SQL."""

    def __init__(self, store: InMemoryStateStore) -> None:
        super().__init__(store)
        self._rows: dict[str, ActiveConfig] = {}

    def get_active(self, market: str) -> ActiveConfig | None:
        key = market_key(market)
        return self._read(lambda: self._copy(self._rows.get(key)))

    @staticmethod
    def _copy(config: ActiveConfig | None) -> ActiveConfig | None:
        return replace(config, params=_jsonb(config.params)) if config is not None else None

    def set_active(
        self,
        market: str,
        params: Mapping[str, Any],
        source: str,
        experiment_id: str | None = None,
        expected_version: int | None = None,
        updated_by: str = DEFAULT_UPDATED_BY,
    ) -> ActiveConfig:
        """See :meth:`SqlActiveConfigs.set_active`."""
        check_expected(expected_version)
        key = market_key(market)
        values = config_values(params, source, experiment_id, updated_by)

        def run() -> tuple[ActiveConfig | None, int | None]:
            values["params"] = _jsonb(values["params"])
            current = self._rows.get(key)
            version = current.version if current is not None else None
            write = planned_write(expected_version, version, blind_overwrite=False)
            if write is None:
                return None, version
            stored = ActiveConfig(
                market=key,
                **values,
                version=1 if write == "insert" else version + 1,
                updated_at=self._store.now(),
            )
            self._rows[key] = stored
            return self._copy(stored), None

        stored, current = self._write(run)
        if stored is None:
            raise conflict_error(
                self._qualified("active_strategy_configs"), {"market": key}, expected_version, current
            )
        return stored

    def list_active(self) -> list[ActiveConfig]:
        return self._read(lambda: [self._copy(self._rows[key]) for key in sorted(self._rows)])


class MemoryCheckpoints(_MemoryRepository):
    """``store.checkpoints`` without SQL."""

    def __init__(self, store: InMemoryStateStore) -> None:
        super().__init__(store)
        self._rows: dict[tuple[Any, ...], dict[str, Any]] = {}  # (task columns..., generation) -> row

    @staticmethod
    def _task(key: Mapping[str, Any]) -> tuple[Any, ...]:
        return (
            market_key(key["market"]),
            key["experiment_id"],
            _utc(key["window_start"]),
            _utc(key["window_end"]),
            key["data_fingerprint"],
            key["config_fingerprint"],
        )

    def save(
        self,
        key: Mapping[str, Any],
        generation: int,
        payload: bytes,
        *,
        final: bool = False,
        best_fitness: float | None = None,
        keep: int = 2,
    ) -> None:
        """See :meth:`SqlCheckpoints.save`."""
        values = checkpoint_values(key, generation, payload, final, best_fitness, keep)
        values["window_start"], values["window_end"] = (
            _utc(values["window_start"]),
            _utc(values["window_end"]),
        )
        task = self._task(key)

        def run() -> None:
            _check_window("ga_checkpoints", values["window_start"], values["window_end"])
            row_task = tuple(values[column] for column in TASK_COLUMNS)
            self._rows[(*row_task, values["generation"])] = {**values, "created_at": self._store.now()}
            mine = sorted((k for k in self._rows if k[:-1] == task), key=lambda k: k[-1], reverse=True)
            for old in mine[keep:]:
                del self._rows[old]

        self._write(run)

    def latest(self, key: Mapping[str, Any]) -> GACheckpoint | None:
        task = self._task(key)

        def run() -> GACheckpoint | None:
            mine = [k for k in self._rows if k[:-1] == task]
            return GACheckpoint(**self._rows[max(mine, key=lambda k: k[-1])]) if mine else None

        return self._read(run)

    def generations(self, task_id: str) -> list[tuple[int, bool]]:
        def run() -> list[tuple[int, bool]]:
            rows = [row for row in self._rows.values() if row["task_id"] == task_id]
            return sorted((row["generation"], row["final"]) for row in rows)

        return self._read(run)

    def prune(self, retention_days: int, now: datetime | None = None) -> int:
        return self._store.prune_older_than(self._rows, "created_at", retention_days, now)


class MemoryIslands(_MemoryRepository):
    """``store.islands`` without SQL."""

    def __init__(self, store: InMemoryStateStore) -> None:
        super().__init__(store)
        self._rows: dict[tuple[str, int, int], dict[str, Any]] = {}  # (task_id, island, epoch) -> row

    def save(self, task_id: str, island: int, epoch: int, payload: bytes) -> bool:
        """See :meth:`SqlIslands.save`."""
        values = island_epoch_values(task_id, island, epoch, payload)

        def run() -> bool:
            key = (values["task_id"], values["island"], values["epoch"])
            if key in self._rows:
                return False
            self._rows[key] = {**values, "created_at": self._store.now()}
            return True

        return self._write(run)

    def _records(self, keep: Callable[[tuple[str, int, int]], bool]) -> list[IslandEpochRecord]:
        def run() -> list[IslandEpochRecord]:
            keys = sorted((k for k in self._rows if keep(k)), key=lambda k: (k[2], k[1]))
            return [IslandEpochRecord(**self._rows[k]) for k in keys]

        return self._read(run)

    def get(self, task_id: str, island: int, epoch: int) -> IslandEpochRecord | None:
        found = self._records(lambda k: k == (task_id, island, epoch))
        return found[0] if found else None

    def epoch(self, task_id: str, epoch: int) -> list[IslandEpochRecord]:
        return self._records(lambda k: k[0] == task_id and k[2] == epoch)

    def prune(self, retention_days: int, now: datetime | None = None) -> int:
        return self._store.prune_older_than(self._rows, "created_at", retention_days, now)


class MemoryQuoteGaps(_MemoryRepository):
    """``store.quote_gaps`` without SQL."""

    def __init__(self, store: InMemoryStateStore) -> None:
        super().__init__(store)
        self._rows: dict[tuple[str, str, datetime], dict[str, Any]] = {}  # (market, interval, from) -> row

    def record(
        self,
        market: str,
        interval: str,
        start: datetime,
        end: datetime,
        gaps: Sequence[tuple[datetime, datetime]],
        source: str,
    ) -> int:
        """See :meth:`SqlQuoteGaps.record`."""
        market, start, end, rows = quote_gap_rows(market, interval, start, end, gaps, source)

        def run() -> int:
            overlapping = [
                key
                for key, row in self._rows.items()
                if key[:2] == (market, interval) and row["gap_from"] < end and row["gap_to"] > start
            ]
            for key in overlapping:
                del self._rows[key]
            for row in rows:
                self._rows[(market, interval, row["gap_from"])] = {**row, "recorded_at": self._store.now()}
            return len(overlapping)

        return self._write(run)

    def find(
        self,
        market: str | None = None,
        interval: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[QuoteGapRecord]:
        """See :meth:`SqlQuoteGaps.find`."""
        start, end = utc(start), utc(end)
        market = None if market is None else market_key(market)

        def run() -> list[QuoteGapRecord]:
            return [
                QuoteGapRecord(**row)
                for key, row in sorted(self._rows.items())
                if market in (None, key[0])
                and interval in (None, key[1])
                and (end is None or row["gap_from"] < end)
                and (start is None or row["gap_to"] > start)
            ]

        return self._read(run)


class MemoryExperiments(_MemoryRepository):
    """``store.experiments`` without SQL."""

    def __init__(self, store: InMemoryStateStore) -> None:
        super().__init__(store)
        self._rows: dict[str, dict[str, Any]] = {}
        self._arms: dict[str, list[dict[str, Any]]] = {}

    def record(self, experiment: ExperimentRecord) -> None:
        """See :meth:`SqlExperiments.record`."""
        row, arm_rows = experiment_rows(experiment)
        row["window_start"], row["window_end"] = _utc(row["window_start"]), _utc(row["window_end"])

        def run() -> None:
            if row["experiment_id"] in self._rows:
                raise PermanentError(
                    f"{SERVICE} ({self._store.describe()}): IntegrityError: duplicate key value violates "
                    f'unique constraint "ab_experiments_pkey": experiment_id={row["experiment_id"]!r}'
                )
            names = [arm["arm"] for arm in arm_rows]
            if len(set(names)) != len(names):
                raise PermanentError(
                    f"{SERVICE} ({self._store.describe()}): IntegrityError: duplicate key value violates "
                    f'unique constraint "ab_arms_pkey": arms {names}'
                )
            stored = _jsonb_copy(row, "decision", "details")
            self._rows[row["experiment_id"]] = {**stored, "created_at": self._store.now()}
            arms = [_jsonb_copy(arm, "params", "metrics", "p_values") for arm in arm_rows]
            self._arms[row["experiment_id"]] = sorted(arms, key=lambda arm: arm["arm"])

        self._write(run)

    def _record(self, experiment_id: str) -> ExperimentRecord:
        row = _jsonb_copy(self._rows[experiment_id], "decision", "details")
        arms = tuple(
            ArmRecord(
                **{
                    k: v
                    for k, v in _jsonb_copy(arm, "params", "metrics", "p_values").items()
                    if k != "experiment_id"
                }
            )
            for arm in self._arms[experiment_id]
        )
        return ExperimentRecord(**row, arms=arms)

    def recent(self, market: str | None = None, limit: int = 100) -> list[ExperimentRecord]:
        wanted = market_key(market) if market is not None else None

        def run() -> list[ExperimentRecord]:
            rows = [row for row in self._rows.values() if wanted is None or row["market"] == wanted]
            rows.sort(key=lambda row: (row["created_at"], row["experiment_id"]), reverse=True)
            return [self._record(row["experiment_id"]) for row in rows[:limit]]

        return self._read(run)

    def get(self, experiment_id: str) -> ExperimentRecord | None:
        return self._read(lambda: self._record(experiment_id) if experiment_id in self._rows else None)

    def promoting(self, market: str) -> tuple[ActiveConfig | None, ExperimentRecord | None]:
        key = market_key(market)

        def run() -> tuple[ActiveConfig | None, ExperimentRecord | None]:
            config = self._store.configs.get_active(key)
            if config is None or config.experiment_id is None:
                return config, None
            found = self._rows.get(config.experiment_id)
            return config, self._record(config.experiment_id) if found is not None else None

        return self._read(run)


class MemoryTrials(_MemoryRepository):
    """``store.trials`` without SQL."""

    def __init__(self, store: InMemoryStateStore) -> None:
        super().__init__(store)
        self._sharpe: dict[str, dict[str, float]] = {}

    def record(self, task_key: str, trials: Mapping[str, float]) -> None:
        if not trials:
            return
        rows = trial_rows(task_key, trials)

        def run() -> None:
            ledger = self._sharpe.setdefault(task_key, {})
            for row in rows:
                ledger.setdefault(row["config_hash"], row["sharpe"])

        self._write(run)

    def stats(self, task_key: str) -> tuple[int, float | None]:
        def run() -> tuple[int, float | None]:
            values = list(self._sharpe.get(task_key, {}).values())
            return len(values), statistics.variance(values) if len(values) >= 2 else None

        return self._read(run)


class MemoryKnowledge(_MemoryRepository):
    """``store.knowledge`` without SQL."""

    def __init__(self, store: InMemoryStateStore) -> None:
        super().__init__(store)
        self._rows: dict[str, dict[str, Any]] = {}

    def add(self, task: "TaskRecord") -> None:
        values = knowledge_row(task)

        def run() -> None:
            stored = _jsonb_copy(values, "features", "best_params", "outcome")
            created = self._rows[values["task_id"]]["created_at"] if values["task_id"] in self._rows else None
            self._rows[values["task_id"]] = {**stored, "created_at": created or self._store.now()}

        self._write(run)

    def tasks(
        self, *, now: datetime | None = None, retention_days: int | None = None, market: str | None = None
    ) -> list["TaskRecord"]:
        wanted = market_key(market) if market is not None else None
        until = _utc(now)

        def run() -> list["TaskRecord"]:
            rows = [
                row
                for row in self._rows.values()
                if (until is None or row["finished_at"] <= until)
                and (
                    until is None
                    or retention_days is None
                    or row["finished_at"] >= until - timedelta(days=retention_days)
                )
                and (wanted is None or row["market"] == wanted)
            ]
            rows.sort(key=lambda row: (row["finished_at"], row["task_id"]))
            return [task_from_row(_jsonb_copy(row, "features", "best_params", "outcome")) for row in rows]

        return self._read(run)

    def prune(self, retention_days: int, now: datetime | None = None) -> int:
        return self._store.prune_older_than(self._rows, "finished_at", retention_days, now)


class MemoryAlerts(_MemoryRepository):
    """``store.alerts`` without SQL."""

    def __init__(self, store: InMemoryStateStore) -> None:
        super().__init__(store)
        self._states: dict[str, dict[str, Any]] = {}  # fingerprint -> row
        self._outbox: dict[str, dict[str, Any]] = {}  # delivery_id -> row

    def states(self) -> list[AlertState]:
        def run() -> list[AlertState]:
            rows = sorted(self._states.values(), key=lambda row: (row["rule"], row["fingerprint"]))
            return [state_from_row(_jsonb_copy(row, "labels", "values")) for row in rows]

        return self._read(run)

    def apply(self, changed: Sequence[AlertState], deliveries: Sequence[Delivery]) -> int:
        """See :meth:`SqlAlerts.apply`."""
        rows = state_rows(changed)
        delivery_rows = [delivery_row(delivery) for delivery in deliveries]

        def run() -> tuple[int, tuple[str, int, int | None] | None]:
            stored = [(_jsonb_copy(row, "labels", "values"), version) for row, version in rows]
            outbox = [_jsonb_copy(row, "labels", "values") for row in delivery_rows]
            for row, version in stored:  # every check first: a conflict writes nothing
                current = self._states.get(row["fingerprint"])
                found = current["version"] if current is not None else None
                if planned_write(version, found, blind_overwrite=False) is None:
                    return 0, (row["fingerprint"], version, found)
            taken = {(row["notice_id"], row["channel"]): key for key, row in self._outbox.items()}
            new: dict[str, dict[str, Any]] = {}
            for row in outbox:
                if row["delivery_id"] in self._outbox or row["delivery_id"] in new:
                    continue
                other = taken.get((row["notice_id"], row["channel"]))
                if other is not None:
                    raise PermanentError(
                        f"{SERVICE} ({self._store.describe()}): IntegrityError: duplicate key value "
                        'violates unique constraint "uq_alert_deliveries_notice_channel": '
                        f"notice_id={row['notice_id']!r}, channel={row['channel']!r}"
                    )
                taken[(row["notice_id"], row["channel"])] = row["delivery_id"]
                new[row["delivery_id"]] = row
            now = self._store.now()
            for row, version in stored:
                self._states[row["fingerprint"]] = {**row, "version": version + 1, "updated_at": now}
            self._outbox.update(new)
            return len(new), None

        new, conflict = self._write(run)
        if conflict is not None:
            fingerprint, expected, current = conflict
            raise conflict_error(
                self._qualified("alert_states"), {"fingerprint": fingerprint}, expected, current
            )
        return new

    def claim_due(
        self, now: datetime, lease_s: float, limit: int = 100, channels: Collection[str] | None = None
    ) -> list[Delivery]:
        moment, lease_until = check_claim(now, lease_s, limit)
        wanted = set(channels) if channels is not None else None

        def run() -> list[Delivery]:
            due = [
                row
                for row in self._outbox.values()
                if row["status"] == "pending"
                and row["next_attempt_at"] <= moment
                and (row["lease_until"] is None or row["lease_until"] <= moment)
                and (wanted is None or row["channel"] in wanted)
            ]
            due.sort(key=lambda row: (row["created_at"], row["delivery_id"]))
            claimed = []
            for row in due[:limit]:
                row.update(lease_until=lease_until, attempts=row["attempts"] + 1)
                claimed.append(delivery_from_row(_jsonb_copy(row, "labels", "values")))
            return claimed

        return self._write(run)

    def _finish(self, delivery_id: str, values: Mapping[str, Any]) -> bool:
        def run() -> bool:
            row = self._outbox.get(delivery_id)
            if row is None or row["status"] != "pending":
                return False
            row.update(values)
            return True

        return self._write(run)

    def mark_sent(self, delivery_id: str, answer: str, now: datetime) -> bool:
        values = {"status": "sent", "sent_at": utc(now), "answer": clip(answer), "lease_until": None}
        return self._finish(delivery_id, values)

    def mark_failed(self, delivery_id: str, error: str, now: datetime, retry_at: datetime | None) -> bool:
        utc(now)
        retry = utc(retry_at)

        def run() -> bool:
            row = self._outbox.get(delivery_id)
            if row is None or row["status"] != "pending":
                return False
            row.update(failures=row["failures"] + 1, last_error=clip(error), lease_until=None)
            if retry is None:
                row["status"] = "dead"
            else:
                row["next_attempt_at"] = retry
            return True

        return self._write(run)

    def deliveries(
        self, status: str | None = None, limit: int = 100, fingerprint: str | None = None
    ) -> list[Delivery]:
        wanted = check_choice("status", status, DELIVERY_STATUSES) if status is not None else None

        def run() -> list[Delivery]:
            rows = [
                row
                for row in self._outbox.values()
                if (wanted is None or row["status"] == wanted)
                and (fingerprint is None or row["fingerprint"] == fingerprint)
            ]
            rows.sort(key=lambda row: (row["created_at"], row["delivery_id"]), reverse=True)
            return [delivery_from_row(_jsonb_copy(row, "labels", "values")) for row in rows[:limit]]

        return self._read(run)

    def delivery_counts(self) -> list[tuple[str, str, str, str, int, int]]:
        def run() -> list[tuple[str, str, str, str, int, int]]:
            groups: dict[tuple[str, str, str, str], list[int]] = {}
            for row in self._outbox.values():
                group = groups.setdefault((row["rule"], row["channel"], row["event"], row["status"]), [0, 0])
                group[0] += 1
                group[1] += row["failures"]
            return [(*key, rows, failures) for key, (rows, failures) in sorted(groups.items())]

        return self._read(run)

    def prune(self, retention_days: int, now: datetime | None = None) -> int:
        check_retention(retention_days)

        def run() -> int:
            cutoff = (utc(now) or self._store.now()) - timedelta(days=int(retention_days))
            sent = [
                key
                for key, row in self._outbox.items()
                if row["status"] in FINISHED_DELIVERY_STATUSES and row["created_at"] < cutoff
            ]
            resolved = [
                key
                for key, row in self._states.items()
                if row["status"] == "resolved"
                and row["resolved_at"] is not None
                and row["resolved_at"] < cutoff
            ]
            for key in sent:
                del self._outbox[key]
            for key in resolved:
                del self._states[key]
            return len(sent) + len(resolved)

        return self._store.guarded_call(run, operation="delete")
