"""The alerts sensor in process, tick by tick, against real local receivers and (for delivery) the real
PostgreSQL state store: a channel that is down is retried with growing pauses while the others deliver
on the first tick; a receiver's Retry-After is honoured; old notices and removed channels are given
up with the reason; a custom rule fires on a planted figure only, waits its ``for:`` and resolves;
invalid rules are refused at load and through hot reload (the last valid config stays in force);
repeated and concurrent evaluations never notify twice."""

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import (
    DagsterInstance,
    Field,
    OpExecutionContext,
    build_sensor_context,
    instance_for_test,
    job,
    op,
)

from rof_pipelines.adapters.alerts.outbox import Outcome, enqueue
from rof_pipelines.adapters.alerts.snapshot import SnapshotSource
from rof_pipelines.adapters.resources import (
    InMemoryStateStoreResource,
    PostgresStateStoreResource,
    RofSettings,
    StateStoreResource,
)
from rof_pipelines.core.alerts.model import Delivery
from rof_pipelines.defs.ops.alerts import build_alerts_sensor
from rof_pipelines.defs.ops.sensors import config_reload_sensor
from rof_pipelines.errors import ConfigError
from rof_pipelines.settings import load_settings
from rof_pipelines_tests.alert_receivers import HttpReceiver, free_port

MARKET_LOW = "binance:TONUSDT"
MARKET_HIGH = "binance:DOGEUSDT"


@op(config_schema={"fail": Field(bool, default_value=True)})
def flaky_step(context: OpExecutionContext) -> None:
    if context.op_config["fail"]:
        raise RuntimeError("planted failure for the alerting tests")


@job
def flaky() -> None:
    flaky_step()


def run_flaky(instance: DagsterInstance, fail: bool = True) -> None:
    """A finished run of ``flaky``: failed (the run_failed rule fires) or succeeded (it resolves)."""
    result = flaky.execute_in_process(
        instance=instance,
        run_config={"ops": {"flaky_step": {"config": {"fail": fail}}}},
        raise_on_error=False,
    )
    assert result.success is not fail


def hook(receiver: HttpReceiver, path: str = "/hook", timeout: str = "1s") -> dict[str, Any]:
    return {"type": "webhook", "url": receiver.url + path, "timeout": timeout}


class AlertingHarness:
    """A config file, the settings and state store resources bound to it, and the real alerts sensor
    evaluated in process on a test Dagster instance."""

    def __init__(
        self,
        tmp_path: Path,
        instance: DagsterInstance,
        state_storage: dict[str, Any] | None,
        alerting: dict[str, Any],
        memory_store: InMemoryStateStoreResource | None = None,
    ) -> None:
        self.path = tmp_path / "config.yaml"
        self.data_dir = tmp_path / "data"
        self.state_storage = state_storage
        self.instance = instance
        self.write(alerting)
        self.settings = RofSettings(config_path=str(self.path))
        self.store_resource: StateStoreResource = memory_store or PostgresStateStoreResource(
            settings=self.settings
        )
        self.sensor = build_alerts_sensor(self.settings.load())
        self.reload_cursor: str | None = None

    def config(self, alerting: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {"storage": {"data_dir": str(self.data_dir)}, "alerting": alerting}
        if self.state_storage is not None:
            data["state_storage"] = self.state_storage
        return data

    def write(self, alerting: dict[str, Any]) -> None:
        self.path.write_text(yaml.safe_dump(self.config(alerting), sort_keys=False))

    def resources(self) -> dict[str, Any]:
        return {"settings": self.settings, "state_store": self.store_resource}

    def tick(self) -> tuple[str, float]:
        """One evaluation of alerts_sensor: its skip message and how long it took."""
        started = time.monotonic()
        with build_sensor_context(instance=self.instance, resources=self.resources()) as context:
            result = self.sensor(context)
        elapsed = time.monotonic() - started
        return str(getattr(result, "skip_message", result)), elapsed

    def reload(self) -> str:
        """One tick of config_reload_sensor (keeping its cursor between ticks, as the daemon does)."""
        with build_sensor_context(
            instance=self.instance, resources=self.resources(), cursor=self.reload_cursor
        ) as context:
            result = config_reload_sensor(context)
            self.reload_cursor = context.cursor
        return str(getattr(result, "skip_message", result))

    def deliveries(self, channel: str | None = None) -> list[Delivery]:
        with self.store_resource.open() as store:
            rows = store.alerts.deliveries(limit=1000)
        return [row for row in rows if channel is None or row.channel == channel]

    def states(self, rule: str | None = None) -> list[Any]:
        with self.store_resource.open() as store:
            return [s for s in store.alerts.states() if rule is None or s.rule == rule]


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


def only_run_failed(*channels: str) -> list[dict[str, Any]]:
    """Routes sending only run_failed notices (nothing else a test instance may raise reaches them)."""
    return [{"channels": list(channels), "rules": ["run_failed"]}]


def wait_ticks(harness: AlertingHarness, until: Any, timeout_s: float, pause_s: float = 0.2) -> list[float]:
    """Tick until ``until()`` holds; the ticks' durations. Fails after ``timeout_s``."""
    durations: list[float] = []
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, f"not reached within {timeout_s}s"
        durations.append(harness.tick()[1])
        time.sleep(pause_s)
    return durations


# --- 1. a channel that is down --------------------------------------------------------------------


@pytest.mark.postgres
def test_down_channel_backs_off_while_others_deliver_on_the_first_tick(
    tmp_path: Path, instance: DagsterInstance, state_storage: dict[str, Any]
) -> None:
    with HttpReceiver(mode="error") as down, HttpReceiver() as up:
        harness = AlertingHarness(
            tmp_path,
            instance,
            state_storage,
            {
                "retry": {"initial": "1s", "maximum": "4s", "give_up_after": "1h"},
                "channels": {"log": {"type": "log"}, "a": hook(down), "b": hook(up)},
                "routes": only_run_failed("log", "a", "b"),
            },
        )
        harness.tick()
        assert harness.deliveries() == []
        run_flaky(instance)

        message, first = harness.tick()
        assert "run_failed" in message
        assert len(up.delivered) == 1 and up.delivered[0].json["rule"] == "run_failed"
        assert [d.status for d in harness.deliveries("log")] == ["sent"]
        assert [d.status for d in harness.deliveries("b")] == ["sent"]
        (row,) = harness.deliveries("a")
        assert (row.status, row.attempts) == ("pending", 1) and "HTTP 500" in (row.last_error or "")

        # Per attempt: when it failed (about) and when the store says to try again.
        schedule: dict[int, tuple[float, datetime]] = {1: (time.time(), row.next_attempt_at)}
        durations = [first]
        deadline = time.monotonic() + 25
        while not down.delivered:
            assert time.monotonic() < deadline, f"a never delivered: {harness.deliveries('a')}"
            durations.append(harness.tick()[1])
            (row,) = harness.deliveries("a")
            if row.status == "pending" and row.attempts not in schedule:
                schedule[row.attempts] = (time.time(), row.next_attempt_at)
            if row.attempts == 2 and down.running:  # two 500s: now the receiver is gone
                down.stop()
            if row.attempts == 3 and not down.running:  # connection refused once: back again
                assert "Failed to establish a new connection" in (row.last_error or "")
                down.mode = "ok"
                down.start()
            time.sleep(0.1)

        # The pause after attempt n is initial * 2**(n-1), capped at maximum: 1s, 2s, 4s.
        pauses = {n: (at - datetime.fromtimestamp(t, UTC)).total_seconds() for n, (t, at) in schedule.items()}
        assert sorted(schedule) == [1, 2, 3]
        for n, expected in {1: 1.0, 2: 2.0, 3: 4.0}.items():
            assert expected - 0.7 <= pauses[n] <= expected + 0.1, pauses
        # No attempt came before its time: the receiver saw the two 500s at least 1 s apart.
        errors = [r for r in down.requests if r.status == 500]
        assert len(errors) == 2 and (errors[1].at - errors[0].at).total_seconds() >= 1.0
        assert down.delivered[0].at >= schedule[3][1]
        # A failing (and then refusing) receiver never held a tick up beyond its 1 s timeout.
        assert max(durations) < 1.0 + 1.5, durations

        for _ in range(3):  # nothing more for anyone
            harness.tick()
        assert len(down.delivered) == 1 and len(up.delivered) == 1
        assert down.delivered[0].json["id"] == up.delivered[0].json["id"]
        (row,) = harness.deliveries("a")
        assert (row.status, row.attempts) == ("sent", 4) and row.answer == "200 ok"
        assert [d.status for d in harness.deliveries()] == ["sent"] * 3


# --- 2. Retry-After -----------------------------------------------------------------------------------


@pytest.mark.postgres
def test_throttled_receiver_is_not_retried_before_retry_after(
    tmp_path: Path, instance: DagsterInstance, state_storage: dict[str, Any]
) -> None:
    with HttpReceiver(mode="throttle", retry_after=3) as throttled:
        harness = AlertingHarness(
            tmp_path,
            instance,
            state_storage,
            {
                # Retry-After (3 s) beyond the backoff's maximum (2 s) is honoured all the same.
                "retry": {"initial": "1s", "maximum": "2s"},
                "channels": {"a": hook(throttled)},
                "routes": only_run_failed("a"),
            },
        )
        run_flaky(instance)
        harness.tick()
        (row,) = harness.deliveries("a")
        assert row.attempts == 1 and "HTTP 429" in (row.last_error or "")
        assert (row.next_attempt_at - throttled.requests[0].at).total_seconds() >= 3.0

        # Ticks until 2.5 s after the 429, by when the backoff alone (1 s, then 2 s) would have retried
        # twice. Every retry, whenever a slow machine lets it happen, waits the full Retry-After.
        first = throttled.requests[0].at
        ticks = 0
        while datetime.now(UTC) < first + timedelta(seconds=2.5):
            harness.tick()
            ticks += 1
            time.sleep(0.2)
        assert ticks >= 2

        throttled.mode = "ok"
        wait_ticks(harness, lambda: bool(throttled.delivered), timeout_s=8)
        times = [request.at for request in throttled.requests]
        gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(times)]
        assert gaps and min(gaps) >= 3.0, gaps
        assert [request.status for request in throttled.requests][-1] == 200
        assert len(throttled.delivered) == 1


# --- 3. giving up -------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_notice_older_than_give_up_after_is_dead_with_its_last_error(
    tmp_path: Path, instance: DagsterInstance, state_storage: dict[str, Any]
) -> None:
    with HttpReceiver(mode="error") as down, HttpReceiver() as up:
        harness = AlertingHarness(
            tmp_path,
            instance,
            state_storage,
            {
                "retry": {"initial": "1s", "maximum": "1s", "give_up_after": "2s"},
                "channels": {"a": hook(down), "b": hook(up)},
                "routes": only_run_failed("a", "b"),
            },
        )
        run_flaky(instance)
        harness.tick()
        wait_ticks(harness, lambda: harness.deliveries("a")[0].status == "dead", timeout_s=8)
        (row,) = harness.deliveries("a")
        gave_up = datetime.now(UTC)
        assert (gave_up - row.notice.at).total_seconds() >= 2.0
        assert row.attempts >= 2 and len(down.requests) == row.attempts
        assert "HTTP 500" in (row.last_error or "") and "internal error" in (row.last_error or "")
        message, _ = harness.tick()
        assert len(down.requests) == row.attempts and "given up" not in message  # never tried again
        assert [d.status for d in harness.deliveries("b")] == ["sent"] and len(up.delivered) == 1


@pytest.mark.postgres
def test_pending_rows_of_a_removed_channel_are_given_up_naming_it(
    tmp_path: Path, instance: DagsterInstance, state_storage: dict[str, Any]
) -> None:
    gone_url = f"http://127.0.0.1:{free_port()}"
    alerting = {
        "retry": {"initial": "1m", "maximum": "1m"},
        "channels": {"log": {"type": "log"}, "gone": {"type": "webhook", "url": gone_url, "timeout": "1s"}},
        "routes": only_run_failed("log", "gone"),
    }
    harness = AlertingHarness(tmp_path, instance, state_storage, alerting)
    run_flaky(instance)
    harness.tick()
    (row,) = harness.deliveries("gone")
    assert row.status == "pending" and row.attempts == 1

    harness.write({**alerting, "channels": {"log": {"type": "log"}}, "routes": only_run_failed("log")})
    message, _ = harness.tick()
    assert "given up 1" in message
    (row,) = harness.deliveries("gone")
    assert row.status == "dead" and "'gone'" in (row.last_error or "")
    assert "no longer configured" in (row.last_error or "")
    assert [d.status for d in harness.deliveries("log")] == ["sent"]


# --- 4. custom rules ----------------------------------------------------------------------------------

LOW_FITNESS = {
    "name": "low_fitness",
    "each": "market",
    "expr": "ga_best_fitness < 0.5",
    "severity": "critical",
    "labels": {"team": "quant"},
    "message": "market {market}: best fitness {ga_best_fitness:.2f} is below 0.5",
}


def plant_fitness(harness: AlertingHarness, task: str, market: str, fitness: float) -> None:
    with harness.store_resource.open() as store:
        store.progress.record(task, market, 5, 10, fitness, 60.0, "running")


def test_custom_rule_fires_on_the_planted_market_only_and_resolves(
    tmp_path: Path, instance: DagsterInstance, memory_state_store: InMemoryStateStoreResource
) -> None:
    with HttpReceiver() as receiver:
        harness = AlertingHarness(
            tmp_path,
            instance,
            None,
            {
                "custom": [LOW_FITNESS],
                "channels": {"hook": hook(receiver)},
                "routes": [{"channels": ["hook"], "rules": ["low_fitness"]}],
            },
            memory_store=memory_state_store,
        )
        harness.tick()
        assert harness.states("low_fitness") == [] and receiver.requests == []

        plant_fitness(harness, "t-low", MARKET_LOW, 0.3)
        plant_fitness(harness, "t-high", MARKET_HIGH, 0.9)
        harness.tick()
        (state,) = harness.states("low_fitness")
        assert state.status == "firing" and state.severity == "critical"
        assert dict(state.labels) == {"team": "quant", "market": MARKET_LOW}
        (notice,) = [r.json for r in receiver.delivered]
        assert notice["event"] == "firing" and notice["rule"] == "low_fitness"
        assert notice["labels"] == {"team": "quant", "market": MARKET_LOW}
        assert notice["summary"] == f"market {MARKET_LOW}: best fitness 0.30 is below 0.5"

        harness.tick()  # still low: nothing new
        assert len(receiver.requests) == 1

        plant_fitness(harness, "t-low-2", MARKET_LOW, 0.8)  # a newer task reports a good figure
        harness.tick()
        harness.tick()
        assert [r.json["event"] for r in receiver.delivered] == ["firing", "resolved"]
        resolved = receiver.delivered[1].json
        assert resolved["labels"] == notice["labels"] and resolved["fingerprint"] == notice["fingerprint"]
        (state,) = harness.states("low_fitness")
        assert state.status == "resolved"


def test_custom_rule_with_for_stays_pending_until_it_has_held_that_long(
    tmp_path: Path, instance: DagsterInstance, memory_state_store: InMemoryStateStoreResource
) -> None:
    with HttpReceiver() as receiver:
        harness = AlertingHarness(
            tmp_path,
            instance,
            None,
            {
                "custom": [{**LOW_FITNESS, "for": "10s"}],
                "channels": {"hook": hook(receiver)},
                "routes": [{"channels": ["hook"], "rules": ["low_fitness"]}],
            },
            memory_store=memory_state_store,
        )
        plant_fitness(harness, "t-low", MARKET_LOW, 0.3)
        harness.tick()
        (state,) = harness.states("low_fitness")
        assert state.status == "pending" and state.active_since is not None
        assert harness.deliveries() == [] and receiver.requests == []

        config = harness.settings.load()
        rules = config.alerting.compiled_rules()
        source = SnapshotSource(pools=lambda: [], calendar_of=config.market_profile)
        since = state.active_since

        def evaluate_at(seconds: float) -> Outcome:
            outcome = Outcome()
            with harness.store_resource.open() as store:
                snapshot = source.snapshot(instance, store)
                enqueue(
                    store,
                    rules,
                    snapshot,
                    config.alerting.route_list(),
                    ["hook"],
                    outcome,
                    since + timedelta(seconds=seconds),
                )
            return outcome

        assert evaluate_at(9.5).enqueued == 0
        assert harness.states("low_fitness")[0].status == "pending" and harness.deliveries() == []
        outcome = evaluate_at(10.0)
        assert outcome.enqueued == 1 and outcome.fired == [f"low_fitness{{market={MARKET_LOW},team=quant}}"]
        assert harness.states("low_fitness")[0].status == "firing"
        (row,) = harness.deliveries("hook")  # due at the planted time, for the sensor to send then
        assert (row.status, row.notice.event, row.next_attempt_at) == (
            "pending",
            "firing",
            since + timedelta(seconds=10),
        )


# --- 5. invalid rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "reason", "column"),
    [
        pytest.param(
            "ga_best_fitness > 0.0 && ga_best_fitnes < 0.5",
            "unknown name 'ga_best_fitnes' (did you mean ga_best_fitness",
            26,
            id="unknown-figure-position",
        ),
        pytest.param("ga_best_fitness <", "Syntax error", 18, id="syntax"),
        pytest.param("market.__class__ == 1", "private names", 8, id="dunder"),
        pytest.param("x._private", "private names", 3, id="private"),
        pytest.param("import os", "reserved identifier: import", 1, id="import"),
        pytest.param("9**9**9 > 0", "Syntax error", 3, id="exponent"),
        pytest.param("1.0 + " * 400 + "1.0 > 0.0", "at most 2000", 2001, id="huge"),
    ],
)
def test_invalid_rule_is_refused_at_load_with_its_name_and_position(
    tmp_path: Path, expr: str, reason: str, column: int
) -> None:
    path = tmp_path / "config.yaml"
    rule = {"name": "my_bad_rule", "each": "market", "expr": expr}
    path.write_text(yaml.safe_dump({"storage": {"data_dir": str(tmp_path)}, "alerting": {"custom": [rule]}}))
    with pytest.raises(ConfigError) as refused:
        load_settings(path, environ={})
    text = str(refused.value)
    assert "alert rule 'my_bad_rule'" in text and reason in text
    assert f"line 1, column {column}" in text


def test_unknown_figure_is_refused_naming_the_rule_and_the_figure(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    rule = {"name": "my_bad_rule", "each": "market", "expr": "ga_best_fitnes < 0.5"}
    path.write_text(yaml.safe_dump({"storage": {"data_dir": str(tmp_path)}, "alerting": {"custom": [rule]}}))
    with pytest.raises(ConfigError, match=r"alert rule 'my_bad_rule': unknown name 'ga_best_fitnes'"):
        load_settings(path, environ={})


@pytest.mark.postgres
def test_hot_reload_keeps_the_last_valid_rules_and_applies_a_valid_edit(
    tmp_path: Path, instance: DagsterInstance, state_storage: dict[str, Any]
) -> None:
    always = {"name": "always_on", "expr": "markets_known >= 0", "severity": "info", "labels": {"probe": "1"}}
    alerting: dict[str, Any] = {"custom": [always], "channels": {"log": {"type": "log"}}}
    harness = AlertingHarness(tmp_path, instance, state_storage, alerting)
    assert harness.reload().startswith("applied ")
    harness.tick()
    assert [s.status for s in harness.states("always_on")] == ["firing"]

    broken = {**always, "expr": "markets_known >= 0 && no_such_figure > 1"}
    harness.write({**alerting, "custom": [broken]})
    refused = harness.reload()
    assert refused.startswith("REFUSED ") and "always_on" in refused and "no_such_figure" in refused
    message, _ = harness.tick()  # evaluates with the last valid config
    assert "rule errors" not in message
    assert [s.status for s in harness.states("always_on")] == ["firing"]
    assert [s.status for s in harness.states("config_refused")] == ["firing"]  # the ready-made rule

    second = {"name": "second_rule", "expr": "markets_known >= 0", "labels": {"probe": "2"}}
    harness.write({**alerting, "custom": [always, second]})
    assert harness.reload().startswith("applied ")
    harness.tick()  # the same sensor object: no restart
    assert [s.status for s in harness.states("second_rule")] == ["firing"]
    assert [s.status for s in harness.states("always_on")] == ["firing"]
    assert [s.status for s in harness.states("config_refused")] == ["resolved"]
    fired = {(d.notice.rule, d.notice.event) for d in harness.deliveries("log")}
    assert {("always_on", "firing"), ("second_rule", "firing"), ("config_refused", "firing")} <= fired


# --- 6. no duplicates -----------------------------------------------------------------------------------


@pytest.mark.postgres
def test_repeated_and_concurrent_evaluations_notify_once(
    tmp_path: Path, instance: DagsterInstance, state_storage: dict[str, Any]
) -> None:
    per_market = {"name": "low_fitness", "each": "market", "expr": "ga_best_fitness < 0.5"}
    with HttpReceiver() as receiver:
        harness = AlertingHarness(
            tmp_path,
            instance,
            state_storage,
            {
                "custom": [per_market],
                "channels": {"log": {"type": "log"}, "hook": hook(receiver, timeout="3s")},
                "routes": [{"channels": ["log", "hook"], "rules": ["run_failed", "low_fitness"]}],
            },
        )
        harness.tick()
        markets = [f"binance:C{i}USDT" for i in range(6)]

        def race() -> list[str]:
            barrier = threading.Barrier(2)
            errors: list[str] = []

            def one() -> None:
                try:
                    barrier.wait(timeout=10)
                    harness.tick()
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

            threads = [threading.Thread(target=one) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            return errors

        run_flaky(instance)
        for i, market in enumerate(markets):
            plant_fitness(harness, f"t{i}", market, 0.1)
        assert race() == []
        assert race() == []
        harness.tick()  # and once more in a row

        run_flaky(instance, fail=False)
        for i, market in enumerate(markets):
            plant_fitness(harness, f"t{i}b", market, 0.9)
        assert race() == []
        harness.tick()

        rows = harness.deliveries()
        per_alert: dict[tuple[str, str, str], set[str]] = {}
        for row in rows:
            per_alert.setdefault((row.notice.fingerprint, row.notice.event, row.channel), set()).add(
                row.notice.notice_id
            )
        assert len(per_alert) == (1 + len(markets)) * 2 * 2  # each alert fired and resolved, 2 channels
        assert all(len(ids) == 1 for ids in per_alert.values()), per_alert
        assert {row.status for row in rows} == {"sent"}
        seen = [r.json["delivery_id"] for r in receiver.requests]
        assert len(seen) == len(set(seen)) == (1 + len(markets)) * 2


def enqueue_together(
    harness: AlertingHarness,
    barrier: threading.Barrier,
    rules: list[Any],
    snapshot: Any,
    outcome: Outcome,
    errors: list[str],
) -> None:
    """One evaluator of the race: its own connection, released with the other by ``barrier``."""
    try:
        with harness.store_resource.open() as store:
            barrier.wait(timeout=10)
            enqueue(store, rules, snapshot, [], ["log"], outcome)
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")


@pytest.mark.postgres
def test_two_evaluators_writing_the_same_firing_at_once_notify_once(
    tmp_path: Path, instance: DagsterInstance, state_storage: dict[str, Any]
) -> None:
    """The store-level race the sensor's ticks rarely hit (their snapshots are taken one after the
    other): two evaluations of one snapshot released together into ``enqueue``."""
    per_market = {"name": "low_fitness", "each": "market", "expr": "ga_best_fitness < 0.5"}
    harness = AlertingHarness(
        tmp_path,
        instance,
        state_storage,
        {"custom": [per_market], "channels": {"log": {"type": "log"}}},
    )
    config = harness.settings.load()
    rules = [rule for rule in config.alerting.compiled_rules() if rule.spec.name == "low_fitness"]
    source = SnapshotSource(pools=lambda: [], calendar_of=config.market_profile)
    for round_ in range(5):
        markets = [f"binance:R{round_}M{i}USDT" for i in range(4)]
        for i, market in enumerate(markets):
            plant_fitness(harness, f"r{round_}t{i}", market, 0.1)
        with harness.store_resource.open() as store:
            snapshot = source.snapshot(instance, store)
        barrier = threading.Barrier(2)
        outcomes = [Outcome(), Outcome()]
        errors: list[str] = []
        threads = [
            threading.Thread(target=enqueue_together, args=(harness, barrier, rules, snapshot, o, errors))
            for o in outcomes
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        fired = sorted(outcomes[0].fired + outcomes[1].fired)
        assert fired == sorted(f"low_fitness{{market={m}}}" for m in markets), outcomes
        assert outcomes[0].enqueued + outcomes[1].enqueued == len(markets)
    rows = harness.deliveries("log")
    assert len(rows) == 20 and len({row.notice.fingerprint for row in rows}) == 20
