"""GA checkpoints: the saved generations of each optimisation task (table ``ga_checkpoints``).

A task is (market, experiment_id, window_start, window_end, data_fingerprint, config_fingerprint);
``task_id`` names it for people and for :meth:`SqlCheckpoints.generations`. ``payload`` is opaque
here (see rof_pipelines/adapters/optimisation.py).
"""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from rof_pipelines.adapters.state_store.records import GACheckpoint
from rof_pipelines.adapters.state_store.repository import SqlRepository
from rof_pipelines.adapters.state_store.values import SERVICE, market_key
from rof_pipelines.errors import DataValidationError

# The columns that name one task (with ``generation``: the unique constraint).
TASK_COLUMNS: tuple[str, ...] = (
    "market",
    "experiment_id",
    "window_start",
    "window_end",
    "data_fingerprint",
    "config_fingerprint",
)


def checkpoint_values(
    key: Mapping[str, Any],
    generation: int,
    payload: bytes,
    final: bool,
    best_fitness: float | None,
    keep: int,
) -> dict[str, Any]:
    """The row a save writes, checked."""
    if generation < 0 or keep < 1:
        raise DataValidationError(f"{SERVICE}: generation must be >= 0 and keep >= 1")
    return {
        "task_id": str(key["task_id"]),
        "market": market_key(key["market"]),
        "experiment_id": str(key["experiment_id"]),
        "window_start": key["window_start"],
        "window_end": key["window_end"],
        "data_fingerprint": str(key["data_fingerprint"]),
        "config_fingerprint": str(key["config_fingerprint"]),
        "generation": int(generation),
        "final": bool(final),
        "best_fitness": best_fitness,
        "payload": bytes(payload),
    }


class SqlCheckpoints(SqlRepository):
    """``store.checkpoints``: resume points of optimisation tasks, the newest few per task."""

    def _task_filter(self, key: Mapping[str, Any]) -> list[Any]:
        table = self._store.table("ga_checkpoints")
        return [
            table.c.market == market_key(key["market"]),
            table.c.experiment_id == key["experiment_id"],
            table.c.window_start == key["window_start"],
            table.c.window_end == key["window_end"],
            table.c.data_fingerprint == key["data_fingerprint"],
            table.c.config_fingerprint == key["config_fingerprint"],
        ]

    def save(
        self,
        key: Mapping[str, Any],
        generation: int,
        payload: bytes,
        *,
        final: bool = False,
        best_fitness: float | None = None,
        keep: int = 2,
    ) -> None:
        """Store generation ``generation`` of the task ``key`` (market, experiment_id, window_start,
        window_end, data_fingerprint, config_fingerprint, task_id); a repeated generation (a resumed run
        replaying it) overwrites. Only the newest ``keep`` checkpoints of the task stay: resuming needs
        the newest, so older ones would only grow the table."""
        values = checkpoint_values(key, generation, payload, final, best_fitness, keep)
        table = self._store.table("ga_checkpoints")
        where = self._task_filter(key)

        def run() -> None:
            with self._engine.begin() as conn:
                stmt = pg_insert(table).values(**values)
                stmt = stmt.on_conflict_do_update(
                    constraint="uq_ga_checkpoints_task_generation",
                    set_={
                        "payload": stmt.excluded.payload,
                        "final": stmt.excluded.final,
                        "best_fitness": stmt.excluded.best_fitness,
                        "task_id": stmt.excluded.task_id,
                        "created_at": sa.func.now(),
                    },
                )
                conn.execute(stmt)
                newest = (
                    sa.select(table.c.generation)
                    .where(*where)
                    .order_by(table.c.generation.desc())
                    .limit(keep)
                    .scalar_subquery()
                )
                conn.execute(sa.delete(table).where(*where, table.c.generation.not_in(newest)))

        self._write(run)

    def latest(self, key: Mapping[str, Any]) -> GACheckpoint | None:
        """The task's newest checkpoint (highest generation), or None."""
        table = self._store.table("ga_checkpoints")
        query = sa.select(table).where(*self._task_filter(key)).order_by(table.c.generation.desc()).limit(1)

        def run() -> GACheckpoint | None:
            with self._engine.connect() as conn:
                row = conn.execute(query).mappings().first()
            if row is None:
                return None
            values = {k: v for k, v in row.items() if k != "id"}
            values["payload"] = bytes(values["payload"])
            return GACheckpoint(**values)

        return self._read(run)

    def generations(self, task_id: str) -> list[tuple[int, bool]]:
        """The generations an optimisation task still has checkpoints of, ascending, each with its
        ``final`` flag (older ones are pruned, so this is the tail of the run)."""
        table = self._store.table("ga_checkpoints")
        query = (
            sa.select(table.c.generation, table.c.final)
            .where(table.c.task_id == task_id)
            .order_by(table.c.generation)
        )

        def run() -> list[tuple[int, bool]]:
            with self._engine.connect() as conn:
                return [(int(gen), bool(final)) for gen, final in conn.execute(query)]

        return self._read(run)

    def prune(self, retention_days: int, now: datetime | None = None) -> int:
        """Delete checkpoints written more than ``retention_days`` ago; returns how many went."""
        return self._prune_older_than(self._store.table("ga_checkpoints").c.created_at, retention_days, now)
