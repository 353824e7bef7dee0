"""The message inbox in the state store: every accepted RabbitMQ message, once, in arrival order.

A sensor tick inserts what it drained in one transaction (a redelivered message is ignored by its
``message_id``) and only then acks; runs are requested from inbox rows after the sensor's cursor, so
a tick that dies anywhere loses nothing, and run keys (the message ids) keep a replay from running
anything twice.

A row that cannot become a run request (an error nobody foresaw, or a row stored before the checks
that now refuse it) is quarantined: ``quarantined_at`` and ``quarantine_reason`` are set, the
sensors skip it from then on, and ``workerpool_inbox_quarantined_total`` counts it for alerting.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert

from rof_pipelines.adapters.messages import Message
from rof_pipelines.adapters.metrics import INBOX_QUARANTINED
from rof_pipelines.adapters.rabbitmq import Received
from rof_pipelines.adapters.state_store import StateStore
from rof_pipelines.errors import PermanentError, RefusedMessages

TABLE = "message_inbox"
MAX_QUARANTINE_REASON_CHARS = 2000


@dataclass(frozen=True)
class InboxRow:
    seq: int
    message_id: str
    kind: str
    market: str | None
    payload: dict[str, Any]
    received_at: datetime


class Inbox:
    def __init__(self, store: StateStore):
        self._store = store
        self.table = store.metadata.tables[f"{store.schema}.{TABLE}"]  # defined in build_metadata

    def add(self, received: Sequence[Received]) -> int:
        """Insert the parsed messages of one drained batch in ONE transaction (COMMIT on return);
        returns how many were new. Malformed ones are not stored: they go to the dead-letter queue.

        Should PostgreSQL refuse a value (a data exception, which one bad message causes for the
        whole batch), the rows are stored one by one and :class:`RefusedMessages` names the ones it
        refused, so the drain dead-letters those and acks the rest instead of retrying all forever.
        """
        pairs = [
            (item, _row(item.message, item.delivery.redelivered))
            for item in received
            if item.message is not None
        ]
        if not pairs:
            return 0
        try:
            return self._insert([row for _, row in pairs])
        except PermanentError as exc:
            if not _refused_value(exc):
                raise
        stored, refused = 0, {}
        for item, row in pairs:
            try:
                stored += self._insert([row])
            except PermanentError as exc:
                reason = _refused_value(exc)
                if not reason:
                    raise
                refused[item.delivery.delivery_tag] = reason
        if refused:
            raise RefusedMessages(refused)
        return stored

    def _insert(self, rows: list[dict[str, Any]]) -> int:
        def run() -> int:
            with self._store.engine.begin() as connection:
                statement = (
                    pg_insert(self.table).values(rows).on_conflict_do_nothing(index_elements=["message_id"])
                )
                return connection.execute(statement).rowcount or 0

        return self._store.guarded_call(run, operation="write")

    def quarantine(self, rows: Sequence[tuple[InboxRow, str]]) -> None:
        """Set rows aside with the reason, in one transaction: no sensor turns them into runs again."""
        if not rows:
            return
        table = self.table

        def run() -> None:
            with self._store.engine.begin() as connection:
                for row, reason in rows:
                    connection.execute(
                        table.update()
                        .where(table.c.seq == row.seq)
                        .values(
                            quarantined_at=sa.func.now(),
                            quarantine_reason=reason[:MAX_QUARANTINE_REASON_CHARS] or "unknown error",
                        )
                    )

        self._store.guarded_call(run, operation="write")
        for row, _ in rows:
            INBOX_QUARANTINED.labels(row.kind).inc()

    def quarantined(self, kind: str | None = None) -> list[tuple[InboxRow, str]]:
        """Quarantined rows with their reasons, oldest first (for operators and tests)."""

        def run() -> list[tuple[InboxRow, str]]:
            query = sa.select(self.table).where(self.table.c.quarantined_at.is_not(None))
            if kind is not None:
                query = query.where(self.table.c.kind == kind)
            with self._store.engine.connect() as connection:
                return [
                    (_inbox_row(r), r.quarantine_reason) for r in connection.execute(query.order_by("seq"))
                ]

        return self._store.guarded_call(run, operation="read")

    def after(self, kind: str, cursor: int, limit: int) -> list[InboxRow]:
        """Rows of one kind with ``seq > cursor``, oldest first; quarantined rows are left out."""

        def run() -> list[InboxRow]:
            query = (
                sa.select(self.table)
                .where(
                    self.table.c.kind == kind,
                    self.table.c.seq > cursor,
                    self.table.c.quarantined_at.is_(None),
                )
                .order_by(self.table.c.seq)
                .limit(limit)
            )
            with self._store.engine.connect() as connection:
                return [_inbox_row(r) for r in connection.execute(query)]

        return self._store.guarded_call(run, operation="read")

    def count(self, kind: str | None = None) -> int:
        def run() -> int:
            query = sa.select(sa.func.count()).select_from(self.table)
            if kind is not None:
                query = query.where(self.table.c.kind == kind)
            with self._store.engine.connect() as connection:
                return int(connection.execute(query).scalar_one())

        return self._store.guarded_call(run, operation="read")


def _inbox_row(r: Any) -> InboxRow:
    payload = r.payload if isinstance(r.payload, dict) else {}
    return InboxRow(r.seq, r.message_id, r.kind, r.market, dict(payload), r.received_at)


def _refused_value(exc: BaseException) -> str | None:
    """The database's reason when ``exc`` is PostgreSQL refusing a value (SQLSTATE class 22, data
    exception: one message's fault), else None (anything else is everyone's problem: retry)."""
    cause = exc.__cause__
    if isinstance(cause, sa_exc.DataError):
        return str(cause.orig).splitlines()[0] if cause.orig is not None else type(cause).__name__
    return None


def _row(message: Message, redelivered: bool) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "kind": message.kind,
        "market": getattr(message, "market", None),
        "payload": message.model_dump(mode="json"),
        "redelivered": bool(redelivered),
    }
