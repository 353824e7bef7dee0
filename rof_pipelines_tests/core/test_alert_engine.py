"""The alert engine: evaluation over a snapshot, the pending -> firing -> resolved state machine
(for: durations, dedup, cooldown, resolved notices, absent entities, unknown kinds, removed rules),
routing and backoff. Ticks are replayed with planted times; nothing here sleeps."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from rof_pipelines.core.alerts.builtin import builtin_spec
from rof_pipelines.core.alerts.engine import Evaluation, backoff_seconds, evaluate, route, transition
from rof_pipelines.core.alerts.expressions import compile_rule
from rof_pipelines.core.alerts.model import (
    AlertState,
    Notice,
    Route,
    RuleSpec,
    Snapshot,
    fingerprint,
    notice_id,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def market_snapshot(fitness: dict[str, float], now: datetime = T0, **kw) -> Snapshot:
    return Snapshot(
        taken_at=now,
        globals={"now": now.timestamp(), "markets_known": len(fitness)},
        entities={"market": {m: {"market": m, "ga_best_fitness": f} for m, f in fitness.items()}},
        labels={"market": {m: {"market": m} for m in fitness}},
        **kw,
    )


LOW = RuleSpec(
    name="low_fitness",
    expr="ga_best_fitness < 0.1",
    each="market",
    severity="warning",
    labels={"team": "quant"},
    message="{market}: best fitness {ga_best_fitness:.2f}",
    cooldown_s=600.0,
)


class Store:
    """Replays ticks like the sensor does: states keyed by fingerprint, versions bumped on write."""

    def __init__(self, *specs: RuleSpec) -> None:
        self.specs = {s.name: s for s in specs}
        self.states: dict[str, AlertState] = {}
        self.notices: list[Notice] = []

    def tick(self, snapshot: Snapshot, now: datetime | None = None) -> list[Notice]:
        rules = [compile_rule(s) for s in self.specs.values()]
        ev = evaluate(rules, snapshot)
        result = transition(self.states, ev, self.specs, now or snapshot.taken_at)
        for state in result.changed:
            stored = self.states.get(state.fingerprint)
            assert state.version == (stored.version if stored else 0)  # read-at version, for the lock
            self.states[state.fingerprint] = replace(state, version=state.version + 1)
        self.notices.extend(result.notices)
        return result.notices

    def state(self, rule: str, **labels: str) -> AlertState:
        return self.states[fingerprint(rule, labels)]


FP_A = fingerprint("low_fitness", {"team": "quant", "market": "a:X"})


# --- evaluate ---------------------------------------------------------------------------------------


def test_evaluate_per_entity_labels_fingerprints_and_summaries():
    ev = evaluate([compile_rule(LOW)], market_snapshot({"b:Y": 0.5, "a:X": 0.05}))
    assert [(o.labels, o.active) for o in sorted(ev.observations, key=lambda o: o.labels["market"])] == [
        ({"team": "quant", "market": "a:X"}, True),
        ({"team": "quant", "market": "b:Y"}, False),
    ]
    obs = {o.labels["market"]: o for o in ev.observations}
    assert obs["a:X"].fingerprint == FP_A
    assert obs["a:X"].summary == "a:X: best fitness 0.05"
    assert obs["a:X"].values == {"ga_best_fitness": 0.05, "market": "a:X"}
    assert ev.errors == {} and ev.undecided_rules == frozenset()


def test_entity_labels_win_over_rule_labels_and_missing_labels_fall_back_to_the_key():
    spec = replace(LOW, labels={"team": "quant", "market": "overridden"})
    snap = Snapshot(
        taken_at=T0,
        entities={
            "market": {
                "a:X": {"market": "a:X", "ga_best_fitness": 0.0},
                "b:Y": {"market": "b:Y", "ga_best_fitness": 0.0},
            }
        },
        labels={"market": {"a:X": {"market": "a:X", "exchange": "a"}}},
    )
    ev = evaluate([compile_rule(spec)], snap)
    labels = sorted((dict(o.labels) for o in ev.observations), key=str)
    assert labels == [{"team": "quant", "market": "a:X", "exchange": "a"}, {"team": "quant", "market": "b:Y"}]
    assert len({o.fingerprint for o in ev.observations}) == 2


def test_global_rules_see_globals_and_every_collection():
    spec = RuleSpec(
        name="any_low",
        expr="markets.exists(m, markets[m].ga_best_fitness < 0.1) && markets_known >= 2",
        labels={"scope": "all"},
        message="{markets_known} markets known",
    )
    ev = evaluate([compile_rule(spec)], market_snapshot({"a:X": 0.5, "b:Y": 0.01}))
    (obs,) = ev.observations
    assert obs.active is True and obs.labels == {"scope": "all"}
    assert obs.fingerprint == fingerprint("any_low", {"scope": "all"})
    assert obs.summary == "2 markets known"
    (obs,) = evaluate([compile_rule(spec)], market_snapshot({"a:X": 0.5, "b:Y": 0.2})).observations
    assert obs.active is False


def test_an_evaluation_error_is_an_undecided_observation():
    snap = market_snapshot({"a:X": 0.05})
    snap.entities["market"]["b:Y"] = {"market": "b:Y"}  # ga_best_fitness never materialised
    ev = evaluate([compile_rule(LOW)], snap)
    obs = {o.labels["market"]: o for o in ev.observations}
    assert obs["a:X"].active is True
    assert obs["b:Y"].active is None and "ga_best_fitness" in (obs["b:Y"].error or "")
    assert ev.errors == {}  # a figure an entity lacks is normal, not an error of the rule
    broken = RuleSpec(name="broken", expr="ga_best_fitness / 0.0 > 1.0 || 1 / 0 > 1", each="market")
    ev = evaluate([compile_rule(broken)], snap)
    assert "division by zero" in ev.errors["broken"]  # a real evaluation error is reported


def test_rules_over_an_unknown_kind_are_undecided():
    snap = market_snapshot({"a:X": 0.05}, unknown=frozenset({"market"}))
    glob = RuleSpec(name="any_market", expr='markets.exists(m, m == "a:X")')
    other = RuleSpec(name="pools_fine", expr="markets_known >= 0")
    ev = evaluate([compile_rule(LOW), compile_rule(glob), compile_rule(other)], snap)
    assert ev.undecided_rules == {"low_fitness", "any_market"}  # reading markets, directly or not
    assert [o.rule for o in ev.observations] == ["pools_fine"]


def test_evaluate_is_deterministic():
    rules = [compile_rule(LOW), compile_rule(builtin_spec("config_refused", {}))]
    snap = market_snapshot({"c:Z": 0.0, "a:X": 0.05, "b:Y": 0.5})
    snap.globals.update(config_refused=False, config_refused_error="")  # type: ignore[attr-defined]
    first, second = evaluate(rules, snap), evaluate(list(reversed(rules)), snap)
    assert first == second
    assert [(o.rule, o.fingerprint) for o in first.observations] == sorted(
        (o.rule, o.fingerprint) for o in first.observations
    )


# --- transition -------------------------------------------------------------------------------------


def test_for_duration_pending_then_firing_only_after_for_s():
    store = Store(replace(LOW, for_s=120.0))
    assert store.tick(market_snapshot({"a:X": 0.05}, at(0))) == []
    assert store.states[FP_A].status == "pending" and store.states[FP_A].active_since == at(0)
    assert store.tick(market_snapshot({"a:X": 0.04}, at(119))) == []
    assert store.states[FP_A].status == "pending"
    (notice,) = store.tick(market_snapshot({"a:X": 0.03}, at(120)))
    state = store.states[FP_A]
    assert state.status == "firing" and state.fired_at == at(120) and state.notified
    assert notice.event == "firing" and notice.notice_id == notice_id(FP_A, "firing", at(120))
    assert notice.summary == "a:X: best fitness 0.03" and notice.severity == "warning"
    assert notice.labels == {"team": "quant", "market": "a:X"}


def test_a_pending_alert_that_clears_resolves_silently_and_restarts_its_clock():
    store = Store(replace(LOW, for_s=120.0))
    store.tick(market_snapshot({"a:X": 0.05}, at(0)))
    assert store.tick(market_snapshot({"a:X": 0.5}, at(60))) == []
    assert store.states[FP_A].status == "resolved"
    store.tick(market_snapshot({"a:X": 0.05}, at(90)))
    assert store.tick(market_snapshot({"a:X": 0.05}, at(200))) == []  # 110 s since it became true
    assert store.tick(market_snapshot({"a:X": 0.05}, at(210)))[0].event == "firing"


def test_dedup_a_firing_alert_evaluated_again_sends_nothing_and_is_not_rewritten():
    store = Store(LOW)
    assert len(store.tick(market_snapshot({"a:X": 0.05}, at(0)))) == 1
    rules = {LOW.name: LOW}
    ev = evaluate([compile_rule(LOW)], market_snapshot({"a:X": 0.05}, at(30)))
    again = transition(store.states, ev, rules, at(30))
    assert again.notices == [] and again.changed == []  # same summary: nothing to write
    ev = evaluate([compile_rule(LOW)], market_snapshot({"a:X": 0.02}, at(60)))
    moved = transition(store.states, ev, rules, at(60))
    assert moved.notices == []
    (state,) = moved.changed
    assert state.summary == "a:X: best fitness 0.02" and state.version == store.states[FP_A].version
    assert state.fired_at == at(0)


def test_resolved_notice_when_the_condition_clears():
    store = Store(LOW)
    store.tick(market_snapshot({"a:X": 0.05}, at(0)))
    (notice,) = store.tick(market_snapshot({"a:X": 0.5}, at(300)))
    assert notice.event == "resolved"
    assert notice.notice_id == notice_id(FP_A, "resolved", at(0))
    assert notice.summary == "a:X: best fitness 0.05"  # what was wrong, not the healthy figures
    assert notice.values == {"ga_best_fitness": 0.5, "market": "a:X"}
    state = store.states[FP_A]
    assert state.status == "resolved" and state.resolved_at == at(300)
    assert store.tick(market_snapshot({"a:X": 0.5}, at(330))) == []  # resolved stays quiet


def test_notify_resolved_false_sends_no_resolved_notice():
    store = Store(replace(LOW, notify_resolved=False))
    assert len(store.tick(market_snapshot({"a:X": 0.05}, at(0)))) == 1
    assert store.tick(market_snapshot({"a:X": 0.5}, at(60))) == []
    assert store.states[FP_A].status == "resolved"


def test_cooldown_silences_a_refire_and_its_resolution_then_notifies_again():
    store = Store(LOW)  # cooldown 600 s
    low, high = {"a:X": 0.05}, {"a:X": 0.5}
    assert [n.event for n in store.tick(market_snapshot(low, at(0)))] == ["firing"]
    assert [n.event for n in store.tick(market_snapshot(high, at(60)))] == ["resolved"]
    # re-fire within the cooldown of the last firing notice: fires silently
    assert store.tick(market_snapshot(low, at(120))) == []
    state = store.states[FP_A]
    assert state.status == "firing" and state.fired_at == at(120) and not state.notified
    assert state.last_notified_at == at(0)
    # the silent episode resolves silently too
    assert store.tick(market_snapshot(high, at(180))) == []
    assert store.states[FP_A].status == "resolved"
    # after the cooldown it notifies again, with a new episode id
    (notice,) = store.tick(market_snapshot(low, at(601)))
    assert notice.event == "firing" and notice.notice_id == notice_id(FP_A, "firing", at(601))
    assert store.states[FP_A].last_notified_at == at(601)
    assert len({n.notice_id for n in store.notices}) == len(store.notices) == 3


def test_a_silent_episode_that_outlives_the_cooldown_is_notified_once():
    store = Store(LOW)
    low, high = {"a:X": 0.05}, {"a:X": 0.5}
    store.tick(market_snapshot(low, at(0)))
    store.tick(market_snapshot(high, at(60)))
    assert store.tick(market_snapshot(low, at(120))) == []  # silent re-fire
    assert store.tick(market_snapshot(low, at(599))) == []
    (late,) = store.tick(market_snapshot(low, at(600)))
    assert late.event == "firing" and late.notice_id == notice_id(FP_A, "firing", at(120))
    assert store.tick(market_snapshot(low, at(1300))) == []  # once only
    (resolved,) = store.tick(market_snapshot(high, at(1400)))
    assert resolved.event == "resolved" and resolved.notice_id == notice_id(FP_A, "resolved", at(120))


def test_zero_cooldown_notifies_every_episode():
    store = Store(replace(LOW, cooldown_s=0.0))
    events = []
    for t, f in [(0, 0.05), (10, 0.5), (20, 0.05), (30, 0.5)]:
        events += [n.event for n in store.tick(market_snapshot({"a:X": f}, at(t)))]
    assert events == ["firing", "resolved", "firing", "resolved"]


def test_absent_resolve_resolves_an_entity_missing_from_the_snapshot():
    store = Store(LOW)
    store.tick(market_snapshot({"a:X": 0.05, "b:Y": 0.01}, at(0)))
    notices = store.tick(market_snapshot({"b:Y": 0.01}, at(30)))  # a:X left the markets
    assert [(n.event, n.labels["market"]) for n in notices] == [("resolved", "a:X")]
    assert store.states[FP_A].status == "resolved"
    assert store.state("low_fitness", team="quant", market="b:Y").status == "firing"


def test_absent_keep_keeps_the_alert_as_it_is():
    spec = builtin_spec("run_failed", {"labels": {}})
    assert spec.absent == "keep"
    store = Store(spec)

    def jobs(**figures: dict) -> Snapshot:
        return Snapshot(
            taken_at=T0, entities={"job": figures}, labels={"job": {k: {"job": k} for k in figures}}
        )

    failed = {
        "job": "ga_job",
        "pool": "ga",
        "market": "",
        "last_status": "FAILURE",
        "last_run_id": "r1",
        "last_error": "x",
    }
    (notice,) = store.tick(jobs(ga_job=failed), at(0))
    assert notice.summary == "job ga_job failed (market '', pool ga): run r1: x"
    assert store.tick(jobs(), at(30)) == []  # the job's runs are gone from the snapshot
    assert store.state("run_failed", job="ga_job").status == "firing"
    ok = {**failed, "last_status": "SUCCESS", "last_run_id": "r2", "last_error": ""}
    assert [n.event for n in store.tick(jobs(ga_job=ok), at(60))] == ["resolved"]


def test_unknown_kinds_change_nothing():
    store = Store(LOW)
    store.tick(market_snapshot({"a:X": 0.05}, at(0)))
    before = dict(store.states)
    blind = Snapshot(taken_at=at(30), unknown=frozenset({"market"}))  # the market source did not answer
    ev = evaluate([compile_rule(LOW)], blind)
    assert ev.undecided_rules == {"low_fitness"} and ev.observations == []
    result = transition(store.states, ev, store.specs, at(30))
    assert result.changed == [] and result.notices == []
    assert store.states == before


def test_undecided_observations_leave_the_state_alone():
    store = Store(LOW)
    store.tick(market_snapshot({"a:X": 0.05}, at(0)))
    broken = Snapshot(
        taken_at=at(30),
        entities={"market": {"a:X": {"market": "a:X"}}},
        labels={"market": {"a:X": {"market": "a:X"}}},
    )
    assert store.tick(broken) == []
    assert store.states[FP_A].status == "firing"


def test_a_removed_or_disabled_rule_resolves_its_alerts_silently():
    store = Store(LOW)
    store.tick(market_snapshot({"a:X": 0.05}, at(0)))
    store.specs = {}
    ev = evaluate([], market_snapshot({"a:X": 0.05}, at(30)))
    result = transition(store.states, ev, {}, at(30))
    assert result.notices == []
    (state,) = result.changed
    assert state.status == "resolved" and state.resolved_at == at(30)


def test_a_severity_change_in_config_is_written_to_the_firing_alert():
    store = Store(LOW)
    store.tick(market_snapshot({"a:X": 0.05}, at(0)))
    store.specs = {LOW.name: replace(LOW, severity="critical")}
    assert store.tick(market_snapshot({"a:X": 0.05}, at(30))) == []
    assert store.states[FP_A].severity == "critical"


def test_transition_is_deterministic_and_sorted():
    other = replace(LOW, name="also_low")
    states: dict[str, AlertState] = {}
    ev = evaluate([compile_rule(LOW), compile_rule(other)], market_snapshot({"b:Y": 0.0, "a:X": 0.0}))
    rules = {LOW.name: LOW, other.name: other}
    first, second = transition(states, ev, rules, T0), transition(states, ev, rules, T0)
    assert first == second
    keys = [(n.rule, n.fingerprint) for n in first.notices]
    assert keys == sorted(keys) and len(keys) == 4
    assert [s.rule for s in first.changed] == ["also_low", "also_low", "low_fitness", "low_fitness"]


def test_a_retried_tick_produces_the_same_notice_ids():
    """The sensor may crash after writing the outbox and before committing: the retry's ids match."""
    store = Store(LOW)
    snap = market_snapshot({"a:X": 0.05}, at(0))
    ev = evaluate([compile_rule(LOW)], snap)
    one = transition(store.states, ev, store.specs, at(0))
    two = transition(store.states, ev, store.specs, at(0))
    assert [n.notice_id for n in one.notices] == [n.notice_id for n in two.notices]


def test_an_empty_evaluation_with_no_states_changes_nothing():
    assert transition({}, Evaluation(), {}, T0).changed == []


# --- routing ----------------------------------------------------------------------------------------


def notice(
    severity: str = "warning", rule: str = "low_fitness", event: str = "firing", **labels: str
) -> Notice:
    return Notice("id", event, rule, "fp", labels, severity, "s", T0)  # type: ignore[arg-type]


CHANNELS = ["log", "slack", "mail", "pager"]


def test_no_routes_send_every_notice_to_every_channel():
    assert route(notice("info"), [], CHANNELS) == CHANNELS


def test_routes_by_severity_labels_and_rules_in_channel_order():
    routes = [
        Route(("log",)),
        Route(("pager", "mail"), min_severity="critical"),
        Route(("slack",), match={"team": "quant"}),
        Route(("mail",), rules=("drawdown",)),
    ]
    assert route(notice("info"), routes, CHANNELS) == ["log"]
    assert route(notice("critical"), routes, CHANNELS) == ["log", "mail", "pager"]
    assert route(notice("warning", team="quant"), routes, CHANNELS) == ["log", "slack"]
    assert route(notice("warning", team="ops"), routes, CHANNELS) == ["log"]
    assert route(notice("info", rule="drawdown"), routes, CHANNELS) == ["log", "mail"]
    assert route(notice("critical", rule="drawdown", team="quant"), routes, CHANNELS) == CHANNELS
    resolved = notice("critical", event="resolved")
    assert route(resolved, routes, CHANNELS) == ["log", "mail", "pager"]


def test_no_matching_route_means_no_channel_and_unknown_channels_are_dropped():
    routes = [Route(("pager", "gone"), min_severity="critical", match={"team": "ops"})]
    assert route(notice("critical", team="quant"), routes, CHANNELS) == []
    assert route(notice("critical", team="ops"), routes, CHANNELS) == ["pager"]


def test_test_notices_are_not_routed():
    assert route(notice("critical", event="test"), [], CHANNELS) == []
    assert route(notice("critical", event="test"), [Route(("log",))], CHANNELS) == []


# --- backoff ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(0, 10.0), (1, 10.0), (2, 20.0), (3, 40.0), (6, 320.0), (7, 600.0), (8, 600.0), (10_000, 600.0)],
)
def test_backoff_doubles_up_to_the_maximum(attempt, expected):
    assert backoff_seconds(attempt, 10.0, 600.0) == expected


def test_backoff_is_deterministic():
    assert [backoff_seconds(a, 1.5, 5.0) for a in range(1, 5)] == [1.5, 3.0, 5.0, 5.0]
    assert backoff_seconds(3, 1.5, 5.0) == backoff_seconds(3, 1.5, 5.0)
