"""The message sensors with the real dagster-daemon: messages (duplicates, malformed, several
markets), the daemon SIGKILLed twice while it works, and in the end exactly one run per distinct
valid message and none for the rest. (The 1,000-message count is in defs/test_message_sensors.py,
whose daemon stand-in is faster; this test is about real process deaths.)"""

import json
import time

import pika
import pytest

from rof_pipelines.adapters.inbox import Inbox
from rof_pipelines.adapters.messages import build_message
from rof_pipelines.adapters.rabbitmq import REASON_HEADER
from rof_pipelines.adapters.state_store import StateStore

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.rabbitmq]
MARKETS = ["binance:TONUSDT", "binance:BTCUSDT", "okx:BTCUSDT", "bybit:ETHUSDT"]


@pytest.fixture
def harness(pg_admin_dsn, rabbitmq_url):
    from rof_pipelines.bench.sensor import DaemonHarness

    harness = DaemonHarness(sensor_interval=2, max_messages_per_tick=60)
    try:
        yield harness
    finally:
        harness.close()


def test_thousand_messages_through_a_twice_killed_daemon(harness):
    rabbit = harness.rabbit
    valid = [
        build_message("task", market=MARKETS[i % 4], date=f"2026-10-{1 + i % 28:02d}") for i in range(240)
    ]
    rabbit.publish_many(valid)
    rabbit.publish_many(valid[::8])  # 30 duplicates: the same message ids again
    connection = pika.BlockingConnection(pika.URLParameters(rabbit.config.url.get_secret_value()))
    channel = connection.channel()
    for i in range(30):
        body = b"{broken" if i % 2 else json.dumps({"schema_version": 9, "kind": "task"}).encode()
        channel.basic_publish(
            "", rabbit.queue_name("task"), body, pika.BasicProperties(message_id=f"bad-{i}")
        )
    connection.close()

    def requested() -> int:
        return len({message_id for message_id, _ in harness.runs()})

    for _ in range(2):  # kill it while it is working, then start it again
        harness.start()
        before = requested()
        deadline = time.monotonic() + 180
        while requested() <= before and time.monotonic() < deadline:
            time.sleep(0.5)
        harness.kill()
    harness.start()
    deadline = time.monotonic() + 300
    while requested() < len(valid) and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(6)  # a few more ticks: nothing further may appear
    runs = harness.runs()
    harness.kill()

    message_ids = [message_id for message_id, _ in runs]
    with StateStore(harness.settings.state_storage) as store:
        inbox = Inbox(store).count("task")
    diagnosis = f"runs {len(message_ids)}, inbox {inbox}, queue {rabbit.queue_depths()}"
    assert len(message_ids) == len(set(message_ids)), f"a message ran twice ({diagnosis})"
    assert set(message_ids) == {m.message_id for m in valid}, (
        f"one run per distinct valid message ({diagnosis})"
    )
    dead = []
    connection = pika.BlockingConnection(pika.URLParameters(rabbit.config.url.get_secret_value()))
    channel = connection.channel()
    while (got := channel.basic_get(rabbit.queue_name("dead_letter"), auto_ack=True))[0] is not None:
        dead.append(got[1].headers or {})
    connection.close()
    assert len(dead) >= 30 and all(REASON_HEADER in headers for headers in dead)
