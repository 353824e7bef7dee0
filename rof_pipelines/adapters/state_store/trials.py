"""The trial ledger: every configuration ever scored for an A/B task (table ``experiment_trials``),
so the deflated Sharpe ratio counts trials, not runs."""

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from rof_pipelines.adapters.state_store.repository import SqlRepository

INSERT_BATCH_ROWS = 1000


def trial_rows(task_key: str, trials: Mapping[str, float]) -> list[dict[str, Any]]:
    """One row per scored configuration; NaN scores are not trials anyone could have picked."""
    return [
        {"task_key": task_key, "config_hash": key, "sharpe": float(value)}
        for key, value in trials.items()
        if value == value
    ]


class SqlTrials(SqlRepository):
    """``store.trials``: the configurations scored per task, first score kept."""

    def record(self, task_key: str, trials: Mapping[str, float]) -> None:
        """Add configurations scored for ``task_key`` (config hash -> Sharpe); one already recorded
        keeps its first score, so recording the same trials again changes nothing."""
        if not trials:
            return
        table = self._store.table("experiment_trials")
        rows = trial_rows(task_key, trials)

        def run() -> None:
            with self._engine.begin() as conn:
                for start in range(0, len(rows), INSERT_BATCH_ROWS):
                    stmt = pg_insert(table).values(rows[start : start + INSERT_BATCH_ROWS])
                    conn.execute(
                        stmt.on_conflict_do_nothing(index_elements=[table.c.task_key, table.c.config_hash])
                    )

        self._write(run)

    def stats(self, task_key: str) -> tuple[int, float | None]:
        """How many distinct configurations were ever scored for the task, and the variance of their
        Sharpe ratios (None below two trials)."""
        table = self._store.table("experiment_trials")

        def run() -> tuple[int, float | None]:
            with self._engine.connect() as conn:
                count, variance = conn.execute(
                    sa.select(sa.func.count(), sa.func.var_samp(table.c.sharpe)).where(
                        table.c.task_key == task_key
                    )
                ).one()
            return int(count), None if variance is None else float(variance)

        return self._read(run)
