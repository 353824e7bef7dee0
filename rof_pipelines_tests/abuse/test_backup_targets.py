"""A broker message cannot choose where backups are written or pruned: it names a configured
destination or nothing; non-durable destinations are refused at config load; retention deletes only
archives this project wrote. Real PostgreSQL and RabbitMQ, as everywhere else."""

import hashlib
import json
import secrets
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import pytest
import sqlalchemy as sa
import yaml
from dagster import SensorResult, build_sensor_context, instance_for_test
from typer.testing import CliRunner

from rof_pipelines.adapters.backup import MANIFEST_SUFFIX, prune_backups, restore_backup, write_backup
from rof_pipelines.adapters.messages import build_message, parse_message
from rof_pipelines.adapters.rabbitmq import REASON_HEADER, RabbitMQ
from rof_pipelines.adapters.resources import PostgresStateStoreResource, RabbitMQResource, RofSettings
from rof_pipelines.adapters.state_store import StateStore
from rof_pipelines.cli import app
from rof_pipelines.definitions import defs
from rof_pipelines.errors import ConfigError, MalformedMessage, PermanentError
from rof_pipelines.settings import load_settings

LOADED = defs()  # the backup job and sensor as the code location builds them
state_backup_job = LOADED.resolve_job_def("state_backup")
backup_sensor = LOADED.resolve_sensor_def("backup_messages_sensor")

REFUSED_BODIES = {
    "url": ({"destination": "s3://attacker-bucket/loot"}, "not a URL or a path"),
    "memory": ({"destination": "memory://gone"}, "not a URL or a path"),
    "path": ({"destination": "/etc/rof"}, "not a URL or a path"),
    "relative-path": ({"destination": "../../home"}, "not a URL or a path"),
    "unknown": ({"destination": "nowhere"}, "not a configured backup destination"),
    "legacy-target": ({"target": "/tmp/anywhere"}, "a backup URL is not accepted"),
}


def _state(pg_database: dict[str, Any], schema: str) -> dict[str, Any]:
    return {
        "db_host": pg_database["db_host"],
        "db_user": pg_database["db_user"],
        "db_name": pg_database["db_name"],
        "db_password": "",
        "schema": schema,
    }


def _write_config(path: Path, **sections: Any) -> Path:
    path.write_text(yaml.safe_dump(sections))
    return path


def _body(message_id: str, **fields: Any) -> bytes:
    return json.dumps({"schema_version": 1, "kind": "backup", "message_id": message_id, **fields}).encode()


# --- config load -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backup", "key_path", "reason"),
    [
        ({"destinations": {"scratch": "memory://backups"}}, "destinations.scratch", "memory://"),
        ({"destinations": {"fast": "simplecache::s3://b/rof"}}, "destinations.fast", "chained fsspec URL"),
        ({"destinations": {"cache": "filecache://tmp/rof"}}, "destinations.cache", "filecache://"),
        ({"destinations": {"refs": "reference://x"}}, "destinations.refs", "reference://"),
        ({"destinations": {"web": "https://user:pw@host/rof"}}, "destinations.web", "https://"),
        ({"directory": "memory://backups"}, "directory", "memory://"),
        ({"destinations": {"s3/x": "s3://b/rof"}}, "destinations.s3/x", "a destination name is"),
        ({"destinations": {"default": "/srv/rof"}}, "destinations", "is system_setup.backup.directory"),
    ],
)
def test_non_durable_or_ambiguous_destinations_are_refused_at_config_load(backup, key_path, reason):
    with pytest.raises(ConfigError) as raised:
        load_settings(environ={}, overrides={"system_setup": {"backup": backup}})
    message = str(raised.value)
    assert f"system_setup.backup.{key_path}" in message and reason in message, message
    assert "pw@" not in message  # a destination URL may carry credentials; it is never echoed


def test_durable_destinations_load_by_name(tmp_path):
    settings = load_settings(
        environ={},
        overrides={
            "system_setup": {
                "backup": {
                    "directory": str(tmp_path / "main"),
                    "destinations": {"offsite": "s3://bucket/rof", "nas": "sftp://nas/rof", "local": "bk"},
                }
            }
        },
    )
    backup = settings.system_setup.backup
    assert backup.destination_names == ["default", "local", "nas", "offsite"]
    assert backup.resolved_url() == backup.resolved_url("default") == str(tmp_path / "main")
    assert backup.resolved_url("offsite") == "s3://bucket/rof"
    assert backup.resolved_url("local").endswith("/bk") and Path(backup.resolved_url("local")).is_absolute()
    with pytest.raises(ConfigError, match="no destination named 'elsewhere'"):
        backup.resolved_url("elsewhere")


# --- messages --------------------------------------------------------------------------------------


@pytest.fixture
def destinations_config(tmp_path: Path, monkeypatch) -> Path:
    """The config in force names one extra destination, ``offsite`` (a local directory here)."""
    config = _write_config(
        tmp_path / "config.yaml",
        system_setup={
            "backup": {
                "directory": str(tmp_path / "default"),
                "destinations": {"offsite": str(tmp_path / "offsite")},
            }
        },
    )
    monkeypatch.setenv("ROF_CONFIG", str(config))
    return config


@pytest.mark.parametrize("case", sorted(REFUSED_BODIES))
def test_a_backup_message_names_only_a_configured_destination(destinations_config, case):
    fields, reason = REFUSED_BODIES[case]
    with pytest.raises(MalformedMessage) as raised:
        parse_message("backup", _body(f"m-{case}", **fields))
    assert reason in raised.value.reason
    assert parse_message("backup", _body("ok", destination="offsite")).destination == "offsite"
    assert parse_message("backup", _body("plain")).destination is None  # the default destination


def test_rof_publish_backup_takes_a_destination_name_not_a_url(destinations_config):
    runner = CliRunner()
    refused = runner.invoke(app, ["publish", "backup", "--destination", "memory://gone"])
    assert isinstance(refused.exception, MalformedMessage) and "not a URL or a path" in str(refused.exception)
    unknown = runner.invoke(app, ["publish", "backup", "--destination", "nowhere"])
    assert isinstance(unknown.exception, MalformedMessage)
    assert "not a configured backup destination (configured: default, offsite)" in str(unknown.exception)
    gone = runner.invoke(app, ["publish", "backup", "--target", "/tmp/x"])
    assert gone.exit_code == 2 and "No such option" in gone.output


def test_rof_state_backup_refuses_a_non_durable_directory(destinations_config):
    for directory in ("memory://backups", "simplecache::file:///tmp/rof", "https://host/rof"):
        result = CliRunner().invoke(app, ["state", "backup", "--directory", directory])
        assert result.exit_code == 2 and "backup destination refused" in result.output, result.output


# --- retention -------------------------------------------------------------------------------------


@pytest.fixture
def live_store(make_settings, pg_database) -> Iterator[StateStore]:
    settings = make_settings({"state_storage": _state(pg_database, "rof_live")})
    store = StateStore(settings.state_storage, settings.system_setup.circuit_breaker)
    store.upgrade()
    store.configs.set_active("binance:TONUSDT", {"alpha": 0.1}, source="manual")
    yield store
    store.dispose()


@pytest.mark.postgres
def test_pruning_deletes_only_archives_this_project_wrote(live_store, tmp_path):
    directory = tmp_path / "dest"
    first, second = write_backup(live_store, str(directory)), write_backup(live_store, str(directory))
    # Files of the same name pattern, older than any retention, that this project did not write:
    planted = directory / "state-backup-rof_live-20000101T000000000000Z.tar"
    planted.write_bytes(b"someone else's archive")
    # ... one with a manifest of this project's shape for a file that is not the one it describes,
    forged = directory / "state-backup-rof_live-20000102T000000000000Z.tar"
    forged.write_bytes(b"someone else's data")
    (directory / f"{forged.name}{MANIFEST_SUFFIX}").write_text(
        json.dumps(
            {
                "written_by": "rof_pipelines state backup",
                "archive": forged.name,
                "sha256": hashlib.sha256(b"other bytes").hexdigest(),
                "bytes": 11,
                "created_at": "2000-01-02T00:00:00+00:00",
                "schema": "rof_live",
            }
        )
    )
    # ... and a manifest that points at a file outside its own name.
    outside = tmp_path / "state-backup-outside.tar"
    outside.write_bytes(b"outside the destination")
    sneaky = directory / f"state-backup-sneaky.tar{MANIFEST_SUFFIX}"
    sneaky.write_text(
        json.dumps({"written_by": "rof_pipelines state backup", "archive": "../" + outside.name})
    )
    # One of the project's own archives was replaced after it was written: no longer the project's file.
    own_replaced = Path(second.url)
    own_replaced.write_bytes(b"replaced")

    assert prune_backups(str(directory), retention_days=7) == []  # nothing has expired yet
    later = datetime.now(UTC) + timedelta(days=8)
    assert prune_backups(str(directory), retention_days=7, now=later) == [first.url]
    assert not Path(first.url).exists() and not Path(first.url + MANIFEST_SUFFIX).exists()
    for survivor in (planted, forged, outside, own_replaced, sneaky):
        assert survivor.exists(), survivor


@pytest.mark.postgres
def test_write_backup_refuses_non_durable_filesystems(live_store):
    for url in ("memory://backups", "simplecache::memory://backups", "http://host/backups"):
        with pytest.raises(PermanentError, match="backup destination refused"):
            write_backup(live_store, url)
        with pytest.raises(PermanentError, match="backup destination refused"):
            prune_backups(url, retention_days=1)


# --- the broker -> sensor -> job path ----------------------------------------------------------------


@pytest.fixture
def broker_env(tmp_path: Path, pg_database, rabbitmq_url, monkeypatch) -> Iterator[dict[str, Any]]:
    prefix = f"rof_test_{secrets.token_hex(4)}"
    config = _write_config(
        tmp_path / "config.yaml",
        state_storage=_state(pg_database, "rof_state"),
        storage={"rabbitmq": {"url": rabbitmq_url, "queue_prefix": prefix}},
        system_setup={
            "backup": {
                "directory": str(tmp_path / "default"),
                "destinations": {"offsite": str(tmp_path / "offsite")},
            }
        },
    )
    monkeypatch.setenv("ROF_CONFIG", str(config))  # the config in force, that messages are checked against
    settings = load_settings(config, environ={})
    rabbit = RabbitMQ(settings.storage.rabbitmq, None, prefix)
    rabbit.declare_topology()
    resource = RofSettings(config_path=str(config))
    with StateStore(settings.state_storage) as store:
        store.upgrade()
        store.configs.set_active("binance:TONUSDT", {"alpha": 0.1, "bins": {"rsi": [30, 70]}}, source="ga")
    try:
        yield {
            "rabbit": rabbit,
            "settings": settings,
            "url": rabbitmq_url,
            "tmp": tmp_path,
            "resources": {
                "settings": resource,
                "state_store": PostgresStateStoreResource(settings=resource),
                "rabbitmq": RabbitMQResource(settings=resource),
            },
        }
    finally:
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
        channel = connection.channel()
        for queue in rabbit.topology.all_queues:
            channel.queue_delete(queue)
        for exchange in (rabbit.topology.exchange, rabbit.topology.dead_letter_exchange):
            channel.exchange_delete(exchange)
        connection.close()


def _publish_raw(url: str, queue: str, body: bytes, message_id: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    props = pika.BasicProperties(delivery_mode=2, message_id=message_id, content_type="application/json")
    connection.channel().basic_publish("", queue, body, props)
    connection.close()


def _dead_letters(rabbit: RabbitMQ) -> dict[str, str]:
    with rabbit.tick() as tick:
        deliveries = tick.get("dead_letter", 100)
        tick.ack(deliveries)
    return {delivery.message_id: delivery.headers[REASON_HEADER] for delivery in deliveries}


def _contents(store: StateStore) -> dict[str, list[tuple]]:
    out = {}
    with store.engine.connect() as connection:
        for table in sorted(sa.inspect(connection).get_table_names(schema=store.schema)):
            if table != "alembic_version":
                rows = connection.execute(sa.text(f'SELECT * FROM "{store.schema}"."{table}"')).fetchall()
                out[table] = sorted(tuple(str(value) for value in row) for row in rows)
    return out


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_broker_messages_cannot_redirect_backups_and_a_named_destination_works(broker_env, pg_database):
    rabbit, url, tmp = broker_env["rabbit"], broker_env["url"], broker_env["tmp"]
    queue = rabbit.queue_name("backup")
    for case, (fields, _) in sorted(REFUSED_BODIES.items()):
        _publish_raw(url, queue, _body(f"bad-{case}", **fields), message_id=f"bad-{case}")
    good = build_message("backup", destination="offsite")
    rabbit.publish(good)

    with (
        instance_for_test() as instance,
        build_sensor_context(instance=instance, resources=broker_env["resources"]) as context,
    ):
        outcome = backup_sensor(context)
    assert isinstance(outcome, SensorResult)

    reasons = _dead_letters(rabbit)
    assert set(reasons) == {f"bad-{case}" for case in REFUSED_BODIES}
    for case, (_, reason) in REFUSED_BODIES.items():
        assert reason in reasons[f"bad-{case}"], reasons[f"bad-{case}"]
    assert rabbit.queue_depths()[queue] == 0
    [request] = outcome.run_requests
    assert request.run_key == good.message_id
    assert request.run_config == {"ops": {"backup_state_store": {"config": {"destination": "offsite"}}}}

    result = state_backup_job.execute_in_process(
        run_config=request.run_config, resources=broker_env["resources"], tags=request.tags
    )
    assert result.success
    archive = Path(result.output_for_node("backup_state_store"))
    assert archive.parent == tmp / "offsite" and Path(f"{archive}{MANIFEST_SUFFIX}").exists()
    assert not (tmp / "default").exists()  # written where the config says, nowhere else
    with tarfile.open(archive) as tar:
        assert "manifest.json" in tar.getnames()

    settings = broker_env["settings"]
    live = StateStore(settings.state_storage)
    target = StateStore(
        load_settings(
            environ={}, overrides={"state_storage": _state(pg_database, "rof_restored")}
        ).state_storage
    )
    try:
        rows = restore_backup(target, str(archive))
        assert rows["active_strategy_configs"] == 1
        assert _contents(target) == _contents(live)
        assert target.configs.get_active("binance:TONUSDT").params["bins"] == {"rsi": [30, 70]}
    finally:
        target.dispose()
        live.dispose()
