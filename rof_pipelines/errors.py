"""The project's own error taxonomy, every exception class the project raises, and the tables that map
a driver's exceptions onto it.

Callers decide what to retry from the class alone: a ``TransientError`` may succeed if tried again
(a dropped connection, an open circuit, an optimistic-lock conflict); a ``PermanentError`` will not
(bad input, bad config, a refused operation). Every error can carry the ``service`` (``postgres``,
``state_store``, ``rabbitmq``, ...) and the ``operation`` (``write``, ``publish``, ...) it came from,
so a metrics label or an alert rule reads them instead of parsing the message.

Adapters translate driver exceptions through one :class:`ErrorMap` per driver family: an ordered
table of (exception classes or predicate -> project class), first match wins.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


class RofError(Exception):
    """Base of every error this project raises on purpose."""

    service: str | None = None
    operation: str | None = None

    def with_context(self, service: str | None = None, operation: str | None = None) -> "RofError":
        """Fill in where the error happened (a value already set wins: the innermost knows best)."""
        self.service = self.service or service
        self.operation = self.operation or operation
        return self

    @property
    def retryable(self) -> bool:
        return isinstance(self, TransientError)


class TransientError(RofError):
    """Retrying later may succeed."""


class PermanentError(RofError):
    """Retrying will not help; the input, config or request must change."""


# --- permanent ------------------------------------------------------------------------------------


class ConfigError(PermanentError):
    """Configuration is invalid; the message names the key path and the reason."""


class AlertRuleError(ConfigError):
    """An alert rule that cannot be used: its name, where in the expression (or template), and why."""

    def __init__(self, rule: str, reason: str, line: int | None = None, column: int | None = None) -> None:
        self.rule, self.reason, self.line, self.column = rule, reason, line, column
        where = f" at line {line}, column {column}" if line is not None and column is not None else ""
        super().__init__(f"alert rule {rule!r}: {reason}{where}")


class FigureNotSet(ValueError):
    """An alert rule read a figure its entity does not have (an asset never materialised): the rule
    cannot decide for that entity, which is normal, not an error of the rule."""


class DataValidationError(PermanentError):
    """Input data is malformed; the message names the row and/or column."""


class NotFoundError(PermanentError):
    """A requested object does not exist."""


class TradingDisabledError(PermanentError):
    """An order path was invoked while ``ai_config.allow_trading`` is false."""


class NoLiveRouteError(PermanentError):
    """Trading is allowed by config, but no live order route (broker / exchange adapter) exists."""


class PartitionOutOfRange(PermanentError):
    """A day outside the `date` partitions (before ``storage.history_start`` or in the future)."""


class BarIntervalTooFine(DataValidationError):
    """The bar interval asked for is finer than the stored data: bars would have to be invented."""


class MalformedMessage(DataValidationError):
    """A body that can never be processed: bad JSON, unknown kind, wrong version or an invalid field.

    Not retryable; the consumer dead-letters it with ``reason`` in a header.
    """

    def __init__(self, reason: str, *, kind: str | None = None, message_id: str | None = None) -> None:
        self.reason = reason
        self.kind = kind
        self.message_id = message_id
        where = ", ".join(
            part for part in (kind and f"kind {kind}", message_id and f"id {message_id}") if part
        )
        super().__init__(f"malformed message{f' ({where})' if where else ''}: {reason}")


class UnrunnableMessage(MalformedMessage):
    """A well-formed message this deployment cannot run: a day outside the partitions, a range or a
    number of runs over the configured limits. Dead-lettered like a malformed one."""


class RefusedMessages(PermanentError):
    """Raised by a drain's ``on_batch`` that committed every message of the batch except these
    (values the store cannot hold): the drain dead-letters them with the reasons and acks the rest,
    so one such message cannot send the whole batch back to the queue on every tick."""

    def __init__(self, reasons: Mapping[int, str]) -> None:
        self.reasons = dict(reasons)  # delivery tag -> why it could not be stored
        super().__init__(
            f"{len(self.reasons)} message(s) could not be stored: {'; '.join(self.reasons.values())}"
        )


class InvalidRequest(DataValidationError):
    """An ops-service request with a parameter out of bounds; answered with HTTP 400 and the reason."""


class ReferenceUnavailable(PermanentError):
    """The C yardstick cannot be built or run here (no compiler, a failed compile, a crash)."""


# --- transient ------------------------------------------------------------------------------------


class StoreUnavailableError(TransientError):
    """An external service (database, broker) could not be reached or failed mid-call."""


class CircuitOpenError(StoreUnavailableError):
    """The circuit breaker for a service is open; calls are refused until it half-opens."""


class AlertDeliveryError(TransientError):
    """A channel did not take a notification (receiver down, 5xx, 429): the outbox retries it later,
    not before ``retry_after`` seconds when the receiver asked for that."""

    retry_after: float | None = None


class AlertRefused(PermanentError):
    """A channel's receiver refused a notification for good (4xx other than 408/429, bad address)."""


class ConflictError(TransientError):
    """An optimistic-lock conflict: someone else wrote the row first; re-read and retry."""


class WorkerLost(TransientError):
    """A worker process died mid-batch; the genomes it held were not scored (rerun the task: it
    resumes from its newest checkpoint)."""


class Interrupted(TransientError):
    """The run was asked to stop after a generation; that generation is checkpointed (when the run
    has a checkpoint sink), so running the task again resumes from it."""

    def __init__(self, generation: int, *, saved: bool) -> None:
        self.generation = generation
        where = "checkpoint saved; a rerun resumes from it" if saved else "no checkpoint sink: progress lost"
        super().__init__(f"optimisation stopped after generation {generation} on request ({where})")


# --- driver exceptions -> project errors ------------------------------------------------------------

Matcher = tuple[type[BaseException], ...] | Callable[[BaseException], bool]


@dataclass(frozen=True)
class ErrorRule:
    """One row of an :class:`ErrorMap`: exceptions matching ``match`` become ``error``; ``hint`` is
    appended to the message (what the operator should do)."""

    match: Matcher
    error: type[RofError]
    hint: str = ""

    def matches(self, exc: BaseException) -> bool:
        if isinstance(self.match, tuple):
            return isinstance(exc, self.match)
        return bool(self.match(exc))


@dataclass(frozen=True)
class ErrorMap:
    """A driver family's exceptions -> the project's errors, first matching rule wins, ``default``
    otherwise. One table per family (psycopg, SQLAlchemy, ClickHouse, AMQP, filesystem), so what is
    transient is decided in one place and can be read as a table."""

    family: str
    rules: Sequence[ErrorRule]
    default: type[RofError] = PermanentError

    def classify(self, exc: BaseException) -> ErrorRule:
        for rule in self.rules:
            if rule.matches(exc):
                return rule
        return ErrorRule((BaseException,), self.default)

    def translate(
        self,
        exc: BaseException,
        *,
        service: str,
        label: str,
        operation: str | None = None,
        secrets: Sequence[str] = (),
    ) -> RofError:
        """The project error for ``exc``: its class from the table, a password-free message that
        names ``label`` (the store's description), the service and the operation."""
        from rof_pipelines.core.redaction import error_message

        rule = self.classify(exc)
        message = error_message(label, exc, *secrets)
        if rule.hint:
            message = f"{message} ({rule.hint})"
        return rule.error(message).with_context(service, operation)

    def translator(
        self, *, service: str, label: str | Callable[[], str], secrets: Sequence[str] = ()
    ) -> Callable[[BaseException], RofError]:
        """``translate`` bound to one adapter: the callable :func:`guarded_call` takes."""

        def translate(exc: BaseException) -> RofError:
            text = label() if callable(label) else label
            return self.translate(exc, service=service, label=text, secrets=secrets)

        return translate

    def table(self) -> list[tuple[str, str, str]]:
        """(matches, becomes, hint) rows, for docs and tests."""
        rows = []
        for rule in self.rules:
            match = (
                ", ".join(cls.__name__ for cls in rule.match)
                if isinstance(rule.match, tuple)
                else (rule.match.__doc__ or rule.match.__name__).strip()
            )
            rows.append((match, rule.error.__name__, rule.hint))
        rows.append(("anything else", self.default.__name__, ""))
        return rows


# OS-level failures of any driver: the network or the disk, worth another try.
OS_ERRORS = ErrorMap(
    "os",
    [ErrorRule((ConnectionError, TimeoutError, OSError), StoreUnavailableError)],
)
