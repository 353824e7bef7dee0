"""How a step or a tick answers the project's errors, in one place.

- :data:`TRANSIENT_RETRY` is the one retry policy of every asset: a :class:`TransientError` (a lost
  connection, an open circuit) fails the step with retries allowed, so Dagster retries it with backoff;
  a :class:`PermanentError` (bad input, bad config) fails it at once, since retrying cannot help.
- :func:`step_errors` does that conversion around the calls of an asset body, with the service and
  operation of the error in the failure's metadata.
- :func:`state_store_optional` is the one place where "the state store is down" may degrade instead of
  failing: it is used where the result stays correct without the store (GA seeding, a sensor that
  records on a later tick) and says so in the log.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from dagster import Backoff, Failure, MetadataValue, RetryPolicy

from rof_pipelines.errors import PermanentError, RofError, TransientError

TRANSIENT_RETRY = RetryPolicy(max_retries=2, delay=5, backoff=Backoff.EXPONENTIAL)


def error_metadata(exc: BaseException) -> dict[str, MetadataValue]:
    """The error's class, service and operation, for a failure's metadata (and later, alert labels)."""
    service = getattr(exc, "service", None) or "unknown"
    operation = getattr(exc, "operation", None) or "unknown"
    return {
        "error": MetadataValue.text(type(exc).__name__),
        "service": MetadataValue.text(service),
        "operation": MetadataValue.text(operation),
        "retryable": MetadataValue.bool(isinstance(exc, TransientError)),
    }


def step_failure(exc: RofError, description: str | None = None) -> Failure:
    """A ``Failure`` that Dagster retries exactly when the error is transient."""
    return Failure(
        description=description or str(exc),
        allow_retries=isinstance(exc, TransientError),
        metadata=error_metadata(exc),
    )


@contextmanager
def step_errors(what: str = "") -> Iterator[None]:
    """Project errors raised inside become step failures: transient ones retried, permanent ones not.
    ``what`` prefixes the description (the market and day, say)."""
    try:
        yield
    except RofError as exc:
        raise step_failure(exc, f"{what}: {exc}" if what else None) from exc


def state_store_failure(where: str, what: str, exc: RofError) -> Failure:
    """The state store holds what makes a result auditable (checkpoints, trial counts, experiments,
    the active config): without it the step fails visibly and is retried, never a green run that
    lost its record."""
    return step_failure(
        exc,
        f"{where}: the state store is unavailable ({type(exc).__name__}: {exc}); {what} cannot be "
        f"stored or read, so this step fails instead of reporting a result that was not recorded. It "
        f"is retried; start the state store's PostgreSQL (state_storage.*)",
    )


@contextmanager
def state_store_required(where: str, what: str) -> Iterator[None]:
    """Around state-store calls whose result must be recorded: a transient failure fails the step
    with :func:`state_store_failure` (retried); a permanent one fails it without retries."""
    try:
        yield
    except TransientError as exc:
        raise state_store_failure(where, what, exc) from exc
    except PermanentError as exc:
        raise step_failure(exc, f"{where}: {exc}") from exc


@dataclass
class Degraded:
    """Set by :func:`state_store_optional` when the store was down: ``reason`` says why, ``error`` is
    the error itself (for a caller that reports it in its own words)."""

    reason: str = ""
    error: TransientError | None = None

    def __bool__(self) -> bool:
        return bool(self.reason)


@contextmanager
def state_store_optional(log, what: str) -> Iterator[Degraded]:  # type: ignore[no-untyped-def]
    """Around state-store calls the caller can do without: a transient failure is logged as a warning
    naming ``what`` is skipped, and the yielded :class:`Degraded` is set; the caller reads it and
    carries on. Permanent errors still raise."""
    degraded = Degraded()
    try:
        yield degraded
    except TransientError as exc:
        degraded.reason = f"state store unavailable ({type(exc).__name__}: {exc})"
        degraded.error = exc
        log.warning(f"{what} skipped: {degraded.reason}")
