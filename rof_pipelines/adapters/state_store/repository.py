"""What every SQL repository of the state store shares: the store's engine and tables, calls through
its breaker, and deleting rows by age."""

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa

from rof_pipelines.adapters.state_store.values import SERVICE
from rof_pipelines.errors import DataValidationError

if TYPE_CHECKING:
    from rof_pipelines.adapters.state_store.store import StateStore

T = TypeVar("T")


class SqlRepository:
    """One concern's tables on the state store's engine."""

    def __init__(self, store: "StateStore") -> None:
        self._store = store
        self._engine = store.engine

    def _read(self, fn: Callable[[], T]) -> T:
        return self._store.guarded_call(fn, operation="read")

    def _write(self, fn: Callable[[], T]) -> T:
        return self._store.guarded_call(fn, operation="write")

    def _prune_older_than(self, column: sa.Column, retention_days: int, now: datetime | None) -> int:
        """Delete the rows of ``column``'s table whose ``column`` is more than ``retention_days`` before
        ``now`` (the database's clock when None); returns how many went."""
        if retention_days < 1:
            raise DataValidationError(f"{SERVICE}: retention_days must be >= 1, got {retention_days}")
        base = sa.func.now() if now is None else sa.bindparam("now", now, type_=sa.DateTime(timezone=True))
        cutoff = base - sa.func.make_interval(0, 0, 0, int(retention_days))

        def run() -> int:
            with self._engine.begin() as conn:
                return conn.execute(sa.delete(column.table).where(column < cutoff)).rowcount

        return self._store.guarded_call(run, operation="delete")
