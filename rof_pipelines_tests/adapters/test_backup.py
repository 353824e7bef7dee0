"""Backup -> restore into an empty schema -> identical table contents."""

import hashlib
import json
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from rof_pipelines.adapters.backup import (
    MANIFEST_SUFFIX,
    prune_backups,
    read_backup,
    restore_backup,
    write_backup,
)
from rof_pipelines.adapters.state_store import StateStore
from rof_pipelines.errors import DataValidationError, PermanentError

pytestmark = pytest.mark.postgres


def store_for(make_settings, pg_database, schema: str) -> StateStore:
    db = {
        "db_host": pg_database["db_host"],
        "db_user": pg_database["db_user"],
        "db_name": pg_database["db_name"],
        "db_password": "",
        "schema": schema,
    }
    settings = make_settings({"state_storage": db})
    return StateStore(settings.state_storage, settings.system_setup.circuit_breaker)


def contents(store: StateStore) -> dict[str, list[tuple]]:
    out = {}
    with store.engine.connect() as connection:
        for table in sorted(sa.inspect(connection).get_table_names(schema=store.schema)):
            if table == "alembic_version":
                continue
            qualified = f'"{store.schema}"."{table}"'
            rows = connection.execute(sa.text(f"SELECT * FROM {qualified}")).fetchall()
            out[table] = sorted(tuple(str(value) for value in row) for row in rows)
    return out


@pytest.fixture
def filled(make_settings, pg_database):
    store = store_for(make_settings, pg_database, "rof_live")
    store.upgrade()
    for i in range(25):
        store.progress.record(
            f"task-{i}", "binance:TONUSDT", i, 20, 0.1 * i, 3.5, "running", {"note": "ü ✓", "i": i}
        )
    store.configs.set_active(
        "binance:TONUSDT", {"alpha": 0.1, "bins": {"rsi": [30, 70]}}, source="ga", experiment_id="e1"
    )
    store.configs.set_active("okx:BTCUSDT", {"gamma": 0.9}, source="manual")
    yield store
    store.dispose()


def test_backup_restores_identically_into_an_empty_schema(filled, make_settings, pg_database, tmp_path):
    result = write_backup(filled, str(tmp_path / "backups"))
    assert result.tables["active_strategy_configs"] == 2 and result.tables["worker_progress"] == 25
    assert set(result.tables) == set(contents(filled))  # every table of the schema, empty ones too
    assert result.revision == filled.current_revision()
    target = store_for(make_settings, pg_database, "rof_restored")
    try:
        assert restore_backup(target, result.url) == result.tables
        assert contents(target) == contents(filled)
        assert target.current_revision() == filled.current_revision()
        assert target.configs.get_active("binance:TONUSDT").params["bins"] == {"rsi": [30, 70]}
        # Restoring on top of data is refused: only into an empty schema.
        with pytest.raises(PermanentError, match="is not empty; restore only into an empty schema"):
            restore_backup(target, result.url)
    finally:
        target.dispose()


def test_corrupted_or_foreign_archives_are_refused(filled, tmp_path):
    result = write_backup(filled, str(tmp_path))
    path = result.url
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    members["tables/worker_progress.copy"] = members["tables/worker_progress.copy"][:-10] + b"0123456789"
    bad = tmp_path / "state-backup-bad.tar"
    with tarfile.open(bad, "w") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            import io

            tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(DataValidationError, match="worker_progress is corrupt"):
        read_backup(str(bad))
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar")
    with pytest.raises(DataValidationError, match="not a state-store backup"):
        read_backup(str(junk))
    with pytest.raises(DataValidationError, match="backup not found"):
        read_backup(str(tmp_path / "missing.tar"))


def test_retention_prunes_only_old_backups(filled, tmp_path):
    first = write_backup(filled, str(tmp_path))
    second = write_backup(filled, str(tmp_path))
    (tmp_path / "unrelated.txt").write_text("keep me")
    unlisted = tmp_path / "state-backup-rof_live-20000101T000000000000Z.tar"  # no manifest: not ours
    unlisted.write_bytes(b"x")
    assert prune_backups(str(tmp_path), retention_days=7) == []
    removed = prune_backups(str(tmp_path), retention_days=7, now=datetime.now(UTC) + timedelta(days=8))
    assert sorted(removed) == sorted([first.url, second.url])
    assert (tmp_path / "unrelated.txt").exists() and unlisted.exists()
    # The archives' manifests went with them.
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(["unrelated.txt", unlisted.name])


def test_each_archive_has_a_manifest_with_its_checksum(filled, tmp_path):
    result = write_backup(filled, str(tmp_path))
    owned = json.loads((tmp_path / f"{Path(result.url).name}{MANIFEST_SUFFIX}").read_text())
    assert owned["archive"] == Path(result.url).name and owned["bytes"] == result.bytes
    assert owned["sha256"] == hashlib.sha256(Path(result.url).read_bytes()).hexdigest()
    assert not list(tmp_path.glob("*.partial"))
