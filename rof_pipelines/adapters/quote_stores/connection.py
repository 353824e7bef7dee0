"""One connection to a SQL service, shared by the calls of one store: opened on first use, guarded by
a lock (so the store is thread-safe), dropped when a failure leaves it unusable, and every call run
through the service's circuit breaker with the driver family's :class:`~rof_pipelines.errors.ErrorMap`.

The PostgreSQL and ClickHouse stores differ only in how a connection is opened, closed and judged
broken; those are the three hooks a subclass fills in.
"""

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from rof_pipelines.adapters.breakers import guarded_call
from rof_pipelines.errors import ErrorMap
from rof_pipelines.settings import CircuitBreakerConfig

C = TypeVar("C")
R = TypeVar("R")


class GuardedConnection(ABC, Generic[C]):
    """A lazily opened, lock-guarded connection ``C``; ``run(fn, operation=...)`` calls ``fn(conn)``."""

    def __init__(
        self,
        service: str,
        breaker: CircuitBreakerConfig,
        errors: ErrorMap,
        label: Callable[[], str],
        secrets: Sequence[str] = (),
    ) -> None:
        self.service = service
        self.breaker = breaker
        self._translate = errors.translator(service=service, label=label, secrets=secrets)
        self._conn: C | None = None
        self._lock = threading.Lock()

    @property
    def timeout_s(self) -> float:
        """The breaker's per-call timeout, which the drivers' own timeouts follow."""
        return self.breaker.call_timeout.total_seconds()

    # -- what a driver fills in ------------------------------------------------------------------------

    @abstractmethod
    def _open(self) -> C:
        """A new connection."""

    @abstractmethod
    def _close(self, conn: C) -> None:
        """Release ``conn`` (must not raise for an already broken one)."""

    def _reusable(self, conn: C) -> bool:
        """Whether the held connection may serve the next call."""
        return True

    def _spoiled_by(self, conn: C, exc: BaseException) -> bool:
        """Whether ``exc``, raised by a call on ``conn``, leaves it unusable."""
        return True

    # -- the lifecycle ---------------------------------------------------------------------------------

    def run(self, fn: Callable[[C], R], *, operation: str) -> R:
        """``fn(conn)`` under the lock and through the breaker; driver errors become project errors
        tagged with the service and ``operation``."""
        with self._lock:
            return guarded_call(
                self.service, self.breaker, self._translate, self._call, fn, operation=operation
            )

    def close(self) -> None:
        with self._lock:
            self._discard()

    def _connection(self) -> C:
        if self._conn is not None and not self._reusable(self._conn):
            self._discard()
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _discard(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._close(conn)

    def _call(self, fn: Callable[[C], R]) -> R:
        conn = self._connection()
        try:
            return fn(conn)
        except BaseException as exc:
            if self._spoiled_by(conn, exc):
                self._discard()
            raise
