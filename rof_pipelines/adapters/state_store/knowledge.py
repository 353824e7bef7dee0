"""The knowledge base: finished optimisation tasks that meta/transfer learning seed from (table
``knowledge_tasks``)."""

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from rof_pipelines.adapters.state_store.repository import SqlRepository
from rof_pipelines.adapters.state_store.values import json_safe, market_key

if TYPE_CHECKING:
    from rof_pipelines.core.knowledge import TaskRecord


def knowledge_row(task: "TaskRecord") -> dict[str, Any]:
    """The row of a finished task, JSON-safe."""
    data = task.to_dict()
    return {
        "task_id": data["task_id"],
        "market": market_key(data["market"]),
        "finished_at": task.finished_at,
        "features": json_safe(data["features"]),
        "best_params": json_safe(data["best_params"]),
        "score": data["score"],
        "outcome": json_safe(data["outcome"]),
        "generations": data["generations"],
        "artifact": data["artifact"],
    }


def task_from_row(row: Any) -> "TaskRecord":
    from rof_pipelines.core.knowledge import TaskRecord

    return TaskRecord.from_dict(
        {**{k: v for k, v in row.items() if k != "created_at"}, "finished_at": row["finished_at"]}
    )


class SqlKnowledge(SqlRepository):
    """``store.knowledge``: what earlier optimisation tasks found, per market and day."""

    def add(self, task: "TaskRecord") -> None:
        """Insert or replace a finished task (the same task id re-run replaces its record)."""
        table = self._store.table("knowledge_tasks")
        values = knowledge_row(task)

        def run() -> None:
            with self._engine.begin() as conn:
                stmt = pg_insert(table).values(**values)
                update = {k: stmt.excluded[k] for k in values if k != "task_id"}
                conn.execute(stmt.on_conflict_do_update(index_elements=[table.c.task_id], set_=update))

        self._write(run)

    def tasks(
        self, *, now: datetime | None = None, retention_days: int | None = None, market: str | None = None
    ) -> list["TaskRecord"]:
        """Tasks finished within ``retention_days`` before ``now`` (all when None), oldest first; a
        task finished after ``now`` never counts (a replayed day must not see the future)."""
        table = self._store.table("knowledge_tasks")
        query = sa.select(table).order_by(table.c.finished_at, table.c.task_id)
        if now is not None:
            query = query.where(table.c.finished_at <= now)
            if retention_days is not None:
                query = query.where(table.c.finished_at >= now - timedelta(days=retention_days))
        if market is not None:
            query = query.where(table.c.market == market_key(market))

        def run() -> list["TaskRecord"]:
            with self._engine.connect() as conn:
                rows = list(conn.execute(query).mappings())
            return [task_from_row(row) for row in rows]

        return self._read(run)

    def prune(self, retention_days: int, now: datetime | None = None) -> int:
        """Delete tasks finished more than ``retention_days`` before ``now``; returns how many went."""
        column = self._store.table("knowledge_tasks").c.finished_at
        return self._prune_older_than(column, retention_days, now)
