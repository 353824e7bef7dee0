"""The state store against a real PostgreSQL: migrations, schema placement, optimistic locking,
unavailability and password hygiene."""

import logging
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from psycopg import sql

from rof_pipelines.adapters.state_store import (
    SQLALCHEMY_ERRORS,
    ActiveConfig,
    StateStore,
    build_metadata,
    ensure_migrated,
)
from rof_pipelines.errors import (
    CircuitOpenError,
    ConfigError,
    ConflictError,
    DataValidationError,
    PermanentError,
    StoreUnavailableError,
)
from rof_pipelines.settings import (
    PROJECT_ROOT,
    CircuitBreakerConfig,
    Settings,
    StateStorageConfig,
    load_settings,
)

PASSWORD = "s3cr3t-pw"
HEAD = "0010"
TABLES = {
    "alembic_version",
    "worker_progress",
    "alert_states",
    "alert_deliveries",
    "active_strategy_configs",
    "message_inbox",
    "ga_checkpoints",
    "config_versions",
    "ab_experiments",
    "ab_arms",
    "knowledge_tasks",
    "experiment_trials",
    "ga_island_epochs",
    "quote_gaps",
}
MARKET = "binance:TONUSDT"

pytestmark = pytest.mark.postgres


def _settings(
    make_settings, pg_database: dict[str, Any], schema: str = "rof_state", **extra: Any
) -> Settings:
    state = {
        "db_host": pg_database["db_host"],
        "db_user": pg_database["db_user"],
        "db_name": pg_database["db_name"],
        "db_password": "",
        "schema": schema,
        **extra,
    }
    return make_settings({"state_storage": state})


def _tables_by_schema(pg_database: dict[str, Any]) -> dict[str, set[str]]:
    kwargs = {k: pg_database[k] for k in ("host", "port", "user", "dbname")}
    with psycopg.connect(**kwargs) as conn:
        rows = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    found: dict[str, set[str]] = {}
    for schema, name in rows:
        found.setdefault(schema, set()).add(name)
    return found


def _version_rows(pg_database: dict[str, Any], schema: str) -> list[tuple[str]]:
    kwargs = {k: pg_database[k] for k in ("host", "port", "user", "dbname")}
    with psycopg.connect(**kwargs) as conn:
        query = sql.SQL("SELECT version_num FROM {}.alembic_version").format(sql.Identifier(schema))
        return conn.execute(query).fetchall()


def _store(settings: Settings) -> StateStore:
    return StateStore(settings.state_storage, settings.system_setup.circuit_breaker)


@pytest.fixture
def store(pg_settings: Settings) -> Iterator[StateStore]:
    """A migrated store in schema rof_state of a fresh database."""
    with _store(pg_settings) as migrated:
        migrated.upgrade()
        yield migrated


def _messages(exc: BaseException) -> list[str]:
    """str and repr of an exception and of everything it was raised from."""
    seen: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 20:
        seen += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return seen


# --- migrations -----------------------------------------------------------------------------------


def test_upgrade_from_empty_database_creates_tables_in_configured_schema(pg_settings, pg_database):
    with _store(pg_settings) as store:
        assert store.current_revision() is None
        assert _tables_by_schema(pg_database) == {}
        head = store.head_revision()
        assert head == HEAD
        assert store.upgrade() == head
        assert store.current_revision() == head
    tables = _tables_by_schema(pg_database)
    assert tables == {"rof_state": TABLES}, "nothing may land in public"
    assert _version_rows(pg_database, "rof_state") == [(head,)]


def test_downgrade_to_base_then_upgrade_again(store, pg_database):
    assert store.downgrade("base") is None
    assert _tables_by_schema(pg_database) == {"rof_state": {"alembic_version"}}
    assert _version_rows(pg_database, "rof_state") == []
    assert store.current_revision() is None

    assert store.upgrade() == HEAD
    assert store.upgrade() == HEAD, "a second upgrade is a no-op"
    assert _tables_by_schema(pg_database) == {"rof_state": TABLES}
    assert store.progress.record("t", MARKET, 0, 10, None, None, "pending", {}) == 1


def test_code_tables_match_migrations(store):
    """build_metadata (what StateStore queries) and the migrations at head describe the same tables."""

    def include_name(name, type_, parent_names):
        return name == store.schema if type_ == "schema" else True

    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_schemas": True,
                "include_name": include_name,
                "version_table_schema": store.schema,
                "compare_type": True,
            },
        )
        assert compare_metadata(context, build_metadata(store.schema)) == []


def test_odd_but_valid_schema_name_is_quoted(make_settings, pg_database):
    settings = _settings(make_settings, pg_database, schema="Rof_State2")
    with _store(settings) as store:
        store.upgrade()
        store.configs.set_active(MARKET, {"rsi": 14}, "default")
        assert store.configs.get_active(MARKET).params == {"rsi": 14}
        assert _tables_by_schema(pg_database) == {"Rof_State2": TABLES}, "case kept, not folded"
        store.downgrade("base")
    assert _tables_by_schema(pg_database) == {"Rof_State2": {"alembic_version"}}


def test_reserved_word_schema_name_works(make_settings, pg_database):
    settings = _settings(make_settings, pg_database, schema="select")
    with _store(settings) as store:
        store.upgrade()
        assert store.configs.list_active() == []
    assert _tables_by_schema(pg_database) == {"select": TABLES}


@pytest.mark.parametrize("bad", ["x;drop table y", "rof-state", "1abc", 'a"b', ""])
def test_invalid_schema_name_is_refused_by_settings(bad):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"STATE_STORAGE_SCHEMA": bad})
    message = str(info.value)
    assert "state_storage.schema" in message
    assert "STATE_STORAGE_SCHEMA" in message


def test_missing_migrations_directory_is_a_config_error(make_settings, pg_database, tmp_path):
    settings = _settings(make_settings, pg_database, migrations_path=str(tmp_path / "nowhere"))
    with _store(settings) as store, pytest.raises(ConfigError, match=r"state_storage\.migrations_path"):
        store.upgrade()


def test_unknown_revision_is_permanent(store):
    with pytest.raises(PermanentError, match="9999"):
        store.upgrade("9999")
    assert store.current_revision() == HEAD


def test_ensure_migrated_follows_auto_migrate(make_settings, pg_database, caplog):
    manual = _settings(make_settings, pg_database, auto_migrate=False)
    with _store(manual) as store, caplog.at_level(logging.WARNING):
        assert ensure_migrated(store, manual) is None
        assert "rof db upgrade" in caplog.text
        assert _tables_by_schema(pg_database) == {}

    auto = _settings(make_settings, pg_database, auto_migrate=True)
    with _store(auto) as store:
        assert ensure_migrated(store, auto) == HEAD
        assert ensure_migrated(store, auto) == HEAD
    assert _tables_by_schema(pg_database) == {"rof_state": TABLES}


def _upgrade_in_process(config: dict[str, Any], barrier: Any, results: Any) -> None:
    """Child process body: one 'service' starting with auto_migrate."""
    store = StateStore(StateStorageConfig.model_validate(config))
    barrier.wait(timeout=60)
    try:
        results.put(store.upgrade())
    except Exception as exc:
        results.put(f"{type(exc).__name__}: {exc}")
    finally:
        store.dispose()


def test_concurrent_upgrades_from_two_processes_do_not_race(make_settings, pg_database):
    """Two services starting at once with auto_migrate: the advisory lock in env.py serialises them
    (within one process a thread lock already does; this needs separate processes)."""
    settings = _settings(make_settings, pg_database)
    config = settings.state_storage.model_dump(by_alias=True)
    config["db_password"] = settings.state_storage.db_password.get_secret_value()
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(2), spawn.Queue()
    children = [spawn.Process(target=_upgrade_in_process, args=(config, barrier, results)) for _ in range(2)]
    for child in children:
        child.start()
    outcome = sorted(str(results.get(timeout=120)) for _ in children)
    for child in children:
        child.join(timeout=30)
    assert outcome == [HEAD, HEAD]
    assert _tables_by_schema(pg_database) == {"rof_state": TABLES}


def test_plain_alembic_cli_reads_settings(pg_database, tmp_path):
    """env.py without programmatic attributes falls back to load_settings (config + environment)."""
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")  # defaults; the environment below names the database
    env = {
        **os.environ,
        "ROF_CONFIG": str(empty),
        "STATE_STORAGE_DB_HOST": pg_database["db_host"],
        "STATE_STORAGE_DB_USER": pg_database["db_user"],
        "STATE_STORAGE_DB_NAME": pg_database["db_name"],
        "STATE_STORAGE_DB_PASSWORD": "",
        "STATE_STORAGE_SCHEMA": "cli_state",
    }
    ini = str(PROJECT_ROOT / "alembic.ini")
    for args in (["upgrade", "head"], ["check"]):
        done = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", ini, *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    assert _tables_by_schema(pg_database) == {"cli_state": TABLES}


# --- worker progress ------------------------------------------------------------------------------


def test_record_and_get_progress(store):
    assert store.progress.get("task-1") is None
    v1 = store.progress.record(
        "task-1", "Binance:tonusdt", 3, 20, 1.25, 120.0, "running", {"population": 50}, worker_id="w1"
    )
    assert v1 == 1
    got = store.progress.get("task-1")
    assert (got.market, got.generation, got.total_generations, got.status) == (MARKET, 3, 20, "running")
    assert (got.best_fitness, got.eta_seconds, got.details, got.worker_id) == (
        1.25,
        120.0,
        {"population": 50},
        "w1",
    )
    assert got.version == 1 and got.started_at <= got.updated_at

    # Without expected_version: the worker's own heartbeat overwrites; omitted identity fields are kept.
    assert store.progress.record("task-1", MARKET, 4, 20, 1.5, 90.0, "running", None) == 2
    got = store.progress.get("task-1")
    assert (got.generation, got.details, got.worker_id, got.version) == (4, {}, "w1", 2)
    assert [p.task_id for p in store.progress.find(market=MARKET, status="running")] == ["task-1"]
    assert store.progress.find(status="completed") == []


def test_progress_expected_version(store):
    with pytest.raises(ConflictError, match="absent"):
        store.progress.record("t", MARKET, 0, 10, None, None, "pending", {}, expected_version=1)
    assert store.progress.record("t", MARKET, 0, 10, None, None, "pending", {}, expected_version=0) == 1
    with pytest.raises(ConflictError) as info:  # claiming a task twice
        store.progress.record("t", MARKET, 0, 10, None, None, "running", {}, expected_version=0)
    assert "worker_progress" in str(info.value) and "'t'" in str(info.value)
    assert store.progress.record("t", MARKET, 1, 10, 0.1, 5.0, "running", {}, expected_version=1) == 2
    with pytest.raises(ConflictError, match=r"expected version 1, found version 2"):
        store.progress.record("t", MARKET, 9, 10, 0.9, 0.0, "failed", {"who": "stale"}, expected_version=1)
    got = store.progress.get("t")
    assert (got.generation, got.status, got.version) == (1, "running", 2)


def test_progress_input_is_validated(store):
    with pytest.raises(DataValidationError, match="status"):
        store.progress.record("t", MARKET, 0, 10, None, None, "bogus", {})
    with pytest.raises(DataValidationError, match="market"):
        store.progress.record("t", "TONUSDT", 0, 10, None, None, "running", {})
    with pytest.raises(DataValidationError, match="details"):
        store.progress.record("t", MARKET, 0, 10, None, None, "running", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(DataValidationError, match="expected_version"):
        store.progress.record("t", MARKET, 0, 10, None, None, "running", {}, expected_version=-1)
    with pytest.raises(PermanentError):  # jsonb has no NaN
        store.progress.record("t", MARKET, 0, 10, None, None, "running", {"x": float("nan")})
    with pytest.raises(PermanentError, match="ck_worker_progress_generations"):
        store.progress.record("t", MARKET, -1, 10, None, None, "running", {})
    assert store.progress.get("t") is None


# --- active configs and optimistic locking --------------------------------------------------------


def test_active_config_create_read_replace(store):
    assert store.configs.get_active(MARKET) is None
    created = store.configs.set_active("binance:tonusdt", {"rsi": 14}, "default", updated_by="test")
    assert isinstance(created, ActiveConfig)
    assert (created.market, created.params, created.source, created.version) == (
        MARKET,
        {"rsi": 14},
        "default",
        1,
    )
    assert created.updated_by == "test" and created.experiment_id is None
    assert store.configs.get_active(MARKET) == created

    with pytest.raises(ConflictError, match=r"exists|found version 1"):
        store.configs.set_active(MARKET, {"rsi": 7}, "ga")

    replaced = store.configs.set_active(MARKET, {"rsi": 21}, "ab_test", "exp-1", expected_version=1)
    assert (replaced.params, replaced.source, replaced.experiment_id, replaced.version) == (
        {"rsi": 21},
        "ab_test",
        "exp-1",
        2,
    )
    assert replaced.updated_at >= created.updated_at
    store.configs.set_active("binance:BTCUSDT", {"rsi": 10}, "ga")
    assert [c.market for c in store.configs.list_active()] == ["binance:BTCUSDT", MARKET]

    with pytest.raises(DataValidationError, match="source"):
        store.configs.set_active(MARKET, {"rsi": 1}, "guess", expected_version=2)
    with pytest.raises(DataValidationError, match="params"):
        store.configs.set_active(MARKET, "rsi=1", "ga", expected_version=2)  # type: ignore[arg-type]
    with pytest.raises(ConflictError, match="absent"):
        store.configs.set_active("binance:ETHUSDT", {"rsi": 1}, "ga", expected_version=3)


def test_two_writers_sequentially_one_wins(store):
    store.configs.set_active(MARKET, {"rsi": 14}, "default")
    read_a = store.configs.get_active(MARKET)
    read_b = store.configs.get_active(MARKET)
    assert read_a.version == read_b.version == 1

    store.configs.set_active(MARKET, {"rsi": 10}, "ga", "exp-a", expected_version=read_a.version)
    with pytest.raises(ConflictError) as info:
        store.configs.set_active(MARKET, {"rsi": 30}, "ab_test", "exp-b", expected_version=read_b.version)
    message = str(info.value)
    assert "rof_state.active_strategy_configs" in message and MARKET in message
    assert "expected version 1" in message and "found version 2" in message

    final = store.configs.get_active(MARKET)
    assert (final.params, final.experiment_id, final.version) == ({"rsi": 10}, "exp-a", 2)


def _race(**writers: Callable[[], Any]) -> dict[str, Any]:
    """Run the writers in threads released together; each name maps to its result or exception."""
    barrier = threading.Barrier(len(writers))
    outcome: dict[str, Any] = {}

    def run(name: str, write: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            outcome[name] = write()
        except Exception as exc:
            outcome[name] = exc

    threads = [threading.Thread(target=run, args=item) for item in writers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert set(outcome) == set(writers), "a writer hung"
    return outcome


def test_two_writers_in_threads_exactly_one_wins(store):
    store.configs.set_active(MARKET, {"writer": "seed"}, "default")
    for _ in range(5):
        seen = store.configs.get_active(MARKET).version  # both writers read this version

        def writer(name: str, version: int = seen) -> Callable[[], ActiveConfig]:
            return lambda: store.configs.set_active(
                MARKET, {"writer": name}, "ga", name, expected_version=version
            )

        outcome = _race(a=writer("a"), b=writer("b"))
        winners = [name for name, result in outcome.items() if isinstance(result, ActiveConfig)]
        losers = [name for name, result in outcome.items() if isinstance(result, ConflictError)]
        assert len(winners) == 1 and len(losers) == 1, outcome
        final = store.configs.get_active(MARKET)
        assert final.version == seen + 1
        assert final.params == {"writer": winners[0]} and final.experiment_id == winners[0]


def test_progress_writers_in_threads_exactly_one_wins(store):
    assert store.progress.record("t", MARKET, 0, 10, None, None, "running", {}) == 1

    def writer(name: str, generation: int) -> Callable[[], int]:
        return lambda: store.progress.record(
            "t", MARKET, generation, 10, None, None, "running", {"writer": name}, expected_version=1
        )

    outcome = _race(a=writer("a", 1), b=writer("b", 2))
    winners = [name for name, result in outcome.items() if result == 2]
    assert len(winners) == 1 and sum(isinstance(r, ConflictError) for r in outcome.values()) == 1, outcome
    final = store.progress.get("t")
    assert final.details == {"writer": winners[0]} and final.version == 2


def test_conflicts_do_not_open_the_circuit(pg_settings):
    with StateStore(pg_settings.state_storage, CircuitBreakerConfig(fail_max=2)) as store:
        store.upgrade()
        store.configs.set_active(MARKET, {"rsi": 14}, "default")
        for _ in range(5):
            with pytest.raises(ConflictError):
                store.configs.set_active(MARKET, {"rsi": 1}, "ga")
        assert store.configs.get_active(MARKET).version == 1


# --- unavailability and secrets -------------------------------------------------------------------


def test_unreachable_database_then_circuit_opens():
    config = StateStorageConfig(
        db_user="states", db_password=PASSWORD, db_host="127.0.0.1:1", db_name="ml_states", schema="rof_state"
    )
    breaker = CircuitBreakerConfig(fail_max=3, reset_timeout="60s")
    errors: list[BaseException] = []
    with StateStore(config, breaker, connect_timeout=2) as store:
        for call in (store.current_revision, lambda: store.configs.get_active(MARKET)):
            with pytest.raises(StoreUnavailableError) as info:
                call()
            assert type(info.value) is StoreUnavailableError
            assert "127.0.0.1:1" in str(info.value)
            errors.append(info.value)
        with pytest.raises(CircuitOpenError) as info:  # the fail_max-th failure trips the breaker
            store.upgrade()
        errors.append(info.value)
        started = time.monotonic()
        with pytest.raises(CircuitOpenError) as info:
            store.progress.record("t", MARKET, 0, 1, None, None, "running", {})
        assert time.monotonic() - started < 0.5, "an open circuit fails fast"
        errors.append(info.value)

        assert PASSWORD not in store.describe() and PASSWORD not in repr(store)
    for error in errors:
        for text in _messages(error):
            assert PASSWORD not in text


def test_password_never_shown_on_a_live_database(make_settings, pg_database):
    # Trust authentication ignores the password, so the store works while holding a secret.
    settings = _settings(make_settings, pg_database, db_password=PASSWORD)
    with _store(settings) as store:
        with pytest.raises(PermanentError) as info:  # before migrating: relation does not exist
            store.configs.get_active(MARKET)
        store.upgrade()
        store.configs.set_active(MARKET, {"rsi": 14}, "default")
        with pytest.raises(ConflictError) as conflict:
            store.configs.set_active(MARKET, {"rsi": 15}, "default")
        shown = [
            store.describe(),
            repr(store),
            repr(store.engine),
            repr(settings.state_storage),
            str(settings.redacted()),
            *_messages(info.value),
            *_messages(conflict.value),
        ]
    assert "rof_state" in store.describe()
    for text in shown:
        assert PASSWORD not in text


def test_translate_scrubs_the_password_from_driver_messages():
    """Defence in depth: should a driver ever echo the password, the project's error does not."""
    config = StateStorageConfig(db_password=PASSWORD, db_host="127.0.0.1:1", schema="rof_state")
    with StateStore(config) as store:
        error = store.translate_error(RuntimeError(f"could not connect with password {PASSWORD}"))
    assert PASSWORD not in str(error) and "***" in str(error)
    assert isinstance(error, PermanentError)


def test_sqlalchemy_error_table_decides_what_is_transient():
    """One table (SQLALCHEMY_ERRORS) says which driver failures are worth a retry."""
    from sqlalchemy import exc as sa_exc

    cause = Exception("boom")
    cases = {
        sa_exc.OperationalError("SELECT 1", {}, cause): StoreUnavailableError,
        sa_exc.InterfaceError("SELECT 1", {}, cause): StoreUnavailableError,
        sa_exc.TimeoutError("pool exhausted"): StoreUnavailableError,
        sa_exc.DBAPIError("SELECT 1", {}, cause, connection_invalidated=True): StoreUnavailableError,
        ConnectionResetError("reset"): StoreUnavailableError,
        sa_exc.IntegrityError("INSERT", {}, cause): PermanentError,
        sa_exc.ProgrammingError("SELECT", {}, cause): PermanentError,
        RuntimeError("a bug"): PermanentError,
    }
    for exc, expected in cases.items():
        error = SQLALCHEMY_ERRORS.translate(
            exc, service="state_store", label="state_store (x)", operation="read"
        )
        assert type(error) is expected, exc
        assert (error.service, error.operation) == ("state_store", "read")
        assert str(error).startswith(f"state_store (x): {type(exc).__name__}: ")
    assert SQLALCHEMY_ERRORS.table()[-1] == ("anything else", "PermanentError", "")
