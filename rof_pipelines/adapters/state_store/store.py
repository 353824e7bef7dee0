"""The PostgreSQL state store: one engine, one circuit breaker, one error table, and a repository per
concern on top (``store.progress``, ``store.configs``, ``store.checkpoints``, ``store.experiments``,
``store.trials``, ``store.knowledge``, ``store.alerts``, ``store.islands``, ``store.quote_gaps``).

Every database call goes through the ``state_store`` circuit breaker (:meth:`StateStore.guarded_call`,
which the inbox, the config log and the backup share); driver errors become the project's errors
through :data:`SQLALCHEMY_ERRORS`. The schema is created by the Alembic migrations in
``migrations/`` (:meth:`StateStore.upgrade`, which ``rof db upgrade`` and ``auto_migrate`` share).
"""

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from rof_pipelines.adapters.breakers import guarded_call
from rof_pipelines.adapters.state_store.alerts import SqlAlerts
from rof_pipelines.adapters.state_store.checkpoints import SqlCheckpoints
from rof_pipelines.adapters.state_store.configs import SqlActiveConfigs
from rof_pipelines.adapters.state_store.experiments import SqlExperiments
from rof_pipelines.adapters.state_store.islands import SqlIslands
from rof_pipelines.adapters.state_store.knowledge import SqlKnowledge
from rof_pipelines.adapters.state_store.progress import SqlProgress
from rof_pipelines.adapters.state_store.quote_gaps import SqlQuoteGaps
from rof_pipelines.adapters.state_store.tables import build_metadata
from rof_pipelines.adapters.state_store.trials import SqlTrials
from rof_pipelines.adapters.state_store.values import SERVICE, json_dumps
from rof_pipelines.errors import (
    ConfigError,
    ErrorMap,
    ErrorRule,
    PermanentError,
    StoreUnavailableError,
)
from rof_pipelines.settings import CircuitBreakerConfig, StateStorageConfig

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

    from rof_pipelines.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT_S = 5.0

# Alembic's ``context``/``op`` are process globals: one migration command at a time per process.
_alembic_lock = threading.Lock()

T = TypeVar("T")


def _connection_invalidated(exc: BaseException) -> bool:
    """a DBAPI error that invalidated its connection"""
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


# SQLAlchemy (and alembic) exceptions -> the project's errors. Anything not listed (IntegrityError,
# ProgrammingError, DataError, alembic's CommandError for an unknown revision, bugs) is permanent.
SQLALCHEMY_ERRORS = ErrorMap(
    "sqlalchemy",
    [
        ErrorRule(_connection_invalidated, StoreUnavailableError),
        ErrorRule(
            (
                sa_exc.OperationalError,  # connection refused/lost, statement timeout, deadlock
                sa_exc.InterfaceError,
                sa_exc.TimeoutError,  # pool exhausted
                sa_exc.DisconnectionError,
                OSError,
                TimeoutError,
            ),
            StoreUnavailableError,
        ),
    ],
    default=PermanentError,
)


class StateStore:
    """The state store on PostgreSQL, plus its migrations.

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
            json_serializer=json_dumps,
        )
        self.translate_error = SQLALCHEMY_ERRORS.translator(
            service=SERVICE,
            label=lambda: f"{SERVICE} ({self.describe()})",
            secrets=(config.db_password.get_secret_value(),),
        )
        self.metadata = build_metadata(self.schema)
        self.progress = SqlProgress(self)
        self.configs = SqlActiveConfigs(self)
        self.checkpoints = SqlCheckpoints(self)
        self.experiments = SqlExperiments(self)
        self.trials = SqlTrials(self)
        self.knowledge = SqlKnowledge(self)
        self.alerts = SqlAlerts(self)
        self.islands = SqlIslands(self)
        self.quote_gaps = SqlQuoteGaps(self)

    # -- plumbing ----------------------------------------------------------------------------------

    @property
    def engine(self) -> sa.Engine:
        """The pooled engine, for adapters that share the state store's database (inbox, config log)."""
        return self._engine

    def table(self, name: str) -> sa.Table:
        """One of :func:`build_metadata`'s tables, in this store's schema."""
        return self.metadata.tables[f"{self.schema}.{name}"]

    def guarded_call(self, fn: Callable[..., T], *args: Any, operation: str) -> T:
        """``fn(*args)`` through the state store's breaker, driver errors translated and tagged with
        ``operation`` (``read``, ``write``, ``delete``, ``migrate``, ...)."""
        return guarded_call(SERVICE, self._breaker, self.translate_error, fn, *args, operation=operation)

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

    def ping(self) -> None:
        """Round-trip to the database (health checks)."""

        def run() -> None:
            with self._engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))

        self.guarded_call(run, operation="ping")

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

        self.guarded_call(run, operation="migrate")

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

        return self.guarded_call(run, operation="read")

    def head_revision(self) -> str | None:
        """The newest revision the code ships (no database access)."""
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self.alembic_config()).get_current_head()


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
