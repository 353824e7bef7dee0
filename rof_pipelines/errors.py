"""The project's own error taxonomy.

Callers decide what to retry from the class alone: a ``TransientError`` may succeed if tried again
(a dropped connection, an open circuit, an optimistic-lock conflict); a ``PermanentError`` will not
(bad input, bad config, a refused operation). Adapters map driver exceptions onto these.
"""


class RofError(Exception):
    """Base of every error this project raises on purpose."""


class TransientError(RofError):
    """Retrying later may succeed."""


class PermanentError(RofError):
    """Retrying will not help; the input, config or request must change."""


class ConfigError(PermanentError):
    """Configuration is invalid; the message names the key path and the reason."""


class DataValidationError(PermanentError):
    """Input data is malformed; the message names the row and/or column."""


class StoreUnavailableError(TransientError):
    """An external service (database, broker) could not be reached or failed mid-call."""


class CircuitOpenError(StoreUnavailableError):
    """The circuit breaker for a service is open; calls are refused until it half-opens."""


class ConflictError(TransientError):
    """An optimistic-lock conflict: someone else wrote the row first; re-read and retry."""


class NotFoundError(PermanentError):
    """A requested object does not exist."""


class TradingDisabledError(PermanentError):
    """An order path was invoked while ``ai_config.allow_trading`` is false."""


class PartitionOutOfRange(PermanentError):
    """A day outside the `date` partitions (before ``storage.history_start`` or in the future)."""


class BarIntervalTooFine(DataValidationError):
    """The bar interval asked for is finer than the stored data: bars would have to be invented."""
