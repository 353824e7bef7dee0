"""Poison messages through the real dagster-daemon: one of each reported kind (a deeply nested body, a
task for 1900, a century-long quotes.updated range, and a few other decoder hazards) ahead of 50 valid
messages. Exactly the 50 valid ones become runs, the poison ones are dead-lettered with reasons, and
no sensor tick fails twice in a row (before the hardening, every tick after the first poison failed)."""

import json
import time
from collections import Counter

import pika
import pytest
import yaml
from dagster import DagsterInstance
from dagster._core.scheduler.instigation import TickStatus

from rof_pipelines.adapters.messages import build_message
from rof_pipelines.adapters.rabbitmq import REASON_HEADER

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.rabbitmq]
MARKETS = ["binance:TONUSDT", "binance:BTCUSDT", "okx:BTCUSDT", "bybit:ETHUSDT"]
SENSORS = ("task_messages_sensor", "quotes_updated_messages_sensor")
MAX_RUNS = 10


@pytest.fixture
def harness(pg_admin_dsn, rabbitmq_url):
    from rof_pipelines.bench.sensor import DaemonHarness

    harness = DaemonHarness(sensor_interval=2)
    config = yaml.safe_load(harness.config_path.read_text())
    config["storage"]["rabbitmq"].update({"max_days_per_message": 31, "max_runs_per_message": MAX_RUNS})
    harness.config_path.write_text(yaml.safe_dump(config))
    try:
        yield harness
    finally:
        harness.close()


def _raw(message_id: str, **fields) -> bytes:
    return json.dumps({"schema_version": 1, "message_id": message_id, **fields}).encode()


POISON = {  # message id -> (queue suffix, body, what the reject reason says)
    "poison-brackets": ("tasks", b"[" * 200_000, "JSON nests 200000 levels deep"),
    "poison-1900": (
        "tasks",
        _raw("poison-1900", kind="task", market=MARKETS[0], date="1900-01-01"),
        "before the first partition day",
    ),
    "poison-century": (
        "quotes.updated",
        _raw(
            "poison-century",
            kind="quotes.updated",
            market=MARKETS[0],
            start="2000-01-01T00:00:00Z",
            end="2100-01-01T00:00:00Z",
        ),
        "is in the future",
    ),
    "poison-decades": (
        "quotes.updated",
        _raw(
            "poison-decades",
            kind="quotes.updated",
            market=MARKETS[0],
            start="2000-01-01T00:00:00Z",
            end="2026-01-01T00:00:00Z",
        ),
        "more than storage.rabbitmq.max_days_per_message (31)",
    ),
    "poison-year-one": (
        "tasks",
        _raw("poison-year-one", kind="task", market=MARKETS[0], created_at="0001-01-01T00:00:00+05:00"),
        "outside the range of UTC datetimes",
    ),
    "poison-nul": (
        "tasks",
        _raw("poison-nul", kind="task", market=MARKETS[0], date="2026-10-01", reason="a\u0000b"),
        "NUL character",
    ),
    "poison-digits": ("tasks", b'{"schema_version": ' + b"1" * 5000 + b"}", "4300 digits"),
}


def _publish_poison(url: str, prefix: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    for message_id, (suffix, body, _) in POISON.items():
        properties = pika.BasicProperties(message_id=message_id, content_type="application/json")
        channel.basic_publish("", f"{prefix}.{suffix}", body, properties)
    connection.close()


def _dead_letters(url: str, queue: str) -> dict[str, str]:
    reasons = {}
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
        reasons[got[1].message_id] = (got[1].headers or {}).get(REASON_HEADER, "")
    connection.close()
    return reasons


def _tick_statuses(home: str) -> dict[str, list[TickStatus]]:
    """Each message sensor's tick statuses, oldest first."""
    instance = DagsterInstance.from_config(home)
    try:
        out = {}
        for state in instance.all_instigator_state():
            if state.name in SENSORS:
                ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
                out[state.name] = [tick.status for tick in sorted(ticks, key=lambda t: t.timestamp)]
        return out
    finally:
        instance.dispose()


def test_poison_messages_cost_nothing_but_themselves(harness):
    rabbit = harness.rabbit
    url = rabbit.config.url.get_secret_value()
    _publish_poison(url, harness.prefix)  # first in line, ahead of every valid message
    tasks = [
        build_message("task", market=MARKETS[i % 4], date=f"2026-10-{1 + i % 28:02d}") for i in range(40)
    ]
    quotes = [
        build_message(
            "quotes.updated",
            market=MARKETS[i % 4],
            start=f"2026-11-{1 + i:02d}T06:00:00Z",
            end=f"2026-11-{1 + i:02d}T18:00:00Z",
        )
        for i in range(10)
    ]
    rabbit.publish_many([*tasks, *quotes])
    valid = {m.message_id for m in [*tasks, *quotes]}

    started = time.monotonic()
    harness.start()
    deadline = started + 150
    while len(harness.runs()) < len(valid) and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(6)  # a few more ticks: nothing further may appear
    runs = [message_id for message_id, _ in harness.runs()]
    harness.kill()
    statuses = _tick_statuses(str(harness.home))

    counts = {name: dict(Counter(status.value for status in seen)) for name, seen in statuses.items()}
    diagnosis = f"{len(runs)} runs after {time.monotonic() - started:.0f}s; ticks {counts}; see {harness.dir}"
    assert len(runs) == 50 and set(runs) == valid, diagnosis
    reasons = _dead_letters(url, rabbit.topology.dead_letter_queue)
    assert set(reasons) == set(POISON), diagnosis
    for message_id, (_, _, expected) in POISON.items():
        assert expected in reasons[message_id], (message_id, reasons[message_id])
    assert set(statuses) == set(SENSORS), diagnosis
    for name, seen in statuses.items():
        assert TickStatus.SUCCESS in seen, (name, seen)
        twice = [i for i in range(1, len(seen)) if seen[i] == seen[i - 1] == TickStatus.FAILURE]
        assert not twice, f"{name} failed twice in a row: {seen}"
    assert rabbit.queue_depths() == dict.fromkeys(rabbit.topology.all_queues, 0)
