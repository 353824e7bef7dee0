"""The alerting engine's memory and outbox (tables ``alert_states``, ``alert_deliveries``).

An evaluation reads every alert's state, decides what changed, and hands :meth:`SqlAlerts.apply` the
changed states together with the deliveries (one per notice and channel) they cause: both are written
in one transaction, so a crash between deciding and sending loses nothing (the delivery is in the
outbox) and repeats nothing (a delivery id is its notice and channel; a second insert is a no-op).
States carry ``version`` (:mod:`.versioned`): two evaluators racing on one alert cannot both win.

Senders :meth:`~SqlAlerts.claim_due` due deliveries under a lease (``FOR UPDATE SKIP LOCKED``: two
senders never get the same row; a sender that dies leaves its rows to the next one once the lease
passes), then :meth:`~SqlAlerts.mark_sent` or :meth:`~SqlAlerts.mark_failed` them.
"""

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from rof_pipelines.adapters.state_store.repository import SqlRepository
from rof_pipelines.adapters.state_store.values import SERVICE, as_object, check_choice, json_safe, utc
from rof_pipelines.adapters.state_store.versioned import check_expected, conflict_error
from rof_pipelines.core.alerts.model import (
    ALERT_STATUSES,
    DELIVERY_STATUSES,
    NOTICE_EVENTS,
    SEVERITIES,
    AlertState,
    Delivery,
    Notice,
)
from rof_pipelines.errors import DataValidationError

# What is kept of a receiver's answer or an error: enough to diagnose, never a whole HTML error page.
CLIP_CHARS = 500
# Rows pruned once finished: a pending delivery is work still to do and is never pruned.
FINISHED_DELIVERY_STATUSES: tuple[str, ...] = ("sent", "dead")

STATE_TIMES = ("active_since", "fired_at", "resolved_at", "last_notified_at")
DELIVERY_TIMES = ("notice_at", "next_attempt_at", "created_at", "lease_until", "sent_at")


def clip(text: str | None) -> str | None:
    """``text`` cut to :data:`CLIP_CHARS` characters."""
    return None if text is None else str(text)[:CLIP_CHARS]


def _count(field: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DataValidationError(f"{SERVICE}: {field} must be an integer >= 0, got {value!r}")
    return value


def state_row(state: AlertState) -> dict[str, Any]:
    """The ``alert_states`` columns of ``state`` (without ``version``), checked and JSON-safe."""
    check_expected(state.version)
    return {
        "fingerprint": str(state.fingerprint),
        "rule": str(state.rule),
        "labels": json_safe(as_object("labels", state.labels)),
        "severity": check_choice("severity", state.severity, SEVERITIES),
        "status": check_choice("status", state.status, ALERT_STATUSES),
        **{name: utc(getattr(state, name)) for name in STATE_TIMES},
        "notified": bool(state.notified),
        "summary": str(state.summary or ""),
        "values": json_safe(as_object("values", state.values)),
    }


def state_rows(states: Sequence[AlertState]) -> list[tuple[dict[str, Any], int]]:
    """Each state's row and the version it was read at, in fingerprint order (every writer locks rows in
    the same order, so two evaluators cannot deadlock); one alert twice is a caller bug."""
    rows = sorted(((state_row(s), s.version) for s in states), key=lambda item: item[0]["fingerprint"])
    fingerprints = [row["fingerprint"] for row, _ in rows]
    if len(set(fingerprints)) != len(fingerprints):
        raise DataValidationError(f"{SERVICE}: apply() got the same alert twice: {sorted(fingerprints)}")
    return rows


def state_from_row(row: Mapping[str, Any]) -> AlertState:
    """The stored alert, times in UTC."""
    return AlertState(
        rule=row["rule"],
        fingerprint=row["fingerprint"],
        labels=row["labels"],
        severity=row["severity"],
        status=row["status"],
        **{name: utc(row[name]) for name in STATE_TIMES},
        notified=row["notified"],
        summary=row["summary"],
        values=row["values"],
        version=row["version"],
    )


def delivery_row(delivery: Delivery) -> dict[str, Any]:
    """The ``alert_deliveries`` columns of ``delivery`` and its notice, checked and JSON-safe."""
    notice = delivery.notice
    for name in ("next_attempt_at", "created_at"):
        if getattr(delivery, name) is None:
            raise DataValidationError(f"{SERVICE}: delivery {delivery.delivery_id}: {name} is required")
    return {
        "delivery_id": str(delivery.delivery_id),
        "notice_id": str(notice.notice_id),
        "event": check_choice("event", notice.event, NOTICE_EVENTS),
        "rule": str(notice.rule),
        "fingerprint": str(notice.fingerprint),
        "labels": json_safe(as_object("labels", notice.labels)),
        "severity": check_choice("severity", notice.severity, SEVERITIES),
        "summary": str(notice.summary or ""),
        "values": json_safe(as_object("values", notice.values)),
        "notice_at": utc(notice.at),
        "channel": str(delivery.channel),
        "status": check_choice("status", delivery.status, DELIVERY_STATUSES),
        "attempts": _count("attempts", delivery.attempts),
        "failures": 0,
        "next_attempt_at": utc(delivery.next_attempt_at),
        "lease_until": utc(delivery.lease_until),
        "last_error": clip(delivery.last_error),
        "answer": clip(delivery.answer),
        "created_at": utc(delivery.created_at),
        "sent_at": utc(delivery.sent_at),
    }


def delivery_from_row(row: Mapping[str, Any]) -> Delivery:
    """The stored delivery with its notice, times in UTC (``failures`` is a counter, not a field)."""
    notice = Notice(
        notice_id=row["notice_id"],
        event=row["event"],
        rule=row["rule"],
        fingerprint=row["fingerprint"],
        labels=row["labels"],
        severity=row["severity"],
        summary=row["summary"],
        at=utc(row["notice_at"]),
        values=row["values"],
    )
    return Delivery(
        delivery_id=row["delivery_id"],
        notice=notice,
        channel=row["channel"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=utc(row["next_attempt_at"]),
        created_at=utc(row["created_at"]),
        lease_until=utc(row["lease_until"]),
        last_error=row["last_error"],
        answer=row["answer"],
        sent_at=utc(row["sent_at"]),
    )


def check_claim(now: datetime, lease_s: float, limit: int) -> tuple[datetime, datetime]:
    """(now, the lease's end) for a claim, checked."""
    if not lease_s > 0:
        raise DataValidationError(f"{SERVICE}: lease_s must be > 0, got {lease_s!r}")
    if limit < 1:
        raise DataValidationError(f"{SERVICE}: limit must be >= 1, got {limit!r}")
    moment = utc(now)
    if moment is None:
        raise DataValidationError(f"{SERVICE}: now is required")
    return moment, moment + timedelta(seconds=float(lease_s))


def check_retention(retention_days: int) -> None:
    if retention_days < 1:
        raise DataValidationError(f"{SERVICE}: retention_days must be >= 1, got {retention_days}")


class SqlAlerts(SqlRepository):
    """``store.alerts``: every alert's state between evaluations, and the outbox of its notices."""

    def _tables(self) -> tuple[sa.Table, sa.Table]:
        return self._store.table("alert_states"), self._store.table("alert_deliveries")

    def states(self) -> list[AlertState]:
        """Every stored alert, by rule then fingerprint."""
        table, _ = self._tables()
        query = sa.select(table).order_by(table.c.rule, table.c.fingerprint)

        def run() -> list[AlertState]:
            with self._engine.connect() as conn:
                return [state_from_row(row) for row in conn.execute(query).mappings()]

        return self._read(run)

    def apply(self, changed: Sequence[AlertState], deliveries: Sequence[Delivery]) -> int:
        """Write the ``changed`` states and insert their ``deliveries`` in one transaction; returns how
        many deliveries were new (one already in the outbox is left as it is).

        Each state is written at the version it was read: 0 creates it (ConflictError if it exists),
        N replaces it while still at N (ConflictError otherwise); the stored version becomes N + 1.
        A conflict writes nothing at all: the evaluator re-reads and decides again.
        """
        rows = state_rows(changed)
        delivery_rows = [delivery_row(delivery) for delivery in deliveries]
        states, outbox = self._tables()
        bump = {"version": states.c.version + 1, "updated_at": sa.func.now()}

        def run() -> tuple[int, tuple[str, int, int | None] | None]:
            """(new deliveries, None) when written; (0, (fingerprint, expected, current)) on a conflict,
            everything rolled back."""
            with self._engine.connect() as conn, conn.begin() as transaction:
                for row, version in rows:
                    key = states.c.fingerprint == row["fingerprint"]
                    if version == 0:
                        stmt = (
                            pg_insert(states)
                            .values(**row)
                            .on_conflict_do_nothing(index_elements=[states.c.fingerprint])
                        )
                    else:
                        stmt = sa.update(states).where(key, states.c.version == version).values(**row, **bump)
                    if conn.execute(stmt.returning(states.c.version)).first() is None:
                        current = conn.execute(sa.select(states.c.version).where(key)).scalar_one_or_none()
                        transaction.rollback()
                        return 0, (row["fingerprint"], version, current)
                new = 0
                if delivery_rows:
                    stmt = (
                        pg_insert(outbox)
                        .values(delivery_rows)
                        .on_conflict_do_nothing(index_elements=[outbox.c.delivery_id])
                        .returning(outbox.c.delivery_id)
                    )
                    new = len(conn.execute(stmt).all())
                return new, None

        new, conflict = self._write(run)
        if conflict is not None:  # raised outside the breaker: contention never opens the circuit
            fingerprint, expected, current = conflict
            raise conflict_error(
                f"{states.schema}.{states.name}", {"fingerprint": fingerprint}, expected, current
            )
        return new

    def claim_due(
        self, now: datetime, lease_s: float, limit: int = 100, channels: Collection[str] | None = None
    ) -> list[Delivery]:
        """Lease up to ``limit`` pending deliveries due at ``now`` (oldest first) for ``lease_s``
        seconds, counting an attempt on each; returns them as updated. Rows another sender holds
        (locked, or leased until after ``now``) are skipped, never waited for."""
        moment, lease_until = check_claim(now, lease_s, limit)
        _, outbox = self._tables()
        if channels is not None and not channels:
            return []
        at = sa.bindparam("claim_now", moment, type_=outbox.c.next_attempt_at.type)
        due = (
            sa.select(outbox.c.delivery_id)
            .where(
                outbox.c.status == "pending",
                outbox.c.next_attempt_at <= at,
                sa.or_(outbox.c.lease_until.is_(None), outbox.c.lease_until <= at),
            )
            .order_by(outbox.c.created_at, outbox.c.delivery_id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if channels is not None:
            due = due.where(outbox.c.channel.in_(sorted(channels)))
        claimed = due.cte("claimed")
        stmt = (
            sa.update(outbox)
            .where(outbox.c.delivery_id == claimed.c.delivery_id)
            .values(lease_until=lease_until, attempts=outbox.c.attempts + 1)
            .returning(*outbox.c)
        )

        def run() -> list[Delivery]:
            with self._engine.begin() as conn:
                found = [delivery_from_row(row) for row in conn.execute(stmt).mappings()]
            return sorted(found, key=lambda d: (d.created_at, d.delivery_id))

        return self._write(run)

    def _finish(self, delivery_id: str, values: Mapping[str, Any]) -> bool:
        """Update the delivery with ``values`` if it is still pending; whether it was."""
        _, outbox = self._tables()
        stmt = (
            sa.update(outbox)
            .where(outbox.c.delivery_id == delivery_id, outbox.c.status == "pending")
            .values(**values)
        )

        def run() -> bool:
            with self._engine.begin() as conn:
                return conn.execute(stmt).rowcount == 1

        return self._write(run)

    def mark_sent(self, delivery_id: str, answer: str, now: datetime) -> bool:
        """The receiver took it: status ``sent``, its answer kept (clipped), the lease cleared. A row
        no longer pending (a late answer after another sender finished it) is left alone; returns
        whether the row changed."""
        values = {"status": "sent", "sent_at": utc(now), "answer": clip(answer), "lease_until": None}
        return self._finish(delivery_id, values)

    def mark_failed(self, delivery_id: str, error: str, now: datetime, retry_at: datetime | None) -> bool:
        """An attempt failed: one more failure, the error kept (clipped), the lease cleared; retried at
        ``retry_at``, or given up (``dead``) when it is None. Only a pending row changes; returns whether
        it did. (``now`` is when it failed; the outbox keeps no per-failure time.)"""
        utc(now)
        _, outbox = self._tables()
        values: dict[str, Any] = {
            "failures": outbox.c.failures + 1,
            "last_error": clip(error),
            "lease_until": None,
        }
        if retry_at is None:
            values["status"] = "dead"
        else:
            values["next_attempt_at"] = utc(retry_at)
        return self._finish(delivery_id, values)

    def deliveries(
        self, status: str | None = None, limit: int = 100, fingerprint: str | None = None
    ) -> list[Delivery]:
        """Deliveries newest first, optionally of one status and/or one alert."""
        _, outbox = self._tables()
        query = (
            sa.select(outbox).order_by(outbox.c.created_at.desc(), outbox.c.delivery_id.desc()).limit(limit)
        )
        if status is not None:
            query = query.where(outbox.c.status == check_choice("status", status, DELIVERY_STATUSES))
        if fingerprint is not None:
            query = query.where(outbox.c.fingerprint == fingerprint)

        def run() -> list[Delivery]:
            with self._engine.connect() as conn:
                return [delivery_from_row(row) for row in conn.execute(query).mappings()]

        return self._read(run)

    def delivery_counts(self) -> list[tuple[str, str, str, str, int, int]]:
        """(rule, channel, event, status, rows, failures) per group, sorted: what the metrics collector
        turns into alerts_fired_total, alerts_resolved_total and alerts_deliveries_failed_total."""
        _, outbox = self._tables()
        groups = (outbox.c.rule, outbox.c.channel, outbox.c.event, outbox.c.status)
        query = (
            sa.select(*groups, sa.func.count(), sa.func.coalesce(sa.func.sum(outbox.c.failures), 0))
            .group_by(*groups)
            .order_by(*groups)
        )

        def run() -> list[tuple[str, str, str, str, int, int]]:
            with self._engine.connect() as conn:
                return [
                    (rule, channel, event, status, int(rows), int(failures))
                    for rule, channel, event, status, rows, failures in conn.execute(query)
                ]

        return self._read(run)

    def prune(self, retention_days: int, now: datetime | None = None) -> int:
        """Delete finished (sent, dead) deliveries created, and resolved alerts resolved, more than
        ``retention_days`` before ``now`` (the database's clock when None); returns how many rows went.
        Pending deliveries stay whatever their age: they are work still to do."""
        check_retention(retention_days)
        states, outbox = self._tables()
        base = (
            sa.func.now() if now is None else sa.bindparam("now", utc(now), type_=sa.DateTime(timezone=True))
        )
        cutoff = base - sa.func.make_interval(0, 0, 0, int(retention_days))

        def run() -> int:
            with self._engine.begin() as conn:
                sent = conn.execute(
                    sa.delete(outbox).where(
                        outbox.c.status.in_(FINISHED_DELIVERY_STATUSES), outbox.c.created_at < cutoff
                    )
                ).rowcount
                resolved = conn.execute(
                    sa.delete(states).where(states.c.status == "resolved", states.c.resolved_at < cutoff)
                ).rowcount
            return sent + resolved

        return self._store.guarded_call(run, operation="delete")
