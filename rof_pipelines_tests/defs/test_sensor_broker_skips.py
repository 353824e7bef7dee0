"""A broker that cannot be reached or refuses the login is a skipped tick with one clear reason,
logged at most once a minute per sensor, with no traceback per tick (pika's own per-attempt error
logs are muted). The config-reload and market-discovery sensors skip the same way when their store
is unreachable or refuses the login. The shipped RabbitMQ URL is a stock local broker's."""

import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml
from dagster import SkipReason, build_sensor_context, instance_for_test

from rof_pipelines.adapters.resources import (
    PostgresStateStoreResource,
    QuoteStoreResource,
    RabbitMQResource,
    RofSettings,
)
from rof_pipelines.definitions import defs
from rof_pipelines.defs import messaging
from rof_pipelines.defs.ops.sensors import config_reload_sensor
from rof_pipelines.defs.quotes.sensors import market_discovery_sensor
from rof_pipelines.settings import DEFAULT_CONFIG_PATH, RabbitMQConfig

LOADED = defs()  # the queue sensors as the code location builds them
tasks_sensor = LOADED.resolve_sensor_def("task_messages_sensor")
backup_sensor = LOADED.resolve_sensor_def("backup_messages_sensor")

STOCK_URL = "amqp://guest:guest@localhost:5672/"


def test_the_shipped_rabbitmq_url_is_a_stock_local_broker():
    assert RabbitMQConfig().url.get_secret_value() == STOCK_URL
    shipped = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    assert shipped["storage"]["rabbitmq"]["url"] == STOCK_URL


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "guest"
    host = parts.hostname or "127.0.0.1"
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}:{parts.port or 5672}"))


def sensor_resources(tmp_path: Path, state_storage: dict, url: str) -> dict:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"state_storage": state_storage, "storage": {"rabbitmq": {"url": url}}}))
    settings = RofSettings(config_path=str(path))
    return {
        "settings": settings,
        "state_store": PostgresStateStoreResource(settings=settings),
        "rabbitmq": RabbitMQResource(settings=settings),
    }


CAPTURE: list[logging.Handler] = []  # where the tick's context.log also writes (caplog's handler)


def ticks(sensor, resources: dict, n: int) -> list:
    outcomes = []
    with instance_for_test() as instance:
        for _ in range(n):
            with build_sensor_context(instance=instance, resources=resources) as context:
                for handler in CAPTURE:
                    context.log.addHandler(handler)
                outcomes.append(sensor(context))
    return outcomes


def broker_logs(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if "logged at most once a minute" in record.getMessage()]


@pytest.fixture(autouse=True)
def _fresh_log_clock(monkeypatch, caplog):
    monkeypatch.setattr(messaging, "_broker_logged_at", {})
    CAPTURE[:] = [caplog.handler]  # a sensor context's log does not propagate to the root logger
    yield
    CAPTURE.clear()


def check_quiet_skips(outcomes: list, caplog, expected: str) -> None:
    for outcome in outcomes:
        assert isinstance(outcome, SkipReason), outcome
        assert expected in outcome.skip_message
        assert "***" in outcome.skip_message and "Traceback" not in outcome.skip_message
    logged = broker_logs(caplog)
    assert len(logged) == 1, [record.getMessage() for record in logged]  # one log for three ticks
    assert logged[0].levelno == logging.WARNING and expected in logged[0].getMessage()
    noisy = [r for r in caplog.records if r.name.startswith("pika") and r.levelno >= logging.ERROR]
    assert not noisy and not any(r.exc_info for r in caplog.records)


def test_closed_port_is_a_skip_logged_once(tmp_path, state_storage, caplog):
    caplog.set_level(logging.INFO)
    resources = sensor_resources(tmp_path, state_storage, "amqp://guest:guest@127.0.0.1:1/%2F")
    check_quiet_skips(ticks(tasks_sensor, resources, 3), caplog, "RabbitMQ unavailable, will retry")


def test_wrong_credentials_on_the_real_broker_are_a_skip_logged_once(
    tmp_path, state_storage, rabbitmq_url, caplog
):
    caplog.set_level(logging.INFO)
    resources = sensor_resources(tmp_path, state_storage, with_password(rabbitmq_url, "not-the-password"))
    outcomes = ticks(tasks_sensor, resources, 3)
    check_quiet_skips(outcomes, caplog, "RabbitMQ refused the connection")
    assert "check the user and password in storage.rabbitmq.url" in outcomes[0].skip_message
    assert "not-the-password" not in outcomes[0].skip_message


def test_the_once_a_minute_log_is_per_sensor(tmp_path, state_storage, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    resources = sensor_resources(tmp_path, state_storage, "amqp://guest:guest@127.0.0.1:1/%2F")
    ticks(tasks_sensor, resources, 2)
    ticks(backup_sensor, resources, 2)
    assert len(broker_logs(caplog)) == 2  # one per sensor
    clock = messaging._broker_logged_at
    monkeypatch.setattr(messaging, "_broker_logged_at", {k: v - 61 for k, v in clock.items()})
    ticks(tasks_sensor, resources, 1)
    assert len(broker_logs(caplog)) == 3  # a minute later it is said again


@pytest.mark.parametrize(
    "store",
    [
        {"db_host": "127.0.0.1:1", "db_user": "postgres", "db_name": "nothing", "db_password": ""},
        {"db_host": "127.0.0.1:5432", "db_user": "no_such_role", "db_name": "nothing", "db_password": "pw"},
    ],
    ids=["closed-port", "refused-login"],
)
def test_config_reload_and_market_discovery_skip_with_the_reason(tmp_path, pg_admin_dsn, store, caplog):
    caplog.set_level(logging.INFO)
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump({"state_storage": store, "storage": {"quote_store": "postgres", "postgres": store}})
    )
    settings = RofSettings(config_path=str(path))
    reload_ticks = ticks(
        config_reload_sensor,
        {"settings": settings, "state_store": PostgresStateStoreResource(settings=settings)},
        2,
    )
    discovery_ticks = ticks(
        market_discovery_sensor,
        {"settings": settings, "quote_store": QuoteStoreResource(settings=settings)},
        2,
    )
    for outcome in reload_ticks:
        assert isinstance(outcome, SkipReason) and "not yet recorded: state_store" in outcome.skip_message
    for outcome in discovery_ticks:
        assert isinstance(outcome, SkipReason) and outcome.skip_message.startswith("cannot list markets:")
    assert not any(r.exc_info for r in caplog.records)


def test_a_fresh_broker_gets_its_queues_declared_on_the_first_tick(tmp_path, state_storage, rabbitmq_url):
    """A stock broker has none of the project's queues yet: the first tick declares them
    (idempotently) and drains, instead of skipping for ever with "no queue"."""
    import secrets

    import pika

    prefix = f"fresh{secrets.token_hex(4)}"
    path = tmp_path / "config.yaml"
    rabbit = {"url": rabbitmq_url, "queue_prefix": prefix}
    path.write_text(yaml.safe_dump({"state_storage": state_storage, "storage": {"rabbitmq": rabbit}}))
    settings = RofSettings(config_path=str(path))
    resources = {
        "settings": settings,
        "state_store": PostgresStateStoreResource(settings=settings),
        "rabbitmq": RabbitMQResource(settings=settings),
    }
    try:
        (outcome,) = ticks(tasks_sensor, resources, 1)
        assert isinstance(outcome, SkipReason) and "drained 0" in outcome.skip_message, outcome
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
        assert connection.channel().queue_declare(f"{prefix}.tasks", passive=True)  # it exists now
    finally:
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
        channel = connection.channel()
        for suffix in ("tasks", "quotes.updated", "backup", "dead_letter"):
            channel.queue_delete(f"{prefix}.{suffix}")
        connection.close()
