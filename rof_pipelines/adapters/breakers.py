"""One circuit breaker per external service (pybreaker), shared by every adapter in the process.

Only transient failures (lost connections, timeouts) count towards opening a circuit; a permanent
error such as a bad SQL statement or bad input is the caller's fault and passes straight through.
While a circuit is open, calls fail fast with :class:`CircuitOpenError`, which is transient.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pybreaker

from rof_pipelines.adapters.metrics import BREAKER_FAILURES, BREAKER_STATE, BREAKER_TRANSITIONS

# The adapters' password-free error text; defined beside the config's redaction, one set of rules.
from rof_pipelines.core.redaction import error_message, scrub  # noqa: F401
from rof_pipelines.errors import CircuitOpenError, PermanentError, RofError
from rof_pipelines.settings import CircuitBreakerConfig

R = TypeVar("R")

_STATE_VALUE = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}


_opened_at: dict[str, float] = {}  # service -> when its circuit last opened (time.time())


class _MetricsListener(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: pybreaker.CircuitBreaker, _old_state, new_state) -> None:  # type: ignore[no-untyped-def]
        BREAKER_STATE.labels(cb.name).set(_STATE_VALUE.get(new_state.name, 0))
        if new_state.name == pybreaker.STATE_OPEN:
            _opened_at[cb.name] = time.time()
        BREAKER_TRANSITIONS.labels(cb.name, new_state.name.replace("-", "_")).inc()

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        BREAKER_FAILURES.labels(cb.name).inc()


_registry: dict[str, pybreaker.CircuitBreaker] = {}
_lock = threading.Lock()


def breaker_for(service: str, config: CircuitBreakerConfig | None = None) -> pybreaker.CircuitBreaker:
    """The process-wide breaker of a service; thresholds come from the first config seen (or defaults)
    and are updated when a later call passes a different config (hot reload)."""
    config = config or CircuitBreakerConfig()
    with _lock:
        breaker = _registry.get(service)
        if breaker is None:
            breaker = pybreaker.CircuitBreaker(
                fail_max=config.fail_max,
                reset_timeout=config.reset_timeout.total_seconds(),
                exclude=[PermanentError],
                listeners=[_MetricsListener()],
                name=service,
            )
            BREAKER_STATE.labels(service).set(0)
            _registry[service] = breaker
        else:
            breaker.fail_max = config.fail_max
            breaker.reset_timeout = config.reset_timeout.total_seconds()
        return breaker


@dataclass(frozen=True)
class BreakerState:
    """One breaker of this process, as alert rules read it."""

    service: str
    state: str  # closed, half_open, open
    open_seconds: float  # how long it has been open (0 unless open)
    failures: int  # consecutive failures counted


def breaker_states() -> list[BreakerState]:
    """Every breaker this process has, by service (the alerts sensor reads its own process's)."""
    now = time.time()
    with _lock:
        breakers = sorted(_registry.items())
    out = []
    for service, breaker in breakers:
        state = breaker.current_state.replace("-", "_")
        opened = _opened_at.get(service, now) if state == "open" else now
        out.append(BreakerState(service, state, max(0.0, now - opened), breaker.fail_counter))
    return out


def reset_breakers() -> None:
    """Close every circuit (tests, and an operator's manual reset)."""
    with _lock:
        for breaker in _registry.values():
            breaker.close()


def guarded_call(
    service: str,
    config: CircuitBreakerConfig | None,
    translate: Callable[[BaseException], RofError],
    fn: Callable[..., R],
    *args: Any,
    operation: str | None = None,
) -> R:
    """Run ``fn(*args)`` through the service's breaker; driver errors become the project's own errors
    (``translate``, usually an :class:`~rof_pipelines.errors.ErrorMap`'s translator), tagged with
    ``service`` and ``operation``."""
    breaker = breaker_for(service, config)
    operation = operation or getattr(fn, "__name__", None)

    def call() -> R:
        try:
            return fn(*args)
        except RofError as exc:
            exc.with_context(service, operation)
            raise
        except Exception as exc:
            raise translate(exc).with_context(service, operation) from exc

    try:
        return breaker.call(call)
    except pybreaker.CircuitBreakerError as exc:
        raise CircuitOpenError(
            f"{service}: circuit open after {breaker.fail_counter} consecutive failures; "
            f"calls are refused for {breaker.reset_timeout:.0f}s before a trial call"
        ).with_context(service, operation) from exc
