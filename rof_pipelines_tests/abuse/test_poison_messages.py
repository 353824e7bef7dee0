"""No poison message can wedge a queue sensor. Each case first shows the hazard is real, then what
happens now: the message is dead-lettered with the reason, the messages after it still run, and no
message asks for more than ``max_runs_per_message`` runs. Real RabbitMQ and PostgreSQL throughout;
the sensor is driven by the small daemon stand-in of defs/test_message_sensors.py."""

import json
import secrets
import string
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pika
import pytest
import sqlalchemy as sa
import yaml
from dagster import instance_for_test
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rof_pipelines.adapters.inbox import Inbox
from rof_pipelines.adapters.messages import (
    MAX_BODY_BYTES,
    Message,
    MessageLimits,
    build_message,
    check_runnable,
    is_message_id,
    parse_message,
)
from rof_pipelines.adapters.rabbitmq import REASON_HEADER, Delivery, RabbitMQ, Received
from rof_pipelines.adapters.resources import PostgresStateStoreResource, RabbitMQResource, RofSettings
from rof_pipelines.adapters.state_store import StateStore
from rof_pipelines.cli import app
from rof_pipelines.errors import MalformedMessage, PartitionOutOfRange, RefusedMessages, UnrunnableMessage
from rof_pipelines.partitions import HISTORY_START, last_partition_day, market_day_key
from rof_pipelines.settings import load_settings
from rof_pipelines_tests.defs.test_message_sensors import (
    Daemon,
    dead_letters,
    publish_raw,
    quotes_updated_sensor,
    tasks_sensor,
)

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

MARKET = "binance:TONUSDT"
MAX_DAYS, MAX_RUNS = 60, 10  # max_runs below max_days, so each limit can be hit on its own


@pytest.fixture
def env(tmp_path: Path, pg_database, rabbitmq_url) -> Iterator[dict[str, Any]]:
    """A private queue prefix, a fresh state store and Dagster instance, and the limits above."""
    prefix = f"rof_poison_{secrets.token_hex(4)}"
    config_path = tmp_path / "config.yaml"
    state = {
        "db_host": pg_database["db_host"],
        "db_user": pg_database["db_user"],
        "db_name": pg_database["db_name"],
        "db_password": "",
        "schema": "rof_state",
    }
    rabbitmq = {
        "url": rabbitmq_url,
        "queue_prefix": prefix,
        "max_days_per_message": MAX_DAYS,
        "max_runs_per_message": MAX_RUNS,
    }
    config_path.write_text(yaml.safe_dump({"state_storage": state, "storage": {"rabbitmq": rabbitmq}}))
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
                "config_path": config_path,
            }
    finally:
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
        channel = connection.channel()
        for queue in rabbit.topology.all_queues:
            channel.queue_delete(queue)
        for exchange in (rabbit.topology.exchange, rabbit.topology.dead_letter_exchange):
            channel.exchange_delete(exchange)
        connection.close()


def _json(message_id: str, **fields: Any) -> bytes:
    return json.dumps({"schema_version": 1, "message_id": message_id, **fields}).encode()


def _valid_tasks(n: int) -> list[Message]:
    return [build_message("task", market=MARKET, date=f"2026-10-{1 + i:02d}") for i in range(n)]


def _reasons(url: str, queue: str) -> dict[str, str]:
    """message id -> reject reason of everything in the dead-letter queue (consumed)."""
    out = {}
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
        out[got[1].message_id] = (got[1].headers or {}).get(REASON_HEADER)
    connection.close()
    return out


def _run_ids_per_message(daemon: Daemon) -> Counter[str]:
    return Counter(request.tags["rof/message_id"] for request in daemon.runs.values())


def _tick_until_idle(daemon: Daemon, sensor, rabbit: RabbitMQ, kind: str, ticks: int = 5) -> None:
    """Tick (failing the test on any exception) until the queue is empty and a tick asks for nothing."""
    for _ in range(ticks):
        data = daemon.tick(sensor)
        if not data.run_requests and rabbit.queue_depths()[rabbit.queue_name(kind)] == 0:
            return
    raise AssertionError(f"still busy after {ticks} ticks")


# --- the four reported defects -----------------------------------------------------------------------


def test_nested_brackets_body_is_dead_lettered_and_later_messages_run(env):
    rabbit, url = env["rabbit"], env["url"]
    poison = b"[" * 200_000  # about 200 KB: under the 1 MiB cap
    assert len(poison) < MAX_BODY_BYTES
    with pytest.raises(RecursionError):  # the hazard: the JSON decoder recursing once per bracket
        json.loads(poison)
    publish_raw(url, rabbit.queue_name("task"), poison, message_id="poison-brackets")
    valid = _valid_tasks(5)
    rabbit.publish_many(valid)

    daemon = Daemon(env["instance"], env["resources"])
    _tick_until_idle(daemon, tasks_sensor, rabbit, "task")

    assert set(daemon.runs) == {m.message_id for m in valid}
    reasons = _reasons(url, rabbit.topology.dead_letter_queue)
    assert list(reasons) == ["poison-brackets"]
    assert "JSON nests 200000 levels deep, more than 32" in reasons["poison-brackets"]
    with StateStore(env["settings"].state_storage) as store:
        assert Inbox(store).count("task") == 5


def test_task_before_history_start_never_reaches_the_inbox(env):
    rabbit, url = env["rabbit"], env["url"]
    ancient = build_message("task", market=MARKET, date="1900-01-01")  # a valid schema, a day we lack
    with pytest.raises(PartitionOutOfRange):  # the hazard: committed, it failed every later tick
        market_day_key(MARKET, ancient.date)
    today = build_message("task", market=MARKET, date=datetime.now(UTC).date())  # no partition yet
    valid = _valid_tasks(3)
    rabbit.publish_many([ancient, today, *valid])

    daemon = Daemon(env["instance"], env["resources"])
    _tick_until_idle(daemon, tasks_sensor, rabbit, "task")

    assert set(daemon.runs) == {m.message_id for m in valid}
    assert daemon.cursor is not None
    reasons = _reasons(url, rabbit.topology.dead_letter_queue)
    assert set(reasons) == {ancient.message_id, today.message_id}
    assert (
        f"date 1900-01-01 is before the first partition day {HISTORY_START} (storage.history_start)"
        in reasons[ancient.message_id]
    )
    assert "has no partition yet" in reasons[today.message_id]
    with StateStore(env["settings"].state_storage) as store:
        inbox = Inbox(store)
        assert inbox.count("task") == 3 and inbox.quarantined() == []


def test_century_long_quotes_range_asks_for_at_most_max_runs(env):
    rabbit, url = env["rabbit"], env["url"]
    century = _json(
        "poison-century",
        kind="quotes.updated",
        market=MARKET,
        start="2000-01-01T00:00:00Z",
        end="2100-01-01T00:00:00Z",
        created_at="2026-12-01T00:00:00Z",
    )
    assert len(century) < 240  # a couple of hundred bytes asked for 36,525 runs
    decades = build_message(  # all in the past, so only the range limit refuses it
        "quotes.updated", market=MARKET, start="2000-01-01T00:00:00Z", end="2026-01-01T00:00:00Z"
    )
    too_many_runs = build_message(  # 20 days: inside max_days_per_message, over max_runs_per_message
        "quotes.updated", market=MARKET, start="2026-10-01T00:00:00Z", end="2026-10-21T00:00:00Z"
    )
    valid = build_message(
        "quotes.updated", market=MARKET, start="2026-10-01T12:00:00Z", end="2026-10-06T00:00:00Z"
    )
    publish_raw(url, rabbit.queue_name("quotes.updated"), century, message_id="poison-century")
    rabbit.publish_many([decades, too_many_runs, valid])

    daemon = Daemon(env["instance"], env["resources"])
    _tick_until_idle(daemon, quotes_updated_sensor, rabbit, "quotes.updated")

    per_message = _run_ids_per_message(daemon)
    assert per_message == {valid.message_id: 5}
    assert max(per_message.values()) <= MAX_RUNS and daemon.requested == 5
    reasons = _reasons(url, rabbit.topology.dead_letter_queue)
    assert "end 2100-01-01T00:00:00+00:00 is in the future" in reasons["poison-century"]
    assert f"more than storage.rabbitmq.max_days_per_message ({MAX_DAYS})" in reasons[decades.message_id]
    assert (
        f"asks for 20 runs, more than storage.rabbitmq.max_runs_per_message ({MAX_RUNS})"
        in reasons[too_many_runs.message_id]
    )


def test_rof_publish_uses_the_configured_prefix_and_says_where(env, monkeypatch):
    rabbit = env["rabbit"]
    monkeypatch.setenv("ROF_CONFIG", str(env["config_path"]))
    monkeypatch.delenv("RABBITMQ_URL", raising=False)
    runner = CliRunner()

    result = runner.invoke(app, ["publish", "task", "-m", MARKET, "--date", "2026-10-05"])

    assert result.exit_code == 0, result.output
    message_id = result.stdout.strip()
    assert is_message_id(message_id)
    queue = f"{env['prefix']}.tasks"
    assert f"published task message {message_id} to queue {queue}" in result.stderr
    assert "guest:***@" in result.stderr and ":guest@" not in result.output  # no password
    [received] = rabbit.drain("task", 10, lambda batch: None).messages
    assert received.message_id == message_id  # in the queue the sensors read, not rof.tasks

    refused = runner.invoke(app, ["publish", "task", "-m", MARKET, "--date", "1900-01-01"])
    assert refused.exit_code == 2 and "not published" in refused.stderr
    assert "before the first partition day" in refused.stderr
    assert rabbit.queue_depths()[queue] == 0


# --- rows that got into the inbox anyway -------------------------------------------------------------


def _inbox_directly(store: StateStore, messages: list[Message]) -> None:
    """Commit messages the way a consumer without the checks did: straight into the inbox."""
    props = pika.BasicProperties()
    Inbox(store).add([Received(Delivery("q", i, False, props, b""), m, None) for i, m in enumerate(messages)])


def test_an_inbox_row_that_cannot_run_is_quarantined_and_the_cursor_moves_on(env):
    with StateStore(env["settings"].state_storage) as store:
        before = [build_message("task", market=MARKET, date="2026-10-01")]
        ancient = build_message("task", market=MARKET, date="1900-01-01")
        after = _valid_tasks(3)
        _inbox_directly(store, [*before, ancient, *after])
        inbox = Inbox(store)
        with store.engine.begin() as connection:  # and a row whose payload is not a task at all
            connection.execute(
                sa.insert(inbox.table).values(
                    message_id="garbled", kind="task", market=None, payload={"x": 1}
                )
            )
        late = build_message("task", market=MARKET, date="2026-10-09")
        _inbox_directly(store, [late])
        century = build_message(
            "quotes.updated", market=MARKET, start="2000-01-01T00:00:00Z", end="2100-01-01T00:00:00Z"
        )
        _inbox_directly(store, [century])

    daemon = Daemon(env["instance"], env["resources"])
    first = daemon.tick(tasks_sensor)
    assert {r.run_key for r in first.run_requests} == {m.message_id for m in [*before, *after, late]}
    again = daemon.tick(tasks_sensor)
    assert again.run_requests == [] and again.skip_message  # quarantined rows are not retried
    quotes = daemon.tick(quotes_updated_sensor)
    assert quotes.run_requests == [] and quotes.cursor is not None

    with StateStore(env["settings"].state_storage) as store:
        quarantined = {row.message_id: reason for row, reason in Inbox(store).quarantined()}
    assert set(quarantined) == {ancient.message_id, "garbled", century.message_id}
    assert "1900-01-01 is before the first partition day" in quarantined[ancient.message_id]
    assert "ValidationError" in quarantined["garbled"]
    runs = (last_partition_day() - date(2000, 1, 1)).days + 1  # every past day of the century
    assert quarantined[century.message_id] == (
        f"asks for {runs} runs, more than storage.rabbitmq.max_runs_per_message ({MAX_RUNS})"
    )


def test_a_value_postgres_refuses_is_dead_lettered_not_retried(env):
    """A gap in the checks (here: a NUL character slipped past them) costs one message, not the queue."""
    rabbit, url = env["rabbit"], env["url"]
    messages = _valid_tasks(4)
    rabbit.publish_many(messages)
    slipped = messages[1]

    with StateStore(env["settings"].state_storage) as store:
        inbox = Inbox(store)

        def store_with_a_gap(batch: list[Received]) -> None:
            inbox.add(
                [
                    Received(item.delivery, item.message.model_copy(update={"reason": "a\x00b"}), None)
                    if item.message_id == slipped.message_id
                    else item
                    for item in batch
                ]
            )

        result = rabbit.drain("task", 10, store_with_a_gap)
        assert [item.message_id for item in result.dead_lettered] == [slipped.message_id]
        assert inbox.count("task") == 3
        with pytest.raises(RefusedMessages) as refused:  # and the inbox names the one it refused
            _inbox_directly(store, [messages[0].model_copy(update={"message_id": "n", "reason": "\x00"})])
        [why] = refused.value.reasons.values()
        assert why.startswith("unsupported Unicode escape")
    assert rabbit.queue_depths()[rabbit.queue_name("task")] == 0
    reasons = _reasons(url, rabbit.topology.dead_letter_queue)
    assert "the inbox could not store it: unsupported Unicode escape" in reasons[slipped.message_id]


def test_a_message_whose_properties_cannot_be_resent_still_leaves_its_queue(env):
    rabbit, url = env["rabbit"], env["url"]
    queue = rabbit.queue_name("backup")
    publish_raw(url, queue, b"garbage", message_id="unsendable")
    publish_raw(url, queue, b"garbage", message_id="hopeless")
    with rabbit.tick() as tick:
        first, second = tick.get("backup", 10)
        odd = pika.BasicProperties(message_id="unsendable", headers={"x-odd": object()})
        tick.dead_letter(Delivery(queue, first.delivery_tag, False, odd, first.body), "bad")
        hopeless = pika.BasicProperties(message_id="h" * 300)  # longer than an AMQP short string
        tick.dead_letter(Delivery(queue, second.delivery_tag, False, hopeless, second.body), "bad")
    assert rabbit.queue_depths()[queue] == 0
    headers = [h for _, h in dead_letters(url, rabbit.topology.dead_letter_queue)]
    with_reason = [h for h in headers if h.get(REASON_HEADER) == "bad"]
    by_the_broker = [h for h in headers if "x-death" in h and REASON_HEADER not in h]
    assert len(with_reason) == 1 and "x-odd" not in with_reason[0]  # the copy without the odd header
    assert len(by_the_broker) == 1  # rejected: the queue's own dead-letter exchange took it


# --- parse_message under fuzzing ---------------------------------------------------------------------

_LIMITS = MessageLimits(first_day=HISTORY_START, last_day=last_partition_day())
_KINDS = [None, "task", "tasks", "quotes.updated", "backup", "rof.tasks"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=12,
)


@st.composite
def deeply_nested(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(1, 3000) | st.sampled_from([33, 999, 1001, 50_000, 200_000]))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'[{"k":', b"}]")]))
    middle = draw(st.sampled_from([b"1", b'"x"', b"", b"[]"]))
    closed = draw(st.booleans())
    return opener * depth + middle + (closer * depth if closed else b"")


# Offsets rather than st.timezones(): the extremes (year 1 at +05:00) are what break conversions.
_offsets = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
field_values = (
    json_values
    | st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)).map(date.isoformat)
    | st.datetimes(timezones=_offsets | st.none()).map(datetime.isoformat)
    | st.text(alphabet=string.printable + "\x00\ud800é:", max_size=300)
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.sampled_from(["binance:TONUSDT", "a:" + "B" * 200, "x:y\n", "1e400", 1e308, -0.0])
)


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    """A valid message with fields replaced, added or dropped, sometimes re-serialised oddly."""
    message = draw(
        st.sampled_from(
            [
                {"kind": "task", "market": MARKET, "date": "2026-10-01", "reason": "r", "experiment_id": "e"},
                {
                    "kind": "quotes.updated",
                    "market": MARKET,
                    "start": "2026-10-01T00:00:00Z",
                    "end": "2026-10-03T00:00:00Z",
                },
                {"kind": "backup"},
            ]
        )
    )
    data: dict[str, Any] = {
        "schema_version": 1,
        "message_id": "m-1",
        "created_at": "2026-11-01T00:00:00+00:00",
        **message,
    }
    fields = [*data, "destination", "target", "colour"]
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.sampled_from(fields))
        if draw(st.booleans()):
            data[field] = draw(field_values)
        else:
            data.pop(field, None)
    text = json.dumps(data, ensure_ascii=draw(st.booleans()), allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


bodies = (
    st.binary(max_size=300)
    | json_values.map(lambda value: json.dumps(value).encode())
    | deeply_nested()
    | mutated_messages()
    | mutated_messages().flatmap(lambda body: st.integers(0, max(len(body) - 1, 0)).map(lambda n: body[:n]))
)
properties = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "message_id": st.none() | st.text(max_size=200) | st.just("m-1") | st.integers(),
        "type": st.none() | st.sampled_from(["task", "backup", "quotes.updated", "odd"]) | st.integers(),
        "content_type": st.none()
        | st.sampled_from(["application/json", "text/plain", "APPLICATION/JSON; x"]),
    },
)


@settings(
    max_examples=10_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(kind=st.sampled_from(_KINDS), body=bodies, props=properties)
def test_parse_message_only_ever_returns_a_valid_message_or_raises_malformed(kind, body, props):
    try:
        message = parse_message(kind, body, props)
    except MalformedMessage as exc:
        assert exc.reason
        assert exc.message_id is None or is_message_id(exc.message_id)  # fit for an AMQP property
        return
    assert is_message_id(message.message_id)
    assert parse_message(message.kind, message.to_body(), {"message_id": message.message_id}) == message
    try:
        check_runnable(message, _LIMITS)
    except UnrunnableMessage as exc:
        assert exc.reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 200_000, "JSON nests 200000 levels deep, more than 32"),
        (b'{"a":' * 100_000, "JSON nests 100000 levels deep"),
        (
            b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "b": 1}',
            "schema_version is missing",
        ),  # in a string
        (b"[" * 33 + b"]" * 33, "JSON nests 33 levels deep"),
        (b"[" * 32 + b"]" * 32, "body must be a JSON object, got list"),
        (b"1" * 5000, "Exceeds the limit (4300 digits)"),
        (b"NaN", "NaN is not a JSON number"),
        (_json("m", kind="task", market=MARKET, created_at="0001-01-01T00:00:00+05:00"), "outside the range"),
        (_json("m", kind="task", market=MARKET, reason="a\u0000b"), "NUL character or a lone surrogate"),
        (_json("m", kind="task", market=MARKET, reason="\ud800"), "NUL character or a lone surrogate"),
        (_json("m", kind="task", market="a:" + "B" * 200), "more than 100"),
    ],
)
def test_each_decoder_hazard_is_a_malformed_message(body, reason):
    with pytest.raises(MalformedMessage) as info:
        parse_message("task", body)
    assert reason in info.value.reason


def test_a_quotes_range_reaching_into_today_runs_its_finished_days():
    limits = MessageLimits(first_day=HISTORY_START, last_day=date(2026, 11, 30))
    into_today = build_message(
        "quotes.updated", market=MARKET, start="2026-11-29T00:00Z", end="2026-12-01T05:00Z"
    )
    assert check_runnable(into_today, limits) == into_today
    assert into_today.run_days(limits.last_day) == [date(2026, 11, 29), date(2026, 11, 30)]
    tomorrow = into_today.model_copy(update={"end": datetime(2026, 12, 2, 0, 0, 1, tzinfo=UTC)})
    with pytest.raises(UnrunnableMessage, match="is in the future"):
        check_runnable(tomorrow, limits)
    assert limits.today == limits.last_day + timedelta(days=1)
