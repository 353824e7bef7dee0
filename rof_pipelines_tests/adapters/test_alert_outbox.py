"""The alert outbox on a real PostgreSQL: migration 0008 up and down, its CHECK constraints against the
model's value lists, senders that never share a row (``FOR UPDATE SKIP LOCKED``), evaluators that never
both win, and contention that never opens the circuit. (Behaviour shared with the in-memory store is in
test_state_store_contract.py.)"""

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from rof_pipelines.adapters.state_store import StateStore, build_metadata
from rof_pipelines.core.alerts.model import (
    ALERT_STATUSES,
    DELIVERY_STATUSES,
    NOTICE_EVENTS,
    SEVERITIES,
    AlertState,
    Delivery,
    Notice,
    delivery_id,
    fingerprint,
    notice_id,
)
from rof_pipelines.errors import ConflictError
from rof_pipelines.settings import CircuitBreakerConfig, Settings

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
ALERT_TABLES = {"alert_states", "alert_deliveries"}


def _store(settings: Settings, breaker: CircuitBreakerConfig | None = None) -> StateStore:
    return StateStore(settings.state_storage, breaker or settings.system_setup.circuit_breaker)


@pytest.fixture
def store(pg_settings: Settings) -> Iterator[StateStore]:
    with _store(pg_settings) as migrated:
        migrated.upgrade()
        yield migrated


def _connect(pg_database: dict[str, Any]) -> psycopg.Connection:
    return psycopg.connect(**{k: pg_database[k] for k in ("host", "port", "user", "dbname")})


def _tables(pg_database: dict[str, Any]) -> set[str]:
    with _connect(pg_database) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'rof_state'"
        ).fetchall()
    return {name for (name,) in rows}


def _alert(n: int, **changes: Any) -> AlertState:
    labels = {"market": f"binance:T{n}USDT"}
    values: dict[str, Any] = {
        "rule": "ga_stalled",
        "fingerprint": fingerprint("ga_stalled", labels),
        "labels": labels,
        "severity": "critical",
        "status": "firing",
        "active_since": NOW,
        "fired_at": NOW,
    }
    return AlertState(**{**values, **changes})


def _delivery(state: AlertState, channel: str, created: datetime) -> Delivery:
    nid = notice_id(state.fingerprint, "firing", NOW)
    notice = Notice(nid, "firing", state.rule, state.fingerprint, state.labels, state.severity, "", NOW)
    return Delivery(delivery_id(nid, channel), notice, channel, "pending", 0, created, created)


def _outbox(store: StateStore, count: int) -> list[Delivery]:
    """``count`` due deliveries, one alert each, created a second apart."""
    states = [_alert(n) for n in range(count)]
    rows = [_delivery(s, "webhook", NOW - timedelta(seconds=count - n)) for n, s in enumerate(states)]
    assert store.alerts.apply(states, rows) == count
    return rows


# --- migration 0008 -------------------------------------------------------------------------------


def test_migration_0008_upgrades_and_downgrades_cleanly(store, pg_database):
    assert store.current_revision() == "0010" == store.head_revision()
    assert _tables(pg_database) >= ALERT_TABLES
    _outbox(store, 2)

    assert store.downgrade("0007") == "0007"
    assert not _tables(pg_database) & ALERT_TABLES, "0008's tables are gone"
    assert "message_inbox" in _tables(pg_database), "and nothing else"
    assert store.upgrade() == "0010"
    assert store.alerts.states() == [] and store.alerts.deliveries() == [], "re-created empty"

    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_schemas": True,
                "include_name": lambda name, type_, _: name == store.schema if type_ == "schema" else True,
                "version_table_schema": store.schema,
                "compare_type": True,
            },
        )
        assert compare_metadata(context, build_metadata(store.schema)) == []


def _check_values(pg_database: dict[str, Any], constraint: str) -> tuple[str, ...]:
    """The quoted values a CHECK ... IN (...) constraint admits, as PostgreSQL prints it."""
    with _connect(pg_database) as conn:
        (definition,) = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = %s", (constraint,)
        ).fetchone()
    return tuple(re.findall(r"'([^']*)'::text", definition))


def test_check_constraints_freeze_the_models_value_lists(store, pg_database):
    """Migration 0008 spells the value lists out; they must be the model's, in the same order."""
    assert _check_values(pg_database, "ck_alert_states_severity") == SEVERITIES
    assert _check_values(pg_database, "ck_alert_states_status") == ALERT_STATUSES
    assert _check_values(pg_database, "ck_alert_deliveries_severity") == SEVERITIES
    assert _check_values(pg_database, "ck_alert_deliveries_event") == NOTICE_EVENTS
    assert _check_values(pg_database, "ck_alert_deliveries_status") == DELIVERY_STATUSES
    with _connect(pg_database) as conn, pytest.raises(psycopg.errors.CheckViolation, match="ck_alert_states"):
        conn.execute(
            "INSERT INTO rof_state.alert_states (fingerprint, rule, severity, status) "
            "VALUES ('f', 'r', 'warning', 'exploded')"
        )


# --- concurrency ----------------------------------------------------------------------------------


def test_a_row_locked_by_another_claimer_is_skipped_not_waited_for(store, pg_database):
    rows = _outbox(store, 4)
    with _connect(pg_database) as other:  # another sender, mid-transaction, holding the oldest two
        locked = other.execute(
            "SELECT delivery_id FROM rof_state.alert_deliveries ORDER BY created_at, delivery_id "
            "LIMIT 2 FOR UPDATE"
        ).fetchall()
        assert [d for (d,) in locked] == [r.delivery_id for r in rows[:2]]
        claimed = store.alerts.claim_due(NOW, 60)  # would block (statement timeout) without SKIP LOCKED
        assert [d.delivery_id for d in claimed] == [r.delivery_id for r in rows[2:]]
        other.rollback()
    assert [d.delivery_id for d in store.alerts.claim_due(NOW, 60)] == [r.delivery_id for r in rows[:2]]


def _together(*calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` in threads released at once; each one's result (or exception), in order."""
    barrier = threading.Barrier(len(calls))
    outcome: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            outcome[index] = call()
        except Exception as exc:
            outcome[index] = exc

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcome


def test_two_concurrent_claimers_get_disjoint_rows(store, pg_settings):
    rows = _outbox(store, 120)
    with _store(pg_settings) as second:  # another process's engine: its own connections

        def drain(claimer: StateStore) -> Callable[[], list[str]]:
            def run() -> list[str]:
                got: list[str] = []
                while batch := claimer.alerts.claim_due(NOW, 600, limit=7):
                    got += [d.delivery_id for d in batch]
                return got

            return run

        one, two = _together(drain(store), drain(second))
    assert isinstance(one, list) and isinstance(two, list), (one, two)
    assert not set(one) & set(two), "no row went to both senders"
    assert sorted(one + two) == sorted(r.delivery_id for r in rows), "and every row went to one"
    assert len(one) + len(two) == len(rows), "each exactly once"
    assert {d.attempts for d in store.alerts.deliveries(limit=500)} == {1}


def test_two_evaluators_racing_on_one_alert_exactly_one_writes(store):
    state = _alert(1)
    store.alerts.apply([state], [])
    for _ in range(3):
        seen = store.alerts.states()[0]
        version = seen.version

        def evaluator(channel: str, read: AlertState = seen) -> Callable[[], int]:
            changed = replace(read, summary=channel, last_notified_at=NOW)
            return lambda: store.alerts.apply([changed], [_delivery(changed, channel, NOW)])

        outcome = _together(evaluator(f"a{version}"), evaluator(f"b{version}"))
        assert sorted(type(r).__name__ for r in outcome) == ["ConflictError", "int"], outcome
        winner = store.alerts.states()[0]
        assert winner.version == version + 1
        channels = {d.channel for d in store.alerts.deliveries(limit=500)}
        assert winner.summary in channels, "the winner's delivery was written"
        assert len({f"a{version}", f"b{version}"} & channels) == 1, "the loser's was not"


def test_conflicts_do_not_open_the_circuit(pg_settings):
    with _store(pg_settings, CircuitBreakerConfig(fail_max=2)) as store:
        store.upgrade()
        store.alerts.apply([_alert(1)], [])
        for _ in range(5):
            with pytest.raises(ConflictError):
                store.alerts.apply([_alert(1)], [])
        assert store.alerts.states()[0].version == 1, "the store still answers"
