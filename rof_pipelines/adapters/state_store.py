"""The state store: what the system learns, kept in PostgreSQL (config ``state_storage``).

SQLAlchemy Core, no ORM. Every table lives in the configured schema and is created by the Alembic
migrations in ``migrations/`` (run through :meth:`StateStore.upgrade`, which ``rof db upgrade`` and
``auto_migrate`` share). :func:`build_metadata` mirrors the migrations at head; ``alembic check``
compares the two.

Every database call goes through the ``state_store`` circuit breaker; driver errors surface as
:class:`StoreUnavailableError` (connection lost, timeout: retry later) or :class:`PermanentError`
(bad statement, constraint violated). Optimistic locking: rows carry ``version``; a writer passes
the version it read as ``expected_version`` and gets :class:`ConflictError` if someone wrote first.
Conflicts are raised outside the breaker, so contention never opens the circuit.
"""

import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert

from rof_pipelines.adapters.breakers import guarded_call
from rof_pipelines.errors import (
    ConfigError,
    ConflictError,
    DataValidationError,
    PermanentError,
    RofError,
    StoreUnavailableError,
)
from rof_pipelines.settings import CircuitBreakerConfig, StateStorageConfig, normalise_market

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

    from rof_pipelines.core.knowledge import TaskRecord
    from rof_pipelines.settings import Settings

log = logging.getLogger(__name__)

SERVICE = "state_store"
DEFAULT_UPDATED_BY = "rof_pipelines"
DEFAULT_CONNECT_TIMEOUT_S = 5.0

# Mirrored by the CHECK constraints of migration 0001; widen both together (in a new migration).
PROGRESS_STATUSES: tuple[str, ...] = ("pending", "running", "completed", "failed", "cancelled")
CONFIG_SOURCES: tuple[str, ...] = ("default", "ga", "ab_test", "manual")

# Alembic's ``context``/``op`` are process globals: one migration command at a time per process.
_alembic_lock = threading.Lock()

T = TypeVar("T")


# --- tables ---------------------------------------------------------------------------------------


def build_metadata(schema: str) -> sa.MetaData:
    """The state store's tables at migration head, in ``schema``.

    Keep in step with ``migrations/versions``: every new migration changes this too.
    """
    metadata = sa.MetaData(schema=schema)
    tstz = sa.DateTime(timezone=True)
    sa.Table(
        "worker_progress",
        metadata,
        sa.Column("task_id", sa.Text(), primary_key=True),
        sa.Column("worker_id", sa.Text(), nullable=True),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("experiment_id", sa.Text(), nullable=True),
        sa.Column("window_start", tstz, nullable=True),
        sa.Column("window_end", tstz, nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("total_generations", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("best_fitness", sa.Double(), nullable=True),
        sa.Column("eta_seconds", sa.Double(), nullable=True),
        sa.Column("details", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("started_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.Index("ix_worker_progress_market_status", "market", "status"),
    )
    sa.Table(
        "active_strategy_configs",
        metadata,
        sa.Column("market", sa.Text(), primary_key=True),
        sa.Column("params", postgresql.JSONB(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("experiment_id", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("updated_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_by", sa.Text(), nullable=False),
    )
    sa.Table(  # 0002: see rof_pipelines/adapters/inbox.py
        "message_inbox",
        metadata,
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("market", sa.Text(), nullable=True),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("redelivered", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("received_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.Column("quarantined_at", tstz, nullable=True),  # 0007
        sa.Column("quarantine_reason", sa.Text(), nullable=True),  # 0007
        sa.UniqueConstraint("message_id", name="uq_message_inbox_message_id"),
        sa.Index("ix_message_inbox_kind_seq", "kind", "seq"),
    )
    sa.Table(  # 0003: the genetic optimiser's checkpoints, see rof_pipelines/adapters/optimisation.py
        "ga_checkpoints",
        metadata,
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("experiment_id", sa.Text(), nullable=False),
        sa.Column("window_start", tstz, nullable=False),
        sa.Column("window_end", tstz, nullable=False),
        sa.Column("data_fingerprint", sa.Text(), nullable=False),
        sa.Column("config_fingerprint", sa.Text(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("best_fitness", sa.Double(), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint(
            "market",
            "experiment_id",
            "window_start",
            "window_end",
            "data_fingerprint",
            "config_fingerprint",
            "generation",
            name="uq_ga_checkpoints_task_generation",
        ),
        sa.Index("ix_ga_checkpoints_created_at", "created_at"),
    )
    sa.Table(  # 0004: see rof_pipelines/adapters/config_versions.py
        "config_versions",
        metadata,
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("changed_keys", postgresql.JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("recorded_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('applied', 'refused')", name="ck_config_versions_status"),
    )
    sa.Table(  # 0005: A/B experiments (defs/experiments) and the meta/transfer knowledge base
        "ab_experiments",
        metadata,
        sa.Column("experiment_id", sa.Text(), primary_key=True),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("window_start", tstz, nullable=False),
        sa.Column("window_end", tstz, nullable=False),
        sa.Column("decision", postgresql.JSONB(), nullable=False),
        sa.Column("winner", sa.Text(), nullable=True),
        sa.Column("promoted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("active_version", sa.Integer(), nullable=True),
        sa.Column("promoted_version", sa.Integer(), nullable=True),
        sa.Column("conflict", sa.Text(), nullable=True),
        sa.Column("details", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.Index("ix_ab_experiments_market_created_at", "market", "created_at"),
    )
    sa.Table(
        "ab_arms",
        metadata,
        sa.Column(
            "experiment_id",
            sa.Text(),
            sa.ForeignKey(f"{schema}.ab_experiments.experiment_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("arm", sa.Text(), primary_key=True),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("params", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("metrics", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("p_values", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.CheckConstraint("role IN ('active', 'challenger', 'baseline')", name="ck_ab_arms_role"),
    )
    sa.Table(
        "knowledge_tasks",
        metadata,
        sa.Column("task_id", sa.Text(), primary_key=True),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("finished_at", tstz, nullable=False),
        sa.Column("features", postgresql.JSONB(), nullable=False),
        sa.Column("best_params", postgresql.JSONB(), nullable=False),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("outcome", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("generations", sa.Integer(), nullable=True),
        sa.Column("artifact", sa.Text(), nullable=True),
        sa.Column("created_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.Index("ix_knowledge_tasks_finished_at", "finished_at"),
    )
    sa.Table(
        "experiment_trials",
        metadata,
        sa.Column("task_key", sa.Text(), primary_key=True),
        sa.Column("config_hash", sa.Text(), primary_key=True),
        sa.Column("sharpe", sa.Double(), nullable=False),
        sa.Column("created_at", tstz, nullable=False, server_default=sa.func.now()),
    )
    return metadata


# --- values ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveConfig:
    """The strategy parameters currently in force for one market."""

    market: str
    params: dict[str, Any]
    source: str
    experiment_id: str | None
    version: int
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True)
class GACheckpoint:
    """One saved generation of an optimisation task; ``payload`` is opaque to the store."""

    task_id: str
    market: str
    experiment_id: str
    window_start: datetime
    window_end: datetime
    data_fingerprint: str
    config_fingerprint: str
    generation: int
    final: bool
    best_fitness: float | None
    payload: bytes
    created_at: datetime


@dataclass(frozen=True)
class WorkerProgress:
    """The last progress report of one optimisation task."""

    task_id: str
    market: str
    status: str
    generation: int
    total_generations: int
    best_fitness: float | None
    eta_seconds: float | None
    details: dict[str, Any]
    version: int
    started_at: datetime
    updated_at: datetime
    worker_id: str | None = None
    experiment_id: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None


ARM_ROLES: tuple[str, ...] = ("active", "challenger", "baseline")  # mirrored by ck_ab_arms_role (0005)


@dataclass(frozen=True)
class ArmRecord:
    """One arm of a stored experiment: its parameters, held-out metrics and p-values."""

    arm: str
    role: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    p_values: dict[str, Any]


@dataclass(frozen=True)
class ExperimentRecord:
    """A finished A/B experiment: the decision, whether it was promoted, and any promotion conflict."""

    experiment_id: str
    market: str
    label: str
    window_start: datetime
    window_end: datetime
    decision: dict[str, Any]
    winner: str | None
    promoted: bool
    active_version: int | None
    promoted_version: int | None
    conflict: str | None
    details: dict[str, Any]
    created_at: datetime | None = None
    arms: tuple[ArmRecord, ...] = ()

    @property
    def partition_date(self) -> date:
        """The day whose window ended the experiment: ``details["partition_date"]`` when recorded,
        else the UTC day of the window's last instant (a day's window ends at the next midnight, so
        ``window_end`` itself names the day after)."""
        recorded = self.details.get("partition_date")
        if recorded:
            return date.fromisoformat(str(recorded))
        return (self.window_end.astimezone(UTC) - timedelta(microseconds=1)).date()

    @property
    def run_id(self) -> str | None:
        """The Dagster run that ran the experiment, when ``details["run_id"]`` recorded it."""
        run_id = self.details.get("run_id")
        return str(run_id) if run_id else None


def json_safe(value: Any) -> Any:
    """Nested JSON with non-finite floats as None (jsonb refuses NaN/Infinity) and numpy scalars as
    Python ones: decisions and metrics carry inf (a Sortino without downside) legitimately."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, str | bytes):
        value = item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    """numpy scalars (GA output) and datetimes; anything else is a caller bug and fails loudly."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _json_dumps(value: Any) -> str:
    # allow_nan=False: PostgreSQL jsonb refuses NaN/Infinity; fail here with a clear message instead.
    return json.dumps(value, allow_nan=False, default=_json_default)


def _market_key(market: Any) -> str:
    try:
        return normalise_market(str(market))
    except ValueError as exc:
        raise DataValidationError(f"{SERVICE}: market: {exc}") from None


def _check_choice(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise DataValidationError(f"{SERVICE}: {field} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _check_expected(expected_version: int | None) -> None:
    if expected_version is not None and (
        not isinstance(expected_version, int) or isinstance(expected_version, bool) or expected_version < 0
    ):
        raise DataValidationError(
            f"{SERVICE}: expected_version must be a version number >= 0, got {expected_version!r}"
        )


def _as_object(field: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DataValidationError(
            f"{SERVICE}: {field} must be a mapping (JSON object), got {type(value).__name__}"
        )
    return dict(value)


# --- the store ------------------------------------------------------------------------------------


class StateStore:
    """Typed access to the state store's tables, plus its migrations.

    Construction does not connect; the first call does (and may raise StoreUnavailableError).
    """

    def __init__(
        self,
        config: StateStorageConfig,
        breaker: CircuitBreakerConfig | None = None,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        self.config = config
        self.schema = config.schema_name
        self._breaker = breaker
        self._password = config.db_password.get_secret_value()
        statement_timeout_ms = int((breaker or CircuitBreakerConfig()).call_timeout.total_seconds() * 1000)
        self._engine = sa.create_engine(
            config.sqlalchemy_url(),
            pool_pre_ping=True,
            pool_recycle=1800,
            connect_args={
                # libpq counts whole seconds and treats values below 2 as 2.
                "connect_timeout": max(2, round(connect_timeout)),
                "application_name": "rof_pipelines.state_store",
                "options": f"-c statement_timeout={statement_timeout_ms}",
            },
            json_serializer=_json_dumps,
        )
        self.metadata = build_metadata(self.schema)
        self.worker_progress = self.metadata.tables[f"{self.schema}.worker_progress"]
        self.active_strategy_configs = self.metadata.tables[f"{self.schema}.active_strategy_configs"]
        self.ga_checkpoints = self.metadata.tables[f"{self.schema}.ga_checkpoints"]
        self.ab_experiments = self.metadata.tables[f"{self.schema}.ab_experiments"]
        self.ab_arms = self.metadata.tables[f"{self.schema}.ab_arms"]
        self.knowledge_table = self.metadata.tables[f"{self.schema}.knowledge_tasks"]
        self.trials_table = self.metadata.tables[f"{self.schema}.experiment_trials"]

    # -- plumbing ----------------------------------------------------------------------------------

    @property
    def engine(self) -> sa.Engine:
        """The pooled engine, for adapters that share the state store's database (later tables)."""
        return self._engine

    def describe(self) -> str:
        """A password-free description for logs and Dagster metadata."""
        return self.config.describe()

    def __repr__(self) -> str:
        return f"StateStore({self.describe()})"

    def dispose(self) -> None:
        """Close pooled connections (shutdown, tests, after fork)."""
        self._engine.dispose()

    def __enter__(self) -> "StateStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()

    def _translate(self, exc: BaseException) -> RofError:
        """Driver/alembic exception -> the project's error; the password never reaches the message."""
        message = f"{SERVICE} ({self.describe()}): {type(exc).__name__}: {exc}"
        if self._password:
            message = message.replace(self._password, "***")
        transient: tuple[type[BaseException], ...] = (
            sa_exc.OperationalError,  # connection refused/lost, statement timeout, deadlock
            sa_exc.InterfaceError,
            sa_exc.TimeoutError,  # pool exhausted
            sa_exc.DisconnectionError,
            OSError,
            TimeoutError,
        )
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return StoreUnavailableError(message)
        if isinstance(exc, transient):
            return StoreUnavailableError(message)
        # IntegrityError, ProgrammingError, DataError, alembic's CommandError (unknown revision), bugs.
        return PermanentError(message)

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return guarded_call(SERVICE, self._breaker, self._translate, fn, *args)

    def _key(self, table: sa.Table, key: str) -> str:
        return f"{self.schema}.{table.name} {key}"

    def _conflict(
        self, table: sa.Table, key: str, expected: int | None, current: int | None
    ) -> ConflictError:
        wanted = "absent (create)" if not expected else f"version {expected}"
        found = "absent" if current is None else f"version {current}"
        return ConflictError(
            f"{SERVICE}: optimistic-lock conflict on {self._key(table, key)}: expected {wanted}, "
            f"found {found}; re-read and retry"
        )

    def ping(self) -> None:
        """Round-trip to the database (health checks)."""

        def run() -> None:
            with self._engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))

        self._call(run)

    # -- migrations --------------------------------------------------------------------------------

    def _migrations_path(self) -> Path:
        path = self.config.resolved_migrations_path()
        if not (path / "env.py").is_file():
            raise ConfigError(
                f"state_storage.migrations_path: {path} is not an Alembic migrations directory (no env.py)"
            )
        return path

    def alembic_config(self, connection: sa.Connection | None = None) -> "AlembicConfig":
        """A file-less Alembic config: scripts from ``state_storage.migrations_path``, and the
        connection (or, without one, the URL) and schema in ``attributes`` for migrations/env.py."""
        from alembic.config import Config

        attributes: dict[str, Any] = {"schema": self.schema, "configure_logger": False}
        if connection is not None:
            attributes["connection"] = connection
        else:
            attributes["url"] = self.config.sqlalchemy_url()
        cfg = Config(attributes=attributes)
        cfg.set_main_option("script_location", str(self._migrations_path()).replace("%", "%%"))
        cfg.set_main_option("path_separator", "os")
        return cfg

    def _run_command(self, name: str, revision: str) -> None:
        from alembic import command

        migrate = getattr(command, name)
        self._migrations_path()

        def run() -> None:
            with _alembic_lock, self._engine.begin() as conn:
                # A migration may rewrite a big table; the per-statement timeout is for normal calls.
                conn.execute(sa.text("SET LOCAL statement_timeout = 0"))
                migrate(self.alembic_config(conn), revision)

        self._call(run)

    def upgrade(self, revision: str = "head") -> str | None:
        """Migrate forward to ``revision`` (one transaction, schema created if missing); returns the
        revision the database is at afterwards."""
        self._run_command("upgrade", revision)
        current = self.current_revision()
        log.info("%s: state store at revision %s", self.describe(), current)
        return current

    def downgrade(self, revision: str) -> str | None:
        """Migrate back to ``revision`` (``"base"`` drops every table, ``"-1"`` undoes one step)."""
        self._run_command("downgrade", revision)
        current = self.current_revision()
        log.info("%s: state store at revision %s", self.describe(), current)
        return current

    def current_revision(self) -> str | None:
        """The revision recorded in ``<schema>.alembic_version``; None at base (or never migrated)."""
        from alembic.runtime.migration import MigrationContext

        def run() -> str | None:
            with self._engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={"version_table_schema": self.schema})
                return context.get_current_revision()

        return self._call(run)

    def head_revision(self) -> str | None:
        """The newest revision the code ships (no database access)."""
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self.alembic_config()).get_current_head()

    # -- worker progress ---------------------------------------------------------------------------

    def record_progress(
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
        """Write a task's progress; return the row's new version.

        ``expected_version``: None - insert or overwrite (the task's own worker reporting);
        0 - insert only (claim a task: ConflictError if it already exists);
        N - overwrite only if the row is still at version N, else ConflictError.
        ``worker_id``/``experiment_id``/``window_*`` left as None keep what the row holds.
        """
        _check_expected(expected_version)
        table = self.worker_progress
        values: dict[str, Any] = {
            "market": _market_key(market),
            "status": _check_choice("status", status, PROGRESS_STATUSES),
            "generation": generation,
            "total_generations": total_generations,
            "best_fitness": best_fitness,
            "eta_seconds": eta_seconds,
            "details": _as_object("details", details),
        }
        optional = {
            "worker_id": worker_id,
            "experiment_id": experiment_id,
            "window_start": window_start,
            "window_end": window_end,
        }
        values.update({name: value for name, value in optional.items() if value is not None})
        bump = {"version": table.c.version + 1, "updated_at": sa.func.now()}

        def run() -> tuple[int | None, int | None]:
            """(new version, None) on success, (None, current version or None) on conflict."""
            with self._engine.begin() as conn:
                if expected_version is None:
                    stmt = (
                        pg_insert(table)
                        .values(task_id=task_id, **values)
                        .on_conflict_do_update(index_elements=[table.c.task_id], set_={**values, **bump})
                        .returning(table.c.version)
                    )
                    return conn.execute(stmt).scalar_one(), None
                if expected_version == 0:
                    stmt = (
                        pg_insert(table)
                        .values(task_id=task_id, **values)
                        .on_conflict_do_nothing(index_elements=[table.c.task_id])
                        .returning(table.c.version)
                    )
                else:
                    stmt = (
                        sa.update(table)
                        .where(table.c.task_id == task_id, table.c.version == expected_version)
                        .values(**values, **bump)
                        .returning(table.c.version)
                    )
                new_version = conn.execute(stmt).scalar_one_or_none()
                if new_version is not None:
                    return new_version, None
                current = conn.execute(
                    sa.select(table.c.version).where(table.c.task_id == task_id)
                ).scalar_one_or_none()
                return None, current

        new_version, current = self._call(run)
        if new_version is None:
            raise self._conflict(table, f"task_id={task_id!r}", expected_version, current)
        return new_version

    def get_progress(self, task_id: str) -> WorkerProgress | None:
        """The task's last progress report, or None if it never reported."""
        table = self.worker_progress

        def run() -> WorkerProgress | None:
            with self._engine.connect() as conn:
                row = conn.execute(sa.select(table).where(table.c.task_id == task_id)).mappings().first()
            return WorkerProgress(**row) if row is not None else None

        return self._call(run)

    def list_progress(self, market: str | None = None, status: str | None = None) -> list[WorkerProgress]:
        """Progress rows, newest first, optionally for one market and/or status."""
        table = self.worker_progress
        query = sa.select(table).order_by(table.c.updated_at.desc(), table.c.task_id)
        if market is not None:
            query = query.where(table.c.market == _market_key(market))
        if status is not None:
            query = query.where(table.c.status == _check_choice("status", status, PROGRESS_STATUSES))

        def run() -> list[WorkerProgress]:
            with self._engine.connect() as conn:
                return [WorkerProgress(**row) for row in conn.execute(query).mappings()]

        return self._call(run)

    # -- active strategy configs -------------------------------------------------------------------

    def get_active_config(self, market: str) -> ActiveConfig | None:
        """The parameters in force for ``market``, or None if none were ever set."""
        table = self.active_strategy_configs
        key = _market_key(market)

        def run() -> ActiveConfig | None:
            with self._engine.connect() as conn:
                row = conn.execute(sa.select(table).where(table.c.market == key)).mappings().first()
            return ActiveConfig(**row) if row is not None else None

        return self._call(run)

    def set_active_config(
        self,
        market: str,
        params: Mapping[str, Any],
        source: str,
        experiment_id: str | None = None,
        expected_version: int | None = None,
        updated_by: str = DEFAULT_UPDATED_BY,
    ) -> ActiveConfig:
        """Put ``params`` in force for ``market`` and return the stored row.

        ``expected_version`` None (or 0): create - ConflictError if the market already has a config;
        N: replace the config read at version N - ConflictError if it is now at another version (or
        gone). A replacement is whole: ``experiment_id`` left None clears the previous one. Blind
        overwrites are deliberately impossible: the active config is shared truth.
        """
        _check_expected(expected_version)
        table = self.active_strategy_configs
        key = _market_key(market)
        values: dict[str, Any] = {
            "params": _as_object("params", params),
            "source": _check_choice("source", source, CONFIG_SOURCES),
            "experiment_id": experiment_id,
            "updated_by": updated_by,
        }

        def run() -> tuple[ActiveConfig | None, int | None]:
            with self._engine.begin() as conn:
                if not expected_version:
                    stmt = (
                        pg_insert(table)
                        .values(market=key, **values)
                        .on_conflict_do_nothing(index_elements=[table.c.market])
                        .returning(*table.c)
                    )
                else:
                    stmt = (
                        sa.update(table)
                        .where(table.c.market == key, table.c.version == expected_version)
                        .values(**values, version=table.c.version + 1, updated_at=sa.func.now())
                        .returning(*table.c)
                    )
                row = conn.execute(stmt).mappings().first()
                if row is not None:
                    return ActiveConfig(**row), None
                current = conn.execute(
                    sa.select(table.c.version).where(table.c.market == key)
                ).scalar_one_or_none()
                return None, current

        stored, current = self._call(run)
        if stored is None:
            raise self._conflict(table, f"market={key!r}", expected_version, current)
        return stored

    def list_active_configs(self) -> list[ActiveConfig]:
        """Every market's config in force, by market."""
        table = self.active_strategy_configs

        def run() -> list[ActiveConfig]:
            with self._engine.connect() as conn:
                rows = conn.execute(sa.select(table).order_by(table.c.market)).mappings()
                return [ActiveConfig(**row) for row in rows]

        return self._call(run)

    # -- GA checkpoints -----------------------------------------------------------------------------

    def _task_filter(self, key: Mapping[str, Any]) -> list[Any]:
        table = self.ga_checkpoints
        return [
            table.c.market == _market_key(key["market"]),
            table.c.experiment_id == key["experiment_id"],
            table.c.window_start == key["window_start"],
            table.c.window_end == key["window_end"],
            table.c.data_fingerprint == key["data_fingerprint"],
            table.c.config_fingerprint == key["config_fingerprint"],
        ]

    def save_checkpoint(
        self,
        key: Mapping[str, Any],
        generation: int,
        payload: bytes,
        *,
        final: bool = False,
        best_fitness: float | None = None,
        keep: int = 2,
    ) -> None:
        """Store generation ``generation`` of the task ``key`` (market, experiment_id, window_start,
        window_end, data_fingerprint, config_fingerprint, task_id); a repeated generation (a resumed run
        replaying it) overwrites. Only the newest ``keep`` checkpoints of the task stay: resuming needs
        the newest, so older ones would only grow the table."""
        if generation < 0 or keep < 1:
            raise DataValidationError(f"{SERVICE}: generation must be >= 0 and keep >= 1")
        table = self.ga_checkpoints
        values = {
            "task_id": str(key["task_id"]),
            "market": _market_key(key["market"]),
            "experiment_id": str(key["experiment_id"]),
            "window_start": key["window_start"],
            "window_end": key["window_end"],
            "data_fingerprint": str(key["data_fingerprint"]),
            "config_fingerprint": str(key["config_fingerprint"]),
            "generation": int(generation),
            "final": bool(final),
            "best_fitness": best_fitness,
            "payload": bytes(payload),
        }
        where = self._task_filter(key)

        def run() -> None:
            with self._engine.begin() as conn:
                stmt = pg_insert(table).values(**values)
                stmt = stmt.on_conflict_do_update(
                    constraint="uq_ga_checkpoints_task_generation",
                    set_={
                        "payload": stmt.excluded.payload,
                        "final": stmt.excluded.final,
                        "best_fitness": stmt.excluded.best_fitness,
                        "task_id": stmt.excluded.task_id,
                        "created_at": sa.func.now(),
                    },
                )
                conn.execute(stmt)
                newest = (
                    sa.select(table.c.generation)
                    .where(*where)
                    .order_by(table.c.generation.desc())
                    .limit(keep)
                    .scalar_subquery()
                )
                conn.execute(sa.delete(table).where(*where, table.c.generation.not_in(newest)))

        self._call(run)

    def latest_checkpoint(self, key: Mapping[str, Any]) -> GACheckpoint | None:
        """The task's newest checkpoint (highest generation), or None."""
        table = self.ga_checkpoints
        query = sa.select(table).where(*self._task_filter(key)).order_by(table.c.generation.desc()).limit(1)

        def run() -> GACheckpoint | None:
            with self._engine.connect() as conn:
                row = conn.execute(query).mappings().first()
            if row is None:
                return None
            values = {k: v for k, v in row.items() if k != "id"}
            values["payload"] = bytes(values["payload"])
            return GACheckpoint(**values)

        return self._call(run)

    def prune_checkpoints(self, retention_days: int, now: datetime | None = None) -> int:
        """Delete checkpoints written more than ``retention_days`` ago; returns how many went."""
        return self._prune_older_than(self.ga_checkpoints.c.created_at, retention_days, now)

    def _prune_older_than(self, column: sa.Column, retention_days: int, now: datetime | None) -> int:
        """Delete the rows of ``column``'s table whose ``column`` is more than ``retention_days`` before
        ``now`` (the database's clock when None); returns how many went."""
        if retention_days < 1:
            raise DataValidationError(f"{SERVICE}: retention_days must be >= 1, got {retention_days}")
        base = sa.func.now() if now is None else sa.bindparam("now", now, type_=sa.DateTime(timezone=True))
        cutoff = base - sa.func.make_interval(0, 0, 0, int(retention_days))

        def run() -> int:
            with self._engine.begin() as conn:
                return conn.execute(sa.delete(column.table).where(column < cutoff)).rowcount

        return self._call(run)

    # -- A/B experiments -----------------------------------------------------------------------------

    def record_experiment(self, experiment: ExperimentRecord) -> None:
        """Store a finished experiment and its arms in one transaction (PermanentError if the id exists:
        experiment ids are unique per run, so a duplicate is a bug, not a retry)."""
        exp, arms = self.ab_experiments, self.ab_arms
        for arm in experiment.arms:
            _check_choice("role", arm.role, ARM_ROLES)
        row = {
            "experiment_id": experiment.experiment_id,
            "market": _market_key(experiment.market),
            "label": experiment.label,
            "window_start": experiment.window_start,
            "window_end": experiment.window_end,
            "decision": json_safe(experiment.decision),
            "winner": experiment.winner,
            "promoted": bool(experiment.promoted),
            "active_version": experiment.active_version,
            "promoted_version": experiment.promoted_version,
            "conflict": experiment.conflict,
            "details": json_safe(experiment.details),
        }
        arm_rows = [
            {
                "experiment_id": experiment.experiment_id,
                "arm": arm.arm,
                "role": arm.role,
                "params": json_safe(arm.params),
                "metrics": json_safe(arm.metrics),
                "p_values": json_safe(arm.p_values),
            }
            for arm in experiment.arms
        ]

        def run() -> None:
            with self._engine.begin() as conn:
                conn.execute(sa.insert(exp).values(**row))
                if arm_rows:
                    conn.execute(sa.insert(arms), arm_rows)

        self._call(run)

    def list_experiments(self, market: str | None = None, limit: int = 100) -> list[ExperimentRecord]:
        """Experiments, newest first (optionally of one market), each with its arms."""
        exp = self.ab_experiments
        query = sa.select(exp).order_by(exp.c.created_at.desc(), exp.c.experiment_id.desc()).limit(limit)
        if market is not None:
            query = query.where(exp.c.market == _market_key(market))

        def run() -> list[ExperimentRecord]:
            with self._engine.connect() as conn:
                return self._with_arms(conn, query)

        return self._call(run)

    def _with_arms(self, conn: sa.Connection, query: sa.Select) -> list[ExperimentRecord]:
        """The experiments ``query`` selects, in its order, each with its arms (two statements)."""
        arms = self.ab_arms
        rows = list(conn.execute(query).mappings())
        ids = [row["experiment_id"] for row in rows]
        by_id: dict[str, list[ArmRecord]] = {i: [] for i in ids}
        if ids:
            arm_query = sa.select(arms).where(arms.c.experiment_id.in_(ids)).order_by(arms.c.arm)
            for arm in conn.execute(arm_query).mappings():
                values = {k: v for k, v in arm.items() if k != "experiment_id"}
                by_id[arm["experiment_id"]].append(ArmRecord(**values))
        return [ExperimentRecord(**row, arms=tuple(by_id[row["experiment_id"]])) for row in rows]

    def get_experiment(self, experiment_id: str) -> ExperimentRecord | None:
        """One experiment with its arms, or None."""
        exp = self.ab_experiments
        query = sa.select(exp).where(exp.c.experiment_id == experiment_id)

        def run() -> ExperimentRecord | None:
            with self._engine.connect() as conn:
                found = self._with_arms(conn, query)
            return found[0] if found else None

        return self._call(run)

    def promoting_experiment(self, market: str) -> tuple[ActiveConfig | None, ExperimentRecord | None]:
        """The market's active config and the experiment that promoted it, read together: (None, None)
        without a config; (config, None) when it was set otherwise (``source`` says how) or when the
        promoting experiment's record is missing (``config.experiment_id`` still names it)."""
        configs, exp = self.active_strategy_configs, self.ab_experiments
        key = _market_key(market)

        def run() -> tuple[ActiveConfig | None, ExperimentRecord | None]:
            with self._engine.connect() as conn:
                row = conn.execute(sa.select(configs).where(configs.c.market == key)).mappings().first()
                if row is None:
                    return None, None
                config = ActiveConfig(**row)
                if config.experiment_id is None:
                    return config, None
                query = sa.select(exp).where(exp.c.experiment_id == config.experiment_id)
                found = self._with_arms(conn, query)
            return config, found[0] if found else None

        return self._call(run)

    def checkpoint_generations(self, task_id: str) -> list[tuple[int, bool]]:
        """The generations an optimisation task still has checkpoints of, ascending, each with its
        ``final`` flag (older ones are pruned, so this is the tail of the run)."""
        table = self.ga_checkpoints
        query = (
            sa.select(table.c.generation, table.c.final)
            .where(table.c.task_id == task_id)
            .order_by(table.c.generation)
        )

        def run() -> list[tuple[int, bool]]:
            with self._engine.connect() as conn:
                return [(int(gen), bool(final)) for gen, final in conn.execute(query)]

        return self._call(run)

    # -- knowledge base (meta / transfer learning) -----------------------------------------------------

    def add_knowledge_task(self, task: "TaskRecord") -> None:
        """Insert or replace a finished task (the same task id re-run replaces its record)."""
        table = self.knowledge_table
        data = task.to_dict()
        values = {
            "task_id": data["task_id"],
            "market": _market_key(data["market"]),
            "finished_at": task.finished_at,
            "features": json_safe(data["features"]),
            "best_params": json_safe(data["best_params"]),
            "score": data["score"],
            "outcome": json_safe(data["outcome"]),
            "generations": data["generations"],
            "artifact": data["artifact"],
        }

        def run() -> None:
            with self._engine.begin() as conn:
                stmt = pg_insert(table).values(**values)
                update = {k: stmt.excluded[k] for k in values if k != "task_id"}
                conn.execute(stmt.on_conflict_do_update(index_elements=[table.c.task_id], set_=update))

        self._call(run)

    def record_trials(self, task_key: str, trials: Mapping[str, float]) -> None:
        """Add configurations scored for ``task_key`` (config hash -> Sharpe); one already recorded
        keeps its first score, so recording the same trials again changes nothing."""
        if not trials:
            return
        table = self.trials_table
        rows = [
            {"task_key": task_key, "config_hash": key, "sharpe": float(value)}
            for key, value in trials.items()
            if value == value  # NaN scores are not trials anyone could have picked
        ]

        def run() -> None:
            with self._engine.begin() as conn:
                for start in range(0, len(rows), 1000):
                    stmt = pg_insert(table).values(rows[start : start + 1000])
                    conn.execute(
                        stmt.on_conflict_do_nothing(index_elements=[table.c.task_key, table.c.config_hash])
                    )

        self._call(run)

    def trial_stats(self, task_key: str) -> tuple[int, float | None]:
        """How many distinct configurations were ever scored for the task, and the variance of their
        Sharpe ratios (None below two trials)."""
        table = self.trials_table

        def run() -> tuple[int, float | None]:
            with self._engine.connect() as conn:
                count, variance = conn.execute(
                    sa.select(sa.func.count(), sa.func.var_samp(table.c.sharpe)).where(
                        table.c.task_key == task_key
                    )
                ).one()
            return int(count), None if variance is None else float(variance)

        return self._call(run)

    def knowledge_tasks(
        self, *, now: datetime | None = None, retention_days: int | None = None, market: str | None = None
    ) -> list["TaskRecord"]:
        """Tasks finished within ``retention_days`` before ``now`` (all when None), oldest first; a
        task finished after ``now`` never counts (a replayed day must not see the future)."""
        from rof_pipelines.core.knowledge import TaskRecord

        table = self.knowledge_table
        query = sa.select(table).order_by(table.c.finished_at, table.c.task_id)
        if now is not None:
            query = query.where(table.c.finished_at <= now)
            if retention_days is not None:
                query = query.where(table.c.finished_at >= now - timedelta(days=retention_days))
        if market is not None:
            query = query.where(table.c.market == _market_key(market))

        def run() -> list[TaskRecord]:
            with self._engine.connect() as conn:
                rows = list(conn.execute(query).mappings())
            return [
                TaskRecord.from_dict(
                    {**{k: v for k, v in row.items() if k != "created_at"}, "finished_at": row["finished_at"]}
                )
                for row in rows
            ]

        return self._call(run)

    def prune_knowledge(self, retention_days: int, now: datetime | None = None) -> int:
        """Delete tasks finished more than ``retention_days`` before ``now``; returns how many went."""
        return self._prune_older_than(self.knowledge_table.c.finished_at, retention_days, now)


def ensure_migrated(store: StateStore, settings: "Settings") -> str | None:
    """At start: upgrade to head when ``state_storage.auto_migrate`` is on; otherwise only warn when the
    database lags the code. Returns the revision the database is at."""
    if settings.state_storage.auto_migrate:
        return store.upgrade("head")
    current, head = store.current_revision(), store.head_revision()
    if current != head:
        log.warning(
            "%s: state store schema is at revision %s but the code expects %s, and auto_migrate is off; "
            "run `rof db upgrade`",
            store.describe(),
            current,
            head,
        )
    return current
