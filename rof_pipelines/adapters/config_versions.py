"""Hot reload of config.yaml: validate an edit, keep the last valid version, record both in the state
store. Runs read the configuration fresh (the `settings` resource), so an applied edit takes effect on
the next run without restarting anything; a refused edit leaves the last valid version in force."""

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rof_pipelines.adapters.metrics import CONFIG_RELOADS
from rof_pipelines.adapters.state_store import StateStore
from rof_pipelines.core.redaction import scrub, secret_values
from rof_pipelines.errors import ConfigError
from rof_pipelines.settings import (
    Settings,
    config_path_from_env,
    load_settings,
    parse_config_yaml,
    read_config_file,
)

log = logging.getLogger(__name__)
TABLE = "config_versions"


def last_valid_path(config_path: Path) -> Path:
    """Where the last valid version of a config file is kept (beside it, as sensitive as it is)."""
    return config_path.with_name(f"{config_path.name}.last-valid")


def load_in_force(config_path: Path | None = None) -> Settings:
    """The configuration in force: the file if it is valid, else its last valid version (with a
    warning), else the error."""
    try:
        return load_settings(config_path)
    except ConfigError as exc:
        fallback = last_valid_path(Path(config_path) if config_path else config_path_from_env())
        if not fallback.exists():
            raise
        log.warning("config.yaml is invalid, the last valid version stays in force: %s", exc)
        return load_settings(fallback)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def changed_keys(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[str]:
    """Key paths added, removed or changed between two parsed files (values are never reported)."""
    old, new = _flatten(before or {}), _flatten(after)
    return sorted(key for key in old.keys() | new.keys() if old.get(key, object()) != new.get(key, object()))


@dataclass(frozen=True)
class ReloadOutcome:
    sha256: str
    status: str  # applied | refused | unchanged
    changed_keys: list[str]
    error: str | None = None


def check_config(config_path: Path, store: StateStore | None, seen_sha256: str | None) -> ReloadOutcome:
    """One look at the file: unchanged, applied (snapshot + record) or refused (record + alert).
    ConfigError when the file cannot be read at all (gone, a directory, no permission, too large)."""
    raw = read_config_file(config_path)
    digest = hashlib.sha256(raw).hexdigest()
    if digest == seen_sha256:
        return ReloadOutcome(digest, "unchanged", [])
    snapshot = last_valid_path(config_path)
    previous = _parse(snapshot.read_bytes()) if snapshot.is_file() else None
    edited = _parse(raw)
    try:
        load_settings(config_path)
    except ConfigError as exc:
        CONFIG_RELOADS.labels("refused").inc()
        # The message is scrubbed where it is made; this is the second line of defence, with the
        # secrets of both versions, since the text is logged and stored.
        error = scrub(str(exc), *secret_values(edited), *secret_values(previous))
        log.error("ALERT config refused, the last valid version stays in force: %s", error)
        outcome = ReloadOutcome(digest, "refused", changed_keys(previous, edited or {}), error)
    else:
        CONFIG_RELOADS.labels("applied").inc()
        _keep_last_valid(config_path, snapshot, raw)
        outcome = ReloadOutcome(digest, "applied", changed_keys(previous, edited or {}))
    if store is not None:
        record_version(store, outcome, config_path)
    return outcome


def _keep_last_valid(config_path: Path, snapshot: Path, raw: bytes) -> None:
    """Replace the snapshot atomically; a failed write leaves no temp file behind."""
    temp = snapshot.with_name(f".{snapshot.name}.{os.getpid()}.tmp")
    try:
        temp.write_bytes(raw)
        os.chmod(temp, config_path.stat().st_mode & 0o777)
        os.replace(temp, snapshot)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _parse(raw: bytes) -> dict[str, Any] | None:
    """The file's data for comparing key paths, under the same size and alias limits as loading."""
    try:
        data = parse_config_yaml(raw, "config")
    except ConfigError:
        return None
    return data if isinstance(data, dict) else None


def record_version(store: StateStore, outcome: ReloadOutcome, config_path: Path) -> None:
    table = store.metadata.tables[f"{store.schema}.{TABLE}"]

    def run() -> None:
        with store.engine.begin() as connection:
            connection.execute(
                sa.insert(table).values(
                    sha256=outcome.sha256,
                    status=outcome.status,
                    source_path=str(config_path),
                    changed_keys=outcome.changed_keys,
                    error=outcome.error,
                )
            )

    store.guarded_call(run, operation="write")


def config_versions(store: StateStore, limit: int = 50) -> list[dict[str, Any]]:
    table = store.metadata.tables[f"{store.schema}.{TABLE}"]

    def run() -> list[dict[str, Any]]:
        with store.engine.connect() as connection:
            rows = connection.execute(sa.select(table).order_by(table.c.seq.desc()).limit(limit))
            return [dict(row._mapping) for row in rows]

    return store.guarded_call(run, operation="read")
