"""Worker progress: the last report of each optimisation task (table ``worker_progress``)."""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from rof_pipelines.adapters.state_store.records import WorkerProgress
from rof_pipelines.adapters.state_store.repository import SqlRepository
from rof_pipelines.adapters.state_store.tables import PROGRESS_STATUSES
from rof_pipelines.adapters.state_store.values import as_object, check_choice, market_key
from rof_pipelines.adapters.state_store.versioned import check_expected, write_versioned


def progress_values(
    market: str,
    generation: int,
    total_generations: int,
    best_fitness: float | None,
    eta_seconds: float | None,
    status: str,
    details: Mapping[str, Any] | None,
    identity: Mapping[str, Any],
) -> dict[str, Any]:
    """The columns a report writes, checked; ``identity`` fields left None keep what the row holds."""
    values: dict[str, Any] = {
        "market": market_key(market),
        "status": check_choice("status", status, PROGRESS_STATUSES),
        "generation": generation,
        "total_generations": total_generations,
        "best_fitness": best_fitness,
        "eta_seconds": eta_seconds,
        "details": as_object("details", details),
    }
    values.update({name: value for name, value in identity.items() if value is not None})
    return values


class SqlProgress(SqlRepository):
    """``store.progress``: what each optimisation task last reported."""

    def record(
        self,
        task_id: str,
        market: str,
        generation: int,
        total_generations: int,
        best_fitness: float | None,
        eta_seconds: float | None,
        status: str,
        details: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
        *,
        worker_id: str | None = None,
        experiment_id: str | None = None,
        window_start: datetime | None = None,
        window_end: datetime | None = None,
    ) -> int:
        """Write a task's progress; return the row's new version.

        ``expected_version``: None - insert or overwrite (the task's own worker reporting);
        0 - insert only (claim a task: ConflictError if it already exists);
        N - overwrite only if the row is still at version N, else ConflictError.
        ``worker_id``/``experiment_id``/``window_*`` left as None keep what the row holds.
        """
        check_expected(expected_version)
        identity = {
            "worker_id": worker_id,
            "experiment_id": experiment_id,
            "window_start": window_start,
            "window_end": window_end,
        }
        values = progress_values(
            market, generation, total_generations, best_fitness, eta_seconds, status, details, identity
        )
        table = self._store.table("worker_progress")
        row = write_versioned(
            self._store,
            table,
            {"task_id": task_id},
            values,
            expected_version,
            blind_overwrite=True,
            returning=[table.c.version],
        )
        return row["version"]

    def get(self, task_id: str) -> WorkerProgress | None:
        """The task's last progress report, or None if it never reported."""
        table = self._store.table("worker_progress")

        def run() -> WorkerProgress | None:
            with self._engine.connect() as conn:
                row = conn.execute(sa.select(table).where(table.c.task_id == task_id)).mappings().first()
            return WorkerProgress(**row) if row is not None else None

        return self._read(run)

    def find(self, market: str | None = None, status: str | None = None) -> list[WorkerProgress]:
        """Progress rows, newest first, optionally for one market and/or status."""
        table = self._store.table("worker_progress")
        query = sa.select(table).order_by(table.c.updated_at.desc(), table.c.task_id)
        if market is not None:
            query = query.where(table.c.market == market_key(market))
        if status is not None:
            query = query.where(table.c.status == check_choice("status", status, PROGRESS_STATUSES))

        def run() -> list[WorkerProgress]:
            with self._engine.connect() as conn:
                return [WorkerProgress(**row) for row in conn.execute(query).mappings()]

        return self._read(run)
