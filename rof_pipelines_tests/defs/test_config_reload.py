"""Hot reload: an edit is picked up without restart; an invalid edit is refused, recorded, and the
last valid version stays in force; only key paths are recorded, never values."""

from datetime import timedelta
from pathlib import Path

import yaml
from dagster import build_sensor_context, instance_for_test

from rof_pipelines.adapters.config_versions import config_versions
from rof_pipelines.adapters.resources import PostgresStateStoreResource, RofSettings
from rof_pipelines.adapters.state_store import StateStore
from rof_pipelines.defs.ops.sensors import config_reload_sensor

SECRET = "n3w-s3cr3t-value"


def write(path: Path, state: dict, **storage) -> None:
    path.write_text(
        yaml.safe_dump({"state_storage": state, "storage": {"data_dir": str(path.parent / "d"), **storage}})
    )


def tick(instance, resources, cursor):
    with build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        result = config_reload_sensor(context)
        return result, context.cursor


def test_edits_apply_without_restart_and_bad_edits_are_refused(tmp_path, pg_database):
    state = {
        "db_host": pg_database["db_host"],
        "db_user": pg_database["db_user"],
        "db_name": pg_database["db_name"],
        "db_password": "",
        "schema": "rof_state",
    }
    config = tmp_path / "config.yaml"
    write(config, state, bar_interval="1m")
    settings = RofSettings(config_path=str(config))
    resources = {"settings": settings, "state_store": PostgresStateStoreResource(settings=settings)}
    with instance_for_test() as instance:
        result, cursor = tick(instance, resources, None)
        assert "applied" in result.skip_message
        assert settings.load().storage.bar_interval == timedelta(minutes=1)
        result, cursor = tick(instance, resources, cursor)
        assert result.skip_message == "config.yaml unchanged"

        write(config, state, bar_interval="5m", postgres={"db_password": SECRET})
        result, cursor = tick(instance, resources, cursor)
        assert "changed keys: storage.bar_interval, storage.postgres.db_password" in result.skip_message
        assert settings.load().storage.bar_interval == timedelta(minutes=5)  # same resource, no restart

        write(config, state, bar_interval="7m")  # does not divide a day evenly: invalid
        result, cursor = tick(instance, resources, cursor)
        assert result.skip_message.startswith("REFUSED")
        assert "storage.bar_interval: bar_interval must divide a day evenly" in result.skip_message
        assert settings.load().storage.bar_interval == timedelta(minutes=5)  # the last valid one

        result, _ = tick(instance, resources, cursor)
        assert result.skip_message == "config.yaml unchanged"  # refused once, not every tick

    with StateStore(settings.load().state_storage) as store:
        rows = config_versions(store)
    assert [row["status"] for row in rows] == ["refused", "applied", "applied"]
    assert rows[0]["changed_keys"] == ["storage.bar_interval", "storage.postgres.db_password"]
    assert "bar_interval" in rows[0]["error"]
    assert all(SECRET not in str(row) for row in rows)


def test_state_store_down_defers_recording_but_still_protects_runs(tmp_path):
    config = tmp_path / "config.yaml"
    state = {"db_host": "127.0.0.1:1", "db_user": "x", "db_password": "pw"}
    write(config, state, bar_interval="2m")
    settings = RofSettings(config_path=str(config))
    resources = {"settings": settings, "state_store": PostgresStateStoreResource(settings=settings)}
    with instance_for_test() as instance:
        result, cursor = tick(instance, resources, None)
    assert "not yet recorded" in result.skip_message and cursor is None
    write(config, state, bar_interval="nonsense")
    assert settings.load().storage.bar_interval == timedelta(minutes=2)


def test_a_broken_first_version_skips_until_a_valid_one_is_recorded(tmp_path, pg_database):
    """With no last valid version there is no state store to record in: skip with the reason, then
    record the first valid version as usual."""
    state = {
        "db_host": pg_database["db_host"],
        "db_user": pg_database["db_user"],
        "db_name": pg_database["db_name"],
        "db_password": "",
        "schema": "rof_state",
    }
    config = tmp_path / "config.yaml"
    write(config, {**state, "db_pasword": SECRET}, bar_interval="1m")
    settings = RofSettings(config_path=str(config))
    resources = {"settings": settings, "state_store": PostgresStateStoreResource(settings=settings)}
    with instance_for_test() as instance:
        result, cursor = tick(instance, resources, None)
        assert "no last valid version exists yet" in result.skip_message
        assert "state_storage.db_pasword: unknown key" in result.skip_message
        assert SECRET not in result.skip_message
        write(config, state, bar_interval="1m")
        result, cursor = tick(instance, resources, cursor)
        assert "applied" in result.skip_message

        config.unlink()
        config.mkdir()  # the file became a directory: refused with the path, the last valid one stays
        result, _ = tick(instance, resources, cursor)
        assert result.skip_message == f"REFUSED: configuration file {config} is a directory"
        assert settings.load().storage.bar_interval == timedelta(minutes=1)
    with StateStore(settings.load().state_storage) as store:
        assert [row["status"] for row in config_versions(store)] == ["applied"]
