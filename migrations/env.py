"""Alembic environment of the state store.

Where the database and schema come from (this file never reads ``os.environ`` itself):

* ``config.attributes`` - set by :class:`rof_pipelines.adapters.state_store.StateStore`, so that
  ``rof db upgrade`` and ``auto_migrate`` at start share one code path: ``"connection"`` (a SQLAlchemy
  Connection; if it is inside a transaction the caller owns and commits it), or ``"url"``, and
  ``"schema"``;
* otherwise :func:`rof_pipelines.settings.load_settings` (config.yaml + ``STATE_STORAGE_*``), which is
  what the plain ``alembic`` CLI uses.

Every run takes a transaction-scoped advisory lock first, so two processes migrating at once (two
services starting with ``auto_migrate``) run one after the other instead of racing on CREATE TABLE;
then it creates the schema if missing and keeps ``alembic_version`` inside that schema. Migrations
read the schema with ``op.get_context().version_table_schema`` and pass it as ``schema=``.
"""

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import MetaData, create_engine, pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateSchema

from rof_pipelines.settings import validate_sql_identifier

config = context.config

# pg_advisory_xact_lock key ("rof_migr"): one migrator per database at a time.
MIGRATION_LOCK_KEY = 0x726F665F6D696772

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _target() -> tuple[Connection | None, Any, str]:
    """(connection, url, schema) from the programmatic attributes, else from the settings."""
    connection = config.attributes.get("connection")
    url = config.attributes.get("url")
    schema = config.attributes.get("schema")
    if schema is None or (connection is None and url is None):
        from rof_pipelines.settings import load_settings

        state = load_settings().state_storage
        if schema is None:
            schema = state.schema_name
        if connection is None and url is None:
            url = state.sqlalchemy_url()
    return connection, url, validate_sql_identifier(schema)


def _target_metadata(schema: str) -> MetaData:
    """The tables the code expects (head), so ``alembic revision --autogenerate`` and ``alembic check``
    compare the database against what StateStore uses."""
    from rof_pipelines.adapters.state_store import build_metadata

    return build_metadata(schema)


def _configure_kwargs(schema: str) -> dict[str, Any]:
    def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
        # Only our schema is ours: never autogenerate drops for whatever else lives in the database.
        return name == schema if type_ == "schema" else True

    return {
        "version_table_schema": schema,
        "target_metadata": _target_metadata(schema),
        "include_schemas": True,
        "include_name": include_name,
        "compare_type": True,
    }


def run_migrations_offline(url: Any, schema: str) -> None:
    """``alembic upgrade head --sql``: emit the SQL instead of running it."""
    context.configure(
        url=url, literal_binds=True, dialect_opts={"paramstyle": "named"}, **_configure_kwargs(schema)
    )
    with context.begin_transaction():
        context.execute(CreateSchema(schema, if_not_exists=True))
        context.run_migrations()


def _run_on(connection: Connection, schema: str) -> None:
    """Lock, create the schema, migrate; the surrounding transaction (already begun) commits it all."""
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    connection.execute(CreateSchema(schema, if_not_exists=True))
    context.configure(connection=connection, **_configure_kwargs(schema))
    # The connection is inside a transaction, so alembic treats it as external and does not commit.
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online(connection: Connection | None, url: Any, schema: str) -> None:
    if connection is None:
        engine = create_engine(url, poolclass=pool.NullPool)
        try:
            with engine.begin() as own:
                _run_on(own, schema)
        finally:
            engine.dispose()
    elif connection.in_transaction():
        _run_on(connection, schema)  # the caller owns the transaction and commits it
    else:
        with connection.begin():
            _run_on(connection, schema)


_connection, _url, _schema = _target()
if context.is_offline_mode():
    run_migrations_offline(_url if _url is not None else _connection.engine.url, _schema)  # type: ignore[union-attr]
else:
    run_migrations_online(_connection, _url, _schema)
