"""The RabbitMQ adapter against a real broker: topology, publish/drain, redelivery, dead-lettering with
a reason, unavailability, password hygiene, the ``rof publish`` command. Every test uses its own queue
prefix and deletes its queues and exchanges afterwards. The message schemas are tested without a broker."""

import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

import pika
import pika.exceptions as pex
import pytest
from typer.testing import CliRunner

from rof_pipelines.adapters.messages import (
    BackupMessage,
    QuotesUpdatedMessage,
    TaskMessage,
    build_message,
    parse_message,
)
from rof_pipelines.adapters.rabbitmq import (
    AMQP_ERRORS,
    ORIGINAL_QUEUE_HEADER,
    REASON_HEADER,
    DrainResult,
    RabbitMQ,
    Received,
)
from rof_pipelines.cli import app
from rof_pipelines.errors import (
    CircuitOpenError,
    ConfigError,
    MalformedMessage,
    NotFoundError,
    PermanentError,
    StoreUnavailableError,
)
from rof_pipelines.settings import PROJECT_ROOT, CircuitBreakerConfig, RabbitMQConfig

pytestmark = pytest.mark.rabbitmq

PASSWORD = "s3cr3t-Rabbit-Pw"
MARKET = "binance:TONUSDT"


def _messages(exc: BaseException) -> list[str]:
    """str and repr of an exception and of everything it was raised from."""
    seen: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 20:
        seen += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return seen


def _channel_call(url: str, fn: Callable[[Any], Any]) -> Any:
    """A raw pika call outside the adapter (setup, foreign publishers, clean-up)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return fn(connection.channel())
    finally:
        if connection.is_open:
            connection.close()


def _delete_prefix(url: str, prefix: str) -> None:
    rabbit = RabbitMQ(RabbitMQConfig(url=url), None, prefix)
    top = rabbit.topology
    for name in top.all_queues:
        _channel_call(url, lambda ch, name=name: ch.queue_delete(name))
    for name in (top.exchange, top.dead_letter_exchange):
        _channel_call(url, lambda ch, name=name: ch.exchange_delete(name))


@pytest.fixture
def prefix(rabbitmq_url: str) -> Iterator[str]:
    """A queue prefix of this test alone; its queues and exchanges are deleted afterwards."""
    name = f"rof_test_{secrets.token_hex(4)}"
    try:
        yield name
    finally:
        _delete_prefix(rabbitmq_url, name)


@pytest.fixture
def rabbit(rabbitmq_url: str, prefix: str) -> RabbitMQ:
    adapter = RabbitMQ(RabbitMQConfig(url=rabbitmq_url), CircuitBreakerConfig(), prefix)
    adapter.declare_topology()
    return adapter


def _raw_publish(url: str, queue: str, body: bytes, **properties: Any) -> None:
    """A foreign publisher writing straight into a queue (default exchange), bypassing the schemas."""
    _channel_call(
        url,
        lambda ch: ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2, **properties)),
    )


def _drain_all(rabbit: RabbitMQ, queue: str, max_messages: int = 100) -> DrainResult:
    batches: list[list[Received]] = []
    result = rabbit.drain(queue, max_messages, batches.append)
    assert len(batches) == (1 if result.received else 0)
    return result


# --- schemas (no broker) --------------------------------------------------------------------------


def test_messages_carry_version_id_kind_and_utc_time():
    task = build_message("task", market="Binance:tonusdt", date="2024-03-01", reason="test")
    assert isinstance(task, TaskMessage)
    assert (task.schema_version, task.kind, task.market, task.date) == (1, "task", MARKET, date(2024, 3, 1))
    assert uuid.UUID(task.message_id).version == 4
    assert task.created_at.tzinfo is UTC
    quotes = build_message(
        "quotes-updated", market=MARKET, start="2024-03-01T02:00:00+02:00", end="2024-03-02T00:00:00Z"
    )
    assert isinstance(quotes, QuotesUpdatedMessage)
    assert quotes.start == datetime(2024, 3, 1, tzinfo=UTC) and quotes.start.tzinfo is UTC
    assert isinstance(build_message("backup"), BackupMessage)
    assert build_message("backup").message_id != build_message("backup").message_id
    # A round trip through the body keeps everything.
    assert parse_message("task", task.to_body(), {"message_id": task.message_id}) == task


def _body(**fields: Any) -> bytes:
    return json.dumps({"schema_version": 1, "message_id": "m-1", **fields}).encode()


@pytest.mark.parametrize(
    ("queue", "body", "properties", "expected"),
    [
        ("tasks", b"{not json", None, "body is not valid JSON"),
        ("tasks", b"\xff\xfe", None, "body is not UTF-8"),
        ("tasks", b"[1, 2]", None, "body must be a JSON object, got list"),
        ("tasks", _body(schema_version=2, market=MARKET), None, "schema_version 2 is not supported"),
        (
            "tasks",
            json.dumps({"market": MARKET, "message_id": "x"}).encode(),
            None,
            "schema_version is missing",
        ),
        ("tasks", _body(kind="task"), None, "market: Field required"),
        ("tasks", _body(market="tonusdt"), None, "market: market must look like 'exchange:PAIR'"),
        ("tasks", _body(market=MARKET, date="2024-02-30"), None, "date: "),
        ("tasks", _body(market=MARKET, colour="red"), None, "colour: unexpected field"),
        (None, _body(kind="optimise", market=MARKET), None, "unknown kind 'optimise'"),
        ("tasks", _body(kind="backup"), None, "kind disagrees: queue expects 'task', body says 'backup'"),
        ("tasks", _body(market=MARKET), {"type": "backup"}, "AMQP type says 'backup'"),
        (None, _body(), None, "kind is missing"),
        ("backup", json.dumps({"schema_version": 1}).encode(), None, "message_id is missing"),
        ("backup", _body(), {"message_id": "m-2"}, "differs from the AMQP message_id ('m-2')"),
        ("backup", _body(), {"content_type": "text/plain"}, "content_type is 'text/plain'"),
        (
            "quotes.updated",
            _body(market=MARKET, start="2024-03-01T00:00:00", end="2024-03-02T00:00:00Z"),
            None,
            "start: Input should have timezone info",
        ),
        (
            "rof.quotes.updated",
            _body(market=MARKET, start="2024-03-02T00:00:00Z", end="2024-03-01T00:00:00Z"),
            None,
            "start (2024-03-02T00:00:00+00:00) must be before end",
        ),
    ],
)
def test_malformed_bodies_give_clear_reasons(queue, body, properties, expected):
    with pytest.raises(MalformedMessage) as info:
        parse_message(queue, body, properties)
    assert expected in info.value.reason
    assert "\n" not in info.value.reason
    assert isinstance(info.value, PermanentError)


def test_amqp_message_id_is_authoritative():
    body = json.dumps({"schema_version": 1, "kind": "backup"}).encode()
    assert (
        parse_message("backup", body, pika.BasicProperties(message_id="from-amqp")).message_id == "from-amqp"
    )
    agreeing = _body(kind="backup")
    assert parse_message(None, agreeing, {"message_id": "m-1"}).message_id == "m-1"
    with pytest.raises(MalformedMessage, match="unknown kind"):
        build_message("optimise")
    with pytest.raises(MalformedMessage, match="end: Field required"):
        build_message("quotes-updated", market=MARKET, start="2024-03-01T00:00:00Z")


def test_queue_names_and_prefix_validation():
    rabbit = RabbitMQ(RabbitMQConfig(url="amqp://guest:guest@127.0.0.1:1/"), None, "p1")
    assert (
        rabbit.queue_name("task") == rabbit.queue_name("tasks") == rabbit.queue_name("p1.tasks") == "p1.tasks"
    )
    assert rabbit.queue_name("quotes-updated") == rabbit.queue_name("quotes.updated") == "p1.quotes.updated"
    assert rabbit.queue_name("dead_letter") == "p1.dead_letter"
    for bad in ("other.tasks", "nope"):
        with pytest.raises(ValueError, match="unknown queue"):
            rabbit.queue_name(bad)
    with pytest.raises(ConfigError, match="queue_prefix"):
        RabbitMQ(RabbitMQConfig(), None, "bad prefix/")


# --- topology -------------------------------------------------------------------------------------


def test_declare_topology_is_idempotent(rabbit):
    top = rabbit.declare_topology()
    assert rabbit.declare_topology() == top
    assert sorted(top.all_queues) == sorted(
        f"{rabbit.queue_prefix}.{name}" for name in ("tasks", "quotes.updated", "backup", "dead_letter")
    )
    assert rabbit.queue_depths() == dict.fromkeys(top.all_queues, 0)
    assert rabbit.ping().count(".") >= 1  # the broker's version, e.g. 3.10.8


def test_conflicting_declaration_is_permanent(rabbitmq_url, prefix):
    rabbit = RabbitMQ(RabbitMQConfig(url=rabbitmq_url), CircuitBreakerConfig(fail_max=1), prefix)
    _channel_call(rabbitmq_url, lambda ch: ch.queue_declare(f"{prefix}.tasks", durable=False))
    with pytest.raises(PermanentError, match="PRECONDITION_FAILED") as info:
        rabbit.declare_topology()
    assert not isinstance(info.value, StoreUnavailableError)
    rabbit.ping()  # a permanent error never opens the circuit, even with fail_max=1


def test_missing_topology_is_reported(rabbitmq_url, prefix):
    rabbit = RabbitMQ(RabbitMQConfig(url=rabbitmq_url), None, prefix)
    with pytest.raises(NotFoundError, match="declare_topology"):
        rabbit.publish(build_message("backup"))  # no exchange yet
    with pytest.raises(NotFoundError, match="declare_topology"):
        rabbit.queue_depths()
    rabbit.declare_topology()
    _channel_call(rabbitmq_url, lambda ch: ch.queue_delete(f"{prefix}.backup"))
    with pytest.raises(PermanentError, match=r"NO_ROUTE|declare_topology"):  # unroutable: never silently lost
        rabbit.publish(build_message("backup"))


# --- publish and drain ----------------------------------------------------------------------------


def test_publish_then_drain_returns_the_same_messages(rabbit):
    sent = [
        build_message("task", market=MARKET, date="2024-03-01", experiment_id="exp-1", reason="test"),
        build_message("quotes-updated", market=MARKET, start="2024-03-01T00:00Z", end="2024-03-02T00:00Z"),
        build_message("backup", destination="default"),
    ]
    assert rabbit.publish_many(sent) == [m.message_id for m in sent]
    assert rabbit.queue_depths()[rabbit.queue_name("tasks")] == 1
    for message in sent:
        batches: list[list[Received]] = []
        result = rabbit.drain(message.kind, 10, batches.append)
        assert result.messages == [message]  # every field, the id and created_at included
        assert (result.dead_lettered, result.redelivered, result.remaining) == ([], 0, 0)
        [[received]] = batches
        delivery = received.delivery
        assert (received.message_id, delivery.message_id) == (message.message_id, message.message_id)
        assert delivery.properties.type == message.kind
        assert delivery.properties.delivery_mode == 2
        assert delivery.properties.content_type == "application/json"
        assert delivery.redelivered is False and delivery.delivery_tag >= 1
    assert set(rabbit.queue_depths().values()) == {0}
    assert _drain_all(rabbit, "tasks").received == 0  # an empty queue: on_batch is not called


def test_a_tick_takes_at_most_n_in_order(rabbit):
    sent = [build_message("task", market=MARKET, reason=f"n{i}") for i in range(5)]
    rabbit.publish_many(sent)
    assert rabbit.queue_depths()[rabbit.queue_name("task")] == 5
    first = _drain_all(rabbit, "task", max_messages=3)
    assert [m.message_id for m in first.messages] == [m.message_id for m in sent[:3]]
    assert first.remaining == 2
    second = _drain_all(rabbit, "task", max_messages=3)
    assert [m.message_id for m in second.messages] == [m.message_id for m in sent[3:]]
    assert second.remaining == 0


def test_unacked_messages_come_back_with_the_same_id(rabbit):
    """A crash before COMMIT: nothing was acked, the connection closes, the broker requeues."""
    sent = [build_message("task", market=MARKET, reason=f"n{i}") for i in range(3)]
    rabbit.publish_many(sent)
    with rabbit.tick() as tick:
        first = tick.get("tasks", 10)
        assert [d.message_id for d in first] == [m.message_id for m in sent]
        tick.ack(first[0])  # only the first was committed
    with rabbit.tick() as tick:
        again = tick.get("tasks", 10)
        assert [d.message_id for d in again] == [m.message_id for m in sent[1:]]
        assert all(d.redelivered for d in again)
        assert [d.parse() for d in again] == sent[1:]

    def failing_commit(batch: list[Received]) -> None:
        raise RuntimeError("COMMIT failed")

    with pytest.raises(RuntimeError, match="COMMIT failed"):
        rabbit.drain("tasks", 10, failing_commit)
    result = _drain_all(rabbit, "tasks")
    assert result.messages == sent[1:] and result.redelivered == 2
    assert rabbit.queue_depths()[rabbit.queue_name("tasks")] == 0


def test_crash_after_commit_before_ack_runs_nothing_twice(rabbit):
    """The recommended tick: inbox insert ON CONFLICT DO NOTHING -> COMMIT -> ack. Here the process
    dies between COMMIT and ack; the redelivery is absorbed by the inbox."""
    inbox: dict[str, Any] = {}
    inserted: list[str] = []
    sent = [
        build_message("quotes-updated", market=MARKET, start=f"2024-03-0{i}T00:00Z", end="2024-03-09T00:00Z")
        for i in (1, 2)
    ]
    rabbit.publish_many(sent)

    def commit(batch: list[Received]) -> None:
        for item in batch:
            if item.message is not None and item.message.message_id not in inbox:  # ON CONFLICT DO NOTHING
                inbox[item.message.message_id] = item.message
                inserted.append(item.message.message_id)

    def commit_then_crash(batch: list[Received]) -> None:
        commit(batch)
        raise SystemExit("killed after COMMIT, before ack")

    with pytest.raises(SystemExit):
        rabbit.drain("quotes.updated", 10, commit_then_crash)
    result = rabbit.drain("quotes.updated", 10, commit)
    assert result.redelivered == 2 and result.messages == sent
    assert inserted == [m.message_id for m in sent]  # each inserted once, although delivered twice
    assert rabbit.queue_depths()[rabbit.queue_name("quotes.updated")] == 0


# --- dead-lettering -------------------------------------------------------------------------------


def _dead_letters(rabbit: RabbitMQ) -> list[Any]:
    with rabbit.tick() as tick:
        deliveries = tick.get("dead_letter", 100)
        tick.ack(deliveries)
    return deliveries


def test_malformed_messages_go_to_the_dead_letter_queue_with_the_reason(rabbit, rabbitmq_url):
    queue = rabbit.queue_name("tasks")
    good = build_message("task", market=MARKET)
    _raw_publish(rabbitmq_url, queue, b"{not json", message_id="bad-json", headers={"x-trace": "t1"})
    _raw_publish(rabbitmq_url, queue, _body(schema_version=2, market=MARKET, message_id="bad-version"))
    rabbit.publish(good)
    _raw_publish(rabbitmq_url, queue, _body(kind="task"), message_id="m-1")
    seen: list[list[Received]] = []
    result = rabbit.drain("tasks", 10, seen.append)

    assert result.messages == [good]
    assert [r.message_id for r in result.dead_lettered] == ["bad-json", "bad-version", "m-1"]
    assert [r.message_id for r in seen[0]] == ["bad-json", "bad-version", good.message_id, "m-1"]
    assert rabbit.queue_depths()[queue] == 0
    dead = _dead_letters(rabbit)
    assert [d.message_id for d in dead] == ["bad-json", "bad-version", "m-1"]
    reasons = [d.headers[REASON_HEADER] for d in dead]
    assert "body is not valid JSON" in reasons[0]
    assert "schema_version 2 is not supported" in reasons[1]
    assert "market: Field required" in reasons[2]
    assert {d.headers[ORIGINAL_QUEUE_HEADER] for d in dead} == {queue}
    assert dead[0].body == b"{not json" and dead[0].headers["x-trace"] == "t1"  # the original, untouched
    assert dead[0].properties.delivery_mode == 2
    assert rabbit.queue_depths() == dict.fromkeys(rabbit.topology.all_queues, 0)


def test_a_crash_while_dead_lettering_duplicates_never_loses(rabbit, rabbitmq_url, monkeypatch):
    """Copy to the DLQ (confirmed) first, ack second: dying in between leaves two copies, not none."""
    queue = rabbit.queue_name("backup")
    _raw_publish(rabbitmq_url, queue, b"garbage", message_id="poison")
    with rabbit.tick() as tick:
        [delivery] = tick.get("backup", 10)
        monkeypatch.setattr(
            tick._channel, "basic_ack", lambda *a, **k: (_ for _ in ()).throw(OSError("killed"))
        )
        with pytest.raises(StoreUnavailableError, match="killed"):
            tick.dead_letter(delivery, "body is not valid JSON")
    monkeypatch.undo()
    result = _drain_all(rabbit, "backup")
    assert [r.message_id for r in result.dead_lettered] == ["poison"] and result.redelivered == 1
    dead = _dead_letters(rabbit)
    assert [d.message_id for d in dead] == ["poison", "poison"]
    assert dead[1].headers["x-rof-redelivered"] is True
    assert rabbit.queue_depths()[queue] == 0


def test_broker_dead_lettering_also_lands_in_the_dead_letter_queue(rabbit):
    rabbit.publish(build_message("backup"))
    with rabbit.tick() as tick:
        [delivery] = tick.get("backup", 1)
        tick._channel.basic_reject(delivery.delivery_tag, requeue=False)  # via x-dead-letter-exchange
    [dead] = _dead_letters(rabbit)
    assert dead.message_id == delivery.message_id and "x-death" in dead.headers
    assert dead.parse().message_id == delivery.message_id  # the dead-letter queue takes any kind


# --- unavailability and secrets -------------------------------------------------------------------


def test_unreachable_broker_then_circuit_opens():
    config = RabbitMQConfig(url=f"amqp://rof:{PASSWORD}@127.0.0.1:1/%2F")
    rabbit = RabbitMQ(config, CircuitBreakerConfig(fail_max=2, reset_timeout="60s"), "rof_unreachable")
    errors: list[BaseException] = []

    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:
        rabbit.ping()
    assert type(info.value) is StoreUnavailableError
    assert time.monotonic() - started < 10
    assert "127.0.0.1:1" in str(info.value) and "rabbitmq" in str(info.value)
    errors.append(info.value)

    started = time.monotonic()
    with pytest.raises(CircuitOpenError) as info:  # the fail_max-th failure trips the breaker
        rabbit.drain("tasks", 10, lambda batch: None)
    assert time.monotonic() - started < 10
    errors.append(info.value)

    started = time.monotonic()
    for call in (
        rabbit.declare_topology,
        lambda: rabbit.publish(build_message("backup")),
        rabbit.tick().__enter__,
    ):
        with pytest.raises(CircuitOpenError) as info:
            call()
        errors.append(info.value)
    assert time.monotonic() - started < 0.5, "an open circuit fails fast"

    assert PASSWORD not in rabbit.describe() and PASSWORD not in repr(rabbit)
    assert "rof:***@127.0.0.1:1" in rabbit.describe()
    for error in errors:
        for text in _messages(error):
            assert PASSWORD not in text


def test_circuit_half_opens_and_the_sensor_resumes(rabbitmq_url, prefix):
    breaker = CircuitBreakerConfig(fail_max=1, reset_timeout="1s")
    down = RabbitMQ(RabbitMQConfig(url="amqp://guest:guest@127.0.0.1:1/%2F"), breaker, prefix)
    up = RabbitMQ(RabbitMQConfig(url=rabbitmq_url), breaker, prefix)
    with pytest.raises(CircuitOpenError):
        down.ping()
    with pytest.raises(CircuitOpenError):  # one breaker per service: the sensor skips its tick
        up.drain("tasks", 10, lambda batch: None)
    time.sleep(1.2)
    up.declare_topology()  # the trial call succeeds and closes the circuit
    assert _drain_all(up, "tasks").received == 0


@pytest.mark.parametrize(
    ("raised", "expected", "hint"),
    [
        (pex.UnroutableError([]), PermanentError, "no queue bound: run declare_topology() first"),
        (pex.NackError([]), StoreUnavailableError, "the broker refused the message; retry later"),
        (pex.ChannelClosedByBroker(404, "NOT_FOUND - no queue"), NotFoundError, "run declare_topology()"),
        (pex.ChannelClosedByBroker(406, "PRECONDITION_FAILED"), PermanentError, "PRECONDITION_FAILED"),
        (pex.ConnectionClosedByBroker(320, "CONNECTION_FORCED"), StoreUnavailableError, "CONNECTION_FORCED"),
        (pex.AMQPConnectionError(ConnectionRefusedError(111, "refused")), StoreUnavailableError, "refused"),
        (EOFError("gone"), StoreUnavailableError, "gone"),
        (ValueError("odd"), PermanentError, "odd"),
    ],
)
def test_pika_errors_follow_the_amqp_table_and_name_the_operation(raised, expected, hint):
    rabbit = RabbitMQ(RabbitMQConfig(url=f"amqp://rof:{PASSWORD}@127.0.0.1:1/%2F"), None, "rof_table")

    def fail() -> None:
        raise raised

    with pytest.raises(expected) as info:
        rabbit._call(fail, operation="publish")
    assert type(info.value) is expected and hint in str(info.value)
    assert (info.value.service, info.value.operation) == ("rabbitmq", "publish")
    assert PASSWORD not in str(info.value)
    assert AMQP_ERRORS.table()[-1] == ("anything else", "PermanentError", "")


def test_refused_credentials_are_permanent_and_hidden(rabbitmq_url):
    parts = urlsplit(rabbitmq_url)
    wrong = parts._replace(
        netloc=f"{parts.username}:{PASSWORD}@{parts.hostname}:{parts.port or 5672}"
    ).geturl()
    rabbit = RabbitMQ(RabbitMQConfig(url=wrong), CircuitBreakerConfig(fail_max=1), "rof_auth")
    for _ in range(2):  # permanent: the circuit stays closed, the reason stays clear
        with pytest.raises(PermanentError, match="ACCESS_REFUSED") as info:
            rabbit.ping()
        assert not isinstance(info.value, StoreUnavailableError)
        assert "password" in str(info.value)
        for text in _messages(info.value):
            assert PASSWORD not in text


# --- the command line and throughput --------------------------------------------------------------


def _rof(args: list[str], url: str, tmp_path: Any) -> subprocess.CompletedProcess[str]:
    empty = tmp_path / "empty.yaml"  # every setting at its default, the URL from the environment
    empty.write_text("")
    env = {**os.environ, "ROF_CONFIG": str(empty), "RABBITMQ_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "rof_pipelines.cli", "publish", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_rof_publish_end_to_end(rabbitmq_url, prefix, tmp_path):
    done = _rof(
        [
            "task",
            "--market",
            "Binance:tonusdt",
            "--date",
            "2024-03-01",
            "--reason",
            "cli",
            "--queue-prefix",
            prefix,
        ],
        rabbitmq_url,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    task_id = done.stdout.strip()
    assert f"{prefix}.tasks" in done.stderr and "guest:***@" in done.stderr
    done = _rof(
        ["quotes-updated", "-m", MARKET, "--date", "2024-03-01", "--queue-prefix", prefix],
        rabbitmq_url,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    quotes_id = done.stdout.strip()

    rabbit = RabbitMQ(RabbitMQConfig(url=rabbitmq_url), None, prefix)
    [task] = _drain_all(rabbit, "tasks").messages
    assert isinstance(task, TaskMessage)
    assert (task.message_id, task.market, task.date, task.reason) == (
        task_id,
        MARKET,
        date(2024, 3, 1),
        "cli",
    )
    [quotes] = _drain_all(rabbit, "quotes.updated").messages
    assert isinstance(quotes, QuotesUpdatedMessage) and quotes.message_id == quotes_id
    assert (quotes.start, quotes.end) == (datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))

    done = _rof(["task", "--queue-prefix", prefix], rabbitmq_url, tmp_path)  # an error exits 2, says why
    assert done.returncode == 2 and "market: Field required" in done.stderr, done.stderr

    runner = CliRunner()
    for args, expected in [
        (["backup", "--market", MARKET], "--market does not apply to backup"),
        (["optimise", "-m", MARKET], "KIND must be one of"),
        (["quotes-updated", "-m", MARKET, "--date", "2024-03-01", "--end", "2024-03-02"], "either --date"),
        (["task", "-m", MARKET, "--date", "2024-02-30"], "bad date"),
    ]:
        result = runner.invoke(app, ["publish", *args, "--queue-prefix", prefix])
        assert result.exit_code == 2 and expected in result.output, result.output
    result = runner.invoke(
        app, ["publish", "quotes-updated", "-m", MARKET, "--start", "2024-03-02", "--end", "2024-03-01"]
    )
    assert isinstance(result.exception, MalformedMessage) and "must be before end" in str(result.exception)
    assert rabbit.queue_depths() == dict.fromkeys(rabbit.topology.all_queues, 0)


def test_throughput_publish_and_drain_1000(rabbit, capsys):
    count = 1000
    messages = [build_message("task", market=MARKET, reason=f"n{i}") for i in range(count)]
    started = time.perf_counter()
    rabbit.publish_many(messages)
    published = time.perf_counter() - started
    received: list[str] = []
    started = time.perf_counter()
    while True:
        result = rabbit.drain("tasks", 250, lambda batch: None)
        if not result.received:
            break
        received += [m.message_id for m in result.messages]
    drained = time.perf_counter() - started
    assert received == [m.message_id for m in messages]
    with capsys.disabled():
        print(
            f"\nrabbitmq: published {count} confirmed in {published:.2f}s ({count / published:,.0f}/s), "
            f"drained+acked in {drained:.2f}s ({count / drained:,.0f}/s)"
        )


def test_an_unusable_body_id_is_not_put_on_the_dead_letter_copy(rabbit, rabbitmq_url):
    """A 300-character id found in the body cannot be an AMQP property: copying it would fail the
    dead-lettering, and so the drain, on every tick."""
    queue = rabbit.queue_name("tasks")
    _raw_publish(rabbitmq_url, queue, _body(message_id="x" * 300, market=MARKET))
    rabbit.publish(good := build_message("task", market=MARKET, date="2024-03-01"))
    result = _drain_all(rabbit, "tasks")
    assert result.messages == [good] and len(result.dead_lettered) == 1
    [dead] = _dead_letters(rabbit)
    assert dead.message_id is None and "message_id must be 1-128 characters" in dead.headers[REASON_HEADER]
    assert rabbit.queue_depths()[queue] == 0
