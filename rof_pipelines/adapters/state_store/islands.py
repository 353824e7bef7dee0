"""The island GA's epochs: each island's state at the end of each epoch (table ``ga_island_epochs``).

One row per (task_id, island, epoch); epoch 0 is an island's share of the initial population. The
first write of a row wins and later ones are no-ops: an island-epoch is a pure function of the task,
so a re-executed step can only write what is there already. ``payload`` is opaque here (see
rof_pipelines/adapters/optimisation.py).
"""

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from rof_pipelines.adapters.state_store.records import IslandEpochRecord
from rof_pipelines.adapters.state_store.repository import SqlRepository
from rof_pipelines.adapters.state_store.values import SERVICE
from rof_pipelines.errors import DataValidationError


def island_epoch_values(task_id: str, island: int, epoch: int, payload: bytes) -> dict[str, Any]:
    """The row a save writes, checked."""
    if not task_id or island < 0 or epoch < 0:
        raise DataValidationError(f"{SERVICE}: an island epoch needs a task_id, island >= 0 and epoch >= 0")
    return {"task_id": str(task_id), "island": int(island), "epoch": int(epoch), "payload": bytes(payload)}


class SqlIslands(SqlRepository):
    """``store.islands``: the island GA's epoch results, read by the next epoch's steps."""

    def save(self, task_id: str, island: int, epoch: int, payload: bytes) -> bool:
        """Store island ``island``'s state after ``epoch``; False when the row was there already
        (kept as it was)."""
        values = island_epoch_values(task_id, island, epoch, payload)
        table = self._store.table("ga_island_epochs")

        def run() -> bool:
            with self._engine.begin() as conn:
                stmt = (
                    pg_insert(table)
                    .values(**values)
                    .on_conflict_do_nothing(constraint="uq_ga_island_epochs_task_island_epoch")
                    .returning(table.c.id)
                )
                return conn.execute(stmt).first() is not None

        return self._write(run)

    def _records(self, *where: Any) -> list[IslandEpochRecord]:
        table = self._store.table("ga_island_epochs")
        query = sa.select(table).where(*where).order_by(table.c.epoch, table.c.island)

        def run() -> list[IslandEpochRecord]:
            with self._engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
            return [
                IslandEpochRecord(
                    **{**{k: v for k, v in row.items() if k != "id"}, "payload": bytes(row["payload"])}
                )
                for row in rows
            ]

        return self._read(run)

    def get(self, task_id: str, island: int, epoch: int) -> IslandEpochRecord | None:
        """One island's state after ``epoch``, or None."""
        table = self._store.table("ga_island_epochs")
        found = self._records(table.c.task_id == task_id, table.c.island == island, table.c.epoch == epoch)
        return found[0] if found else None

    def epoch(self, task_id: str, epoch: int) -> list[IslandEpochRecord]:
        """Every stored island of ``epoch``, by island."""
        table = self._store.table("ga_island_epochs")
        return self._records(table.c.task_id == task_id, table.c.epoch == epoch)

    def prune(self, retention_days: int, now: datetime | None = None) -> int:
        """Delete rows written more than ``retention_days`` ago; returns how many went."""
        return self._prune_older_than(self._store.table("ga_island_epochs").c.created_at, retention_days, now)
