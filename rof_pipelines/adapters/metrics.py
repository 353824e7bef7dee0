"""Every Prometheus metric of the project, on one registry: the ops service serves :data:`REGISTRY`.

Names start with the component that owns the number, so a dashboard or an alert rule groups by
prefix: ``workerpool_`` (the task workers and the message flow that feeds them), ``rl_agent_``,
``ga_``, ``circuit_breaker_``, ``data_manager_`` (the state the system keeps: stores, configuration
versions) and ``alerts_``. Labels take a handful of values each (a service, a queue, a message kind,
a status), never a run, a message or a market, so a series count stays small.

=============================================  =======  =======  ===========================================
name                                           type     labels   meaning
=============================================  =======  =======  ===========================================
``circuit_breaker_state``                      gauge    service  0 closed, 1 half-open, 2 open
``circuit_breaker_failures_total``             counter  service  transient failures a breaker counted
``workerpool_messages_published_total``        counter  queue    messages published and confirmed
``workerpool_messages_received_total``         counter  queue    messages fetched with basic_get
``workerpool_messages_acked_total``            counter  queue    messages acked after the inbox's COMMIT
``workerpool_messages_dead_lettered_total``    counter  queue    messages sent to the dead-letter queue
``workerpool_inbox_quarantined_total``         counter  kind     inbox rows set aside (alert on any rise)
``data_manager_config_reloads_total``          counter  status   config.yaml edits applied or refused
=============================================  =======  =======  ===========================================

``queue`` is the queue without its prefix (``tasks``, ``quotes.updated``, ``backup``,
``dead_letter``); ``kind`` a message kind; ``status`` ``applied`` or ``refused``.

The inbox quarantine counts under ``workerpool_``: it is the last step between a broker message and
a worker's run. Configuration reloads count under ``data_manager_``: the hot-reload sensor keeps the
last valid version and records every edit in the state store, the data the system manages.

Metric objects are built here only (a test refuses a ``Counter(`` or ``Gauge(`` anywhere else in the
package); adapters import the object they record to.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge

COMPONENT_PREFIXES = ("workerpool_", "rl_agent_", "ga_", "circuit_breaker_", "data_manager_", "alerts_")

REGISTRY = CollectorRegistry(auto_describe=True)

# --- circuit_breaker_ -------------------------------------------------------------------------------

BREAKER_STATE = Gauge(
    "circuit_breaker_state",
    "Circuit breaker state per service: 0 closed, 1 half-open, 2 open",
    ["service"],
    registry=REGISTRY,
)
BREAKER_FAILURES = Counter(
    "circuit_breaker_failures",
    "Transient failures seen by a circuit breaker",
    ["service"],
    registry=REGISTRY,
)

# --- workerpool_: the broker messages that become runs ----------------------------------------------

MESSAGES_PUBLISHED = Counter(
    "workerpool_messages_published",
    "Messages published (confirmed by the broker)",
    ["queue"],
    registry=REGISTRY,
)
MESSAGES_RECEIVED = Counter(
    "workerpool_messages_received",
    "Messages fetched with basic_get",
    ["queue"],
    registry=REGISTRY,
)
MESSAGES_ACKED = Counter(
    "workerpool_messages_acked",
    "Messages acknowledged after the caller's commit",
    ["queue"],
    registry=REGISTRY,
)
MESSAGES_DEAD_LETTERED = Counter(
    "workerpool_messages_dead_lettered",
    "Messages copied to the dead-letter queue, with reason",
    ["queue"],
    registry=REGISTRY,
)
INBOX_QUARANTINED = Counter(
    "workerpool_inbox_quarantined",
    "Inbox rows a sensor could not turn into run requests and set aside (alert on any increase)",
    ["kind"],
    registry=REGISTRY,
)

# --- data_manager_ -----------------------------------------------------------------------------------

CONFIG_RELOADS = Counter(
    "data_manager_config_reloads",
    "config.yaml edits seen by the hot-reload sensor",
    ["status"],
    registry=REGISTRY,
)


def sample_value(name: str, labels: dict[str, str] | None = None) -> float:
    """The current value of one series (0 when it was never recorded): for tests and health checks."""
    value = REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if value is None else value
