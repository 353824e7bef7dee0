"""RabbitMQ sensors against a real broker, a real state store and a real Dagster instance.

A small "daemon" below plays the part of Dagster's sensor daemon: it applies a tick's dynamic
partition requests, submits each run request once per run key (Dagster's rule), and stores the
cursor only when the tick completed. Killing the tick is simulated by throwing its result away.
"""

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import pytest
import yaml
from dagster import (
    DagsterRun,
    DagsterRunStatus,
    RunRequest,
    SensorResult,
    SkipReason,
    build_sensor_context,
    instance_for_test,
    partition_loading_context,
)

from rof_pipelines.adapters.inbox import Inbox
from rof_pipelines.adapters.messages import build_message
from rof_pipelines.adapters.rabbitmq import REASON_HEADER, RabbitMQ
from rof_pipelines.adapters.resources import PostgresStateStoreResource, RabbitMQResource, RofSettings
from rof_pipelines.adapters.state_store import StateStore
from rof_pipelines.definitions import defs
from rof_pipelines.partitions import market_and_day, market_day_partitions, markets_partitions
from rof_pipelines.settings import load_settings

LOADED = defs()  # the sensors as the code location builds them
tasks_sensor = LOADED.resolve_sensor_def("task_messages_sensor")
quotes_updated_sensor = LOADED.resolve_sensor_def("quotes_updated_messages_sensor")

MARKETS = ["binance:TONUSDT", "binance:BTCUSDT", "okx:BTCUSDT", "bybit:ETHUSDT", "okx:TONUSDT"]


@pytest.fixture
def env(tmp_path: Path, pg_database, rabbitmq_url) -> Iterator[dict[str, Any]]:
    prefix = f"rof_test_{secrets.token_hex(4)}"
    config_path = tmp_path / "config.yaml"
    state = {
        "db_host": pg_database["db_host"],
        "db_user": pg_database["db_user"],
        "db_name": pg_database["db_name"],
        "db_password": "",
        "schema": "rof_state",
    }
    config_path.write_text(
        yaml.safe_dump(
            {
                "state_storage": state,
                "storage": {
                    "rabbitmq": {"url": rabbitmq_url, "queue_prefix": prefix, "max_messages_per_tick": 150}
                },
                "system_setup": {
                    "worker_pool": {
                        "ab_optimizer": {"max_workers": 12, "queue_size": 3, "task_timeout": "1200s"}
                    }
                },
            }
        )
    )
    settings = load_settings(config_path, environ={})
    rabbit = RabbitMQ(settings.storage.rabbitmq, None, prefix)
    rabbit.declare_topology()
    resource = RofSettings(config_path=str(config_path))
    resources = {
        "settings": resource,
        "state_store": PostgresStateStoreResource(settings=resource),
        "rabbitmq": RabbitMQResource(settings=resource),
    }
    with StateStore(settings.state_storage) as store:
        store.upgrade()
    try:
        with instance_for_test() as instance:
            yield {
                "rabbit": rabbit,
                "resources": resources,
                "instance": instance,
                "settings": settings,
                "url": rabbitmq_url,
                "prefix": prefix,
            }
    finally:
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
        channel = connection.channel()
        for queue in rabbit.topology.all_queues:
            channel.queue_delete(queue)
        for exchange in (rabbit.topology.exchange, rabbit.topology.dead_letter_exchange):
            channel.exchange_delete(exchange)
        connection.close()


class Daemon:
    """What Dagster's sensor daemon does with a tick result, minus launching runs."""

    def __init__(self, instance, resources):
        self.instance, self.resources = instance, resources
        self.cursor: str | None = None
        self.runs: dict[str, Any] = {}  # run_key -> request
        self.requested = 0

    def tick(self, sensor, crash_after_evaluation: bool = False) -> "Tick":
        with build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources
        ) as context:
            outcome = sensor(context)
        data = Tick.of(outcome)
        if crash_after_evaluation:  # died after ack, before the cursor and runs were stored
            return data
        for request in data.dynamic_partitions_requests:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        with partition_loading_context(dynamic_partitions_store=self.instance):
            for request in data.run_requests:
                assert market_day_partitions.has_partition_key(request.partition_key)
                self.requested += 1
                if request.run_key in self.runs:
                    assert self.runs[request.run_key].partition_key == request.partition_key
                    continue
                self.runs[request.run_key] = request
        self.cursor = data.cursor if data.cursor is not None else self.cursor
        return data


@dataclass
class Tick:
    run_requests: list[RunRequest]
    dynamic_partitions_requests: list[Any]
    cursor: str | None
    skip_message: str | None

    @classmethod
    def of(cls, outcome: SensorResult | SkipReason) -> "Tick":
        if isinstance(outcome, SkipReason):
            return cls([], [], None, outcome.skip_message)
        return cls(
            list(outcome.run_requests or []),
            list(outcome.dynamic_partitions_requests or []),
            outcome.cursor,
            None,
        )


def publish_raw(url: str, queue: str, body: bytes, message_id: str | None = None) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    props = pika.BasicProperties(delivery_mode=2, message_id=message_id, content_type="application/json")
    connection.channel().basic_publish("", queue, body, props)
    connection.close()


def dead_letters(url: str, queue: str) -> list[tuple[bytes, dict]]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    out = []
    while True:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        out.append((body, props.headers or {}))
    connection.close()
    return out


def test_a_thousand_messages_give_exactly_one_run_per_distinct_valid_message(env):
    rabbit, url = env["rabbit"], env["url"]
    tasks_queue = rabbit.queue_name("task")
    valid = [
        build_message("task", market=MARKETS[i % 5], date=f"2026-11-{1 + i % 20:02d}") for i in range(800)
    ]
    rabbit.publish_many(valid)
    rabbit.publish_many(valid[::8])  # 100 redeliveries of the same messages (same message ids)
    for i in range(100):  # malformed: bad JSON, wrong version, missing field, unknown market format
        body = [
            b"{not json",
            json.dumps({"schema_version": 2, "kind": "task", "market": "binance:TONUSDT"}).encode(),
            json.dumps({"schema_version": 1, "kind": "task"}).encode(),
            json.dumps({"schema_version": 1, "kind": "task", "market": "no-colon"}).encode(),
        ][i % 4]
        publish_raw(url, tasks_queue, body, message_id=f"bad-{i}")

    daemon = Daemon(env["instance"], env["resources"])
    # A tick that dies after acking (its runs and cursor never stored) ...
    daemon.tick(tasks_sensor, crash_after_evaluation=True)
    for _ in range(20):
        data = daemon.tick(tasks_sensor)
        if not data.run_requests and rabbit.queue_depths()[tasks_queue] == 0:
            break

    assert set(daemon.runs) == {m.message_id for m in valid}
    assert len(daemon.runs) == 800 and daemon.requested >= 800
    for message in valid[:50]:
        request = daemon.runs[message.message_id]
        market, day = market_and_day(request.partition_key)
        assert (market.key, day) == (message.market, message.date)
        assert request.tags["rof/trigger"] == f"message:{message.message_id}"
    assert set(env["instance"].get_dynamic_partitions(markets_partitions.name)) == set(MARKETS)
    dead = dead_letters(url, rabbit.queue_name("dead_letter"))
    assert len(dead) == 100 and all(REASON_HEADER in headers for _, headers in dead)
    with StateStore(env["settings"].state_storage) as store:
        assert Inbox(store).count("task") == 800


def test_crash_between_inbox_commit_and_ack_loses_nothing_and_doubles_nothing(env, monkeypatch):
    rabbit = env["rabbit"]
    messages = [
        build_message("task", market="binance:TONUSDT", date=f"2026-10-{d:02d}") for d in range(1, 31)
    ]
    rabbit.publish_many(messages)
    daemon = Daemon(env["instance"], env["resources"])
    original = Inbox.add

    def commit_then_die(self, received):
        original(self, received)
        raise ConnectionResetError("sensor process killed after COMMIT, before ack")

    monkeypatch.setattr(Inbox, "add", commit_then_die)
    with pytest.raises(Exception, match="killed after COMMIT"):
        daemon.tick(tasks_sensor)
    monkeypatch.setattr(Inbox, "add", original)
    for _ in range(5):
        daemon.tick(tasks_sensor)
    assert set(daemon.runs) == {m.message_id for m in messages}
    assert rabbit.queue_depths()[rabbit.queue_name("task")] == 0
    with StateStore(env["settings"].state_storage) as store:
        assert Inbox(store).count("task") == 30  # the redelivered copies were ignored


def test_quotes_updated_reruns_every_day_it_touches(env):
    rabbit = env["rabbit"]
    message = build_message(
        "quotes.updated", market="okx:BTCUSDT", start="2026-11-20T22:00:00Z", end="2026-11-22T00:00:00Z"
    )
    rabbit.publish(message)
    daemon = Daemon(env["instance"], env["resources"])
    daemon.tick(quotes_updated_sensor)
    days = sorted(str(market_and_day(r.partition_key)[1]) for r in daemon.runs.values())
    assert days == ["2026-11-20", "2026-11-21"]  # end is exclusive
    assert set(daemon.runs) == {f"{message.message_id}:2026-11-20", f"{message.message_id}:2026-11-21"}


def test_rabbitmq_down_is_a_clear_skip_and_committed_rows_still_run(env, tmp_path):
    rabbit = env["rabbit"]
    rabbit.publish(build_message("task", market="binance:TONUSDT", date="2026-11-01"))
    daemon = Daemon(env["instance"], env["resources"])
    daemon.tick(tasks_sensor, crash_after_evaluation=True)  # committed to the inbox, runs not stored
    down = tmp_path / "down.yaml"
    config = yaml.safe_load(Path(env["resources"]["settings"].config_path).read_text())
    config["storage"]["rabbitmq"]["url"] = "amqp://guest:guest@127.0.0.1:1/%2F"
    down.write_text(yaml.safe_dump(config))
    resource = RofSettings(config_path=str(down))
    daemon.resources = {
        **env["resources"],
        "settings": resource,
        "state_store": PostgresStateStoreResource(settings=resource),
        "rabbitmq": RabbitMQResource(settings=resource),
    }
    data = daemon.tick(tasks_sensor)
    assert len(data.run_requests) == 1  # served from the inbox despite the broker being down
    data = daemon.tick(tasks_sensor)
    assert data.skip_message and "RabbitMQ unavailable, will retry" in data.skip_message


def test_back_pressure_stops_draining(env):
    rabbit, instance = env["rabbit"], env["instance"]
    rabbit.publish(build_message("task", market="binance:TONUSDT", date="2026-11-01"))
    for _ in range(3):  # queue_size of ab_optimizer is 3 in this config
        instance.add_run(
            DagsterRun(
                job_name="nightly_optimisation",
                run_id=secrets.token_hex(16),
                status=DagsterRunStatus.NOT_STARTED,
                tags={"rof/pool": "ab_optimizer"},
            )
        )
    daemon = Daemon(instance, env["resources"])
    data = daemon.tick(tasks_sensor)
    assert "back-pressure: 3 runs of pool ab_optimizer waiting (queue_size 3)" in data.skip_message
    assert rabbit.queue_depths()[rabbit.queue_name("task")] == 1


def test_quotes_reaching_into_today_run_the_finished_days_and_nothing_is_out_of_range(env):
    """Today's partition does not exist until the UTC day is over: asking for it would fail the tick."""
    rabbit = env["rabbit"]
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    message = build_message(
        "quotes.updated",
        market="okx:BTCUSDT",
        start=today - timedelta(days=1),
        end=today + timedelta(hours=1),
    )
    rabbit.publish(message)
    daemon = Daemon(env["instance"], env["resources"])
    daemon.tick(quotes_updated_sensor)  # the daemon stand-in asserts every partition key exists
    yesterday = (today - timedelta(days=1)).date()
    assert [market_and_day(r.partition_key)[1] for r in daemon.runs.values()] == [yesterday]
    assert dead_letters(env["url"], rabbit.queue_name("dead_letter")) == []
