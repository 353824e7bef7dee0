"""The message inbox in the state store: every accepted RabbitMQ message, once, in arrival order.

A sensor tick inserts what it drained in one transaction (a redelivered message is ignored by its
``message_id``) and only then acks; runs are requested from inbox rows after the sensor's cursor, so
a tick that dies anywhere loses nothing, and run keys (the message ids) keep a replay from running
anything twice.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from rof_pipelines.adapters.messages import Message
from rof_pipelines.adapters.rabbitmq import Received
from rof_pipelines.adapters.state_store import StateStore

TABLE = "message_inbox"


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
        returns how many were new. Malformed ones are not stored: they go to the dead-letter queue."""
        rows = [
            _row(item.message, item.delivery.redelivered) for item in received if item.message is not None
        ]
        if not rows:
            return 0

        def run() -> int:
            with self._store.engine.begin() as connection:
                statement = (
                    pg_insert(self.table).values(rows).on_conflict_do_nothing(index_elements=["message_id"])
                )
                return connection.execute(statement).rowcount or 0

        return self._store._call(run)

    def after(self, kind: str, cursor: int, limit: int) -> list[InboxRow]:
        """Rows of one kind with ``seq > cursor``, oldest first."""

        def run() -> list[InboxRow]:
            query = (
                sa.select(self.table)
                .where(self.table.c.kind == kind, self.table.c.seq > cursor)
                .order_by(self.table.c.seq)
                .limit(limit)
            )
            with self._store.engine.connect() as connection:
                return [
                    InboxRow(r.seq, r.message_id, r.kind, r.market, dict(r.payload), r.received_at)
                    for r in connection.execute(query)
                ]

        return self._store._call(run)

    def count(self, kind: str | None = None) -> int:
        def run() -> int:
            query = sa.select(sa.func.count()).select_from(self.table)
            if kind is not None:
                query = query.where(self.table.c.kind == kind)
            with self._store.engine.connect() as connection:
                return int(connection.execute(query).scalar_one())

        return self._store._call(run)


def _row(message: Message, redelivered: bool) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "kind": message.kind,
        "market": getattr(message, "market", None),
        "payload": message.model_dump(mode="json"),
        "redelivered": bool(redelivered),
    }
