"""Backups of the state store: one consistent snapshot of every table, restorable into an empty schema.

A backup is a tar archive holding ``manifest.json`` (schema, alembic revision, tables, row counts,
sha256 of each table's data) and one PostgreSQL binary ``COPY`` stream per table. All tables are read
in one REPEATABLE READ, READ ONLY transaction, so the snapshot is consistent across tables, and
binary COPY round-trips every type (jsonb, bytea, timestamptz, double precision) exactly.

The destination is a directory on a durable filesystem (local, s3, gcs, azure, sftp, hdfs; see
``DURABLE_BACKUP_PROTOCOLS``); in-memory, caching and read-only filesystems are refused. Next to each
archive goes ``<archive>.manifest.json`` with the archive's sha256: retention deletes only archives
that such a manifest lists and whose bytes still match it, so files of the same name pattern that
this project did not write are never deleted. Restoring migrates the empty target schema to the
backup's revision first, then loads the rows, so a backup can be restored into a new schema or a new
database.
"""

import hashlib
import io
import json
import logging
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import fsspec
import sqlalchemy as sa
from psycopg import sql

from rof_pipelines.adapters.state_store import StateStore
from rof_pipelines.errors import DataValidationError, PermanentError
from rof_pipelines.settings import durable_backup_location

FORMAT_VERSION = 1
SKIPPED_TABLES = {"alembic_version"}  # recreated by the migrations on restore
PREFIX = "state-backup-"
MANIFEST_SUFFIX = ".manifest.json"  # <archive>.manifest.json: this project wrote <archive>
WRITTEN_BY = "rof_pipelines state backup"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackupResult:
    url: str
    schema: str
    revision: str | None
    tables: dict[str, int]
    bytes: int


def _tables(store: StateStore, connection: sa.Connection) -> list[str]:
    inspector = sa.inspect(connection)
    return sorted(
        name for name in inspector.get_table_names(schema=store.schema) if name not in SKIPPED_TABLES
    )


def _qualified(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def snapshot(store: StateStore) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Every table of the store's schema as binary COPY data, read in one consistent transaction."""

    def run() -> tuple[dict[str, Any], dict[str, bytes]]:
        with store.engine.connect() as connection:
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                connection.execute(sa.text("SET TRANSACTION READ ONLY"))
                tables = _tables(store, connection)
                revision = connection.execute(
                    sa.text(f"SELECT version_num FROM {_quoted(connection, store.schema)}.alembic_version")
                ).scalar()
                raw = connection.connection.driver_connection
                data: dict[str, bytes] = {}
                counts: dict[str, int] = {}
                with raw.cursor() as cursor:
                    for table in tables:
                        buffer = io.BytesIO()
                        query = sql.SQL("COPY {} TO STDOUT (FORMAT binary)").format(
                            _qualified(store.schema, table)
                        )
                        with cursor.copy(query) as copy:
                            for block in copy:
                                buffer.write(block)
                        data[table] = buffer.getvalue()
                        cursor.execute(
                            sql.SQL("SELECT count(*) FROM {}").format(_qualified(store.schema, table))
                        )
                        counts[table] = int(cursor.fetchone()[0])
        manifest = {
            "format": FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(),
            "schema": store.schema,
            "revision": revision,
            "tables": {
                name: {"rows": counts[name], "sha256": hashlib.sha256(blob).hexdigest()}
                for name, blob in data.items()
            },
        }
        return manifest, data

    return store.guarded_call(run, operation="backup")


def _quoted(connection: sa.Connection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote(name)


def durable_directory(directory_url: str) -> str:
    """``directory_url`` if it is on a durable filesystem, else PermanentError (the URL is not echoed)."""
    try:
        return durable_backup_location(directory_url)
    except ValueError as exc:
        raise PermanentError(f"backup destination refused: {exc}") from None


def write_backup(store: StateStore, directory_url: str) -> BackupResult:
    """Snapshot the store and write one archive, and the manifest that lets retention prune it, under
    ``directory_url`` (a path or a URL of a durable filesystem)."""
    durable_directory(directory_url)
    manifest, data = snapshot(store)
    created = datetime.now(UTC)
    name = f"{PREFIX}{store.schema}-{created.strftime('%Y%m%dT%H%M%S%fZ')}.tar"
    url = f"{directory_url.rstrip('/')}/{name}"
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        _add(tar, "manifest.json", json.dumps(manifest, indent=2).encode())
        for table, blob in data.items():
            _add(tar, f"tables/{table}.copy", blob)
    payload = archive.getvalue()
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(fs._parent(path), exist_ok=True)
    _write_whole(fs, path, payload)
    # The archive first: a crash before its manifest leaves a backup that is kept, never one deleted.
    owned = {
        "written_by": WRITTEN_BY,
        "archive": name,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "bytes": len(payload),
        "created_at": created.isoformat(),
        "schema": store.schema,
    }
    _write_whole(fs, path + MANIFEST_SUFFIX, json.dumps(owned, indent=2).encode())
    return BackupResult(
        url,
        store.schema,
        manifest["revision"],
        {t: v["rows"] for t, v in manifest["tables"].items()},
        len(payload),
    )


def _write_whole(fs: Any, path: str, payload: bytes) -> None:
    """A crash leaves a ``.partial``, never a truncated file under the final name."""
    partial = f"{path}.partial"
    with fs.open(partial, "wb") as handle:
        handle.write(payload)
    fs.mv(partial, path)


def _add(tar: tarfile.TarFile, name: str, blob: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    info.mtime = int(datetime.now(UTC).timestamp())
    tar.addfile(info, io.BytesIO(blob))


def read_backup(url: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and table streams of an archive, checked against the manifest's checksums."""
    try:
        with fsspec.open(url, "rb") as handle:
            payload = handle.read()
    except FileNotFoundError as exc:
        raise DataValidationError(f"backup not found: {url}") from exc
    try:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r") as tar:
            manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
            data = {
                name: tar.extractfile(f"tables/{name}.copy").read()  # type: ignore[union-attr]
                for name in manifest["tables"]
            }
    except (tarfile.TarError, KeyError, json.JSONDecodeError, AttributeError) as exc:
        raise DataValidationError(f"{url}: not a state-store backup ({exc})") from exc
    if manifest.get("format") != FORMAT_VERSION:
        raise DataValidationError(f"{url}: backup format {manifest.get('format')} is not {FORMAT_VERSION}")
    for name, blob in data.items():
        if hashlib.sha256(blob).hexdigest() != manifest["tables"][name]["sha256"]:
            raise DataValidationError(f"{url}: table {name} is corrupt (checksum mismatch)")
    return manifest, data


def restore_backup(store: StateStore, url: str) -> dict[str, int]:
    """Load a backup into the store's schema, which must hold no rows; returns rows per table."""
    manifest, data = read_backup(url)
    store.upgrade(manifest["revision"] or "base")

    def run() -> dict[str, int]:
        with store.engine.connect() as connection, connection.begin():
            present = _tables(store, connection)
            missing = sorted(set(data) - set(present))
            if missing:
                raise PermanentError(f"restore: the target schema has no table(s) {', '.join(missing)}")
            raw = connection.connection.driver_connection
            with raw.cursor() as cursor:
                for table in present:
                    cursor.execute(
                        sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(_qualified(store.schema, table))
                    )
                    if cursor.fetchone()[0]:
                        raise PermanentError(
                            f"restore: {store.schema}.{table} is not empty; restore only into an empty schema"
                        )
                for table, blob in data.items():
                    query = sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(
                        _qualified(store.schema, table)
                    )
                    with cursor.copy(query) as copy:
                        copy.write(blob)
                _reset_sequences(cursor, store.schema, list(data))
        return {name: info["rows"] for name, info in manifest["tables"].items()}

    return store.guarded_call(run, operation="restore")


def _reset_sequences(cursor: Any, schema: str, tables: list[str]) -> None:
    """Serial/identity columns continue after the restored rows instead of colliding with them."""
    cursor.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND (column_default LIKE 'nextval(%%' OR is_identity = 'YES')",
        (schema,),
    )
    for table, column in cursor.fetchall():
        if table not in tables:
            continue
        qualified = f"{sql.Identifier(schema).as_string(cursor)}.{sql.Identifier(table).as_string(cursor)}"
        cursor.execute(
            sql.SQL(
                "SELECT setval(pg_get_serial_sequence(%s, %s), GREATEST((SELECT max({col}) FROM {tbl}), 1))"
            ).format(col=sql.Identifier(column), tbl=_qualified(schema, table)),
            (qualified, column),
        )


def prune_backups(directory_url: str, retention_days: int, now: datetime | None = None) -> list[str]:
    """Delete the backups this project wrote that are older than ``retention_days``; returns the
    archives removed.

    Only archives named by a ``<archive>.manifest.json`` next to them are candidates, aged by the
    manifest's ``created_at``, and only when their bytes still match its sha256. A file that merely
    matches the name pattern, or was replaced since, is left alone.
    """
    durable_directory(directory_url)
    now = now or datetime.now(UTC)
    fs, path = fsspec.core.url_to_fs(directory_url)
    if not fs.exists(path):
        return []
    removed = []
    for entry in sorted(fs.ls(path, detail=False)):
        manifest_name = entry.rstrip("/").rsplit("/", 1)[-1]
        if not (manifest_name.startswith(PREFIX) and manifest_name.endswith(".tar" + MANIFEST_SUFFIX)):
            continue
        archive = manifest_name.removesuffix(MANIFEST_SUFFIX)
        owned = _owned(fs, entry, archive)
        if owned is None or now - owned["created_at"] <= timedelta(days=retention_days):
            continue
        archive_path = f"{path.rstrip('/')}/{archive}"
        if fs.exists(archive_path):
            if _sha256(fs, archive_path) != owned["sha256"]:
                log.warning("backup %s differs from its manifest; not deleting it", archive)
                continue
            fs.rm(archive_path)
            removed.append(f"{directory_url.rstrip('/')}/{archive}")
        fs.rm(entry)
    return removed


def _owned(fs: Any, manifest_path: str, archive: str) -> dict[str, Any] | None:
    """The manifest's record of ``archive``, or None when it is not one this project wrote for it."""
    try:
        with fs.open(manifest_path, "rb") as handle:
            owned = json.loads(handle.read())
        if owned["written_by"] != WRITTEN_BY or owned["archive"] != archive:
            return None
        created = datetime.fromisoformat(owned["created_at"])
        if created.tzinfo is None or not isinstance(owned["sha256"], str):
            return None
        return {**owned, "created_at": created}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _sha256(fs: Any, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
