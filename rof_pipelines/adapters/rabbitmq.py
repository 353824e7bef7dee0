"""RabbitMQ (pika): the topology, publishing with confirms, and the sensor's one-tick drain protocol.

Topology (declared idempotently by :meth:`RabbitMQ.declare_topology`; ``<p>`` is the queue prefix):

* ``<p>.direct``: durable direct exchange; routing key = queue suffix (``tasks``, ``quotes.updated``,
  ``backup``), each bound to the durable queue ``<p>.<suffix>``;
* ``<p>.dlx``: durable fanout dead-letter exchange, bound to the durable queue ``<p>.dead_letter``;
  every work queue has ``x-dead-letter-exchange: <p>.dlx``, so what the broker itself dead-letters
  (a ``basic.reject`` without requeue, an expired message) lands there too.

No connection outlives a call: each method (and each :meth:`RabbitMQ.tick`) opens its own connection
and closes it, so a sensor holds nothing between ticks and an instance is safe to share between
threads. Connections time out in seconds, so a tick against a dead broker fails fast. Every broker
call runs through the ``rabbitmq`` circuit breaker; pika errors surface, by the one table
:data:`AMQP_ERRORS`, as :class:`StoreUnavailableError` (connection refused or lost: retry later;
skip the tick) or :class:`PermanentError` (refused credentials, a conflicting declaration, an
unroutable publish); a missing queue is :class:`NotFoundError`. The URL's password never appears in
a message.

Tick protocol (nothing lost, nothing run twice), see :meth:`RabbitMQ.drain`::

    basic_get up to N  ->  inbox INSERT .. ON CONFLICT (message_id) DO NOTHING  ->  COMMIT  ->  ack
    malformed          ->  (after the COMMIT) copy to the DLX with the reason header  ->  ack

A crash before the acks leaves the messages unacknowledged; the broker requeues them when the tick's
connection closes and the next tick gets them again (``redelivered`` set, same ``message_id``), which
the inbox's ON CONFLICT turns into a no-op.

Dead-lettering with a reason: RabbitMQ's own dead-lettering cannot add headers, so
:meth:`Tick.dead_letter` publishes a copy to the DLX carrying ``x-rof-reject-reason`` and
``x-rof-original-queue`` (waiting for the broker's confirm), and only then acks the original. A crash
between the two leaves the original unacked: it is redelivered and dead-lettered again, so the
dead-letter queue may hold a duplicate (same ``message_id``) but a message is never lost.
"""

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pika
import pika.exceptions as pex
from pika.adapters.blocking_connection import BlockingChannel

from rof_pipelines.adapters.breakers import guarded_call, scrub
from rof_pipelines.adapters.messages import (
    CONTENT_TYPE,
    QUEUE_SUFFIX,
    SCHEMA_VERSION,
    Message,
    MessageLimits,
    check_runnable,
    is_message_id,
    parse_message,
    resolve_kind,
)
from rof_pipelines.adapters.metrics import (
    MESSAGES_ACKED,
    MESSAGES_DEAD_LETTERED,
    MESSAGES_PUBLISHED,
    MESSAGES_RECEIVED,
)
from rof_pipelines.errors import (
    ConfigError,
    ErrorMap,
    ErrorRule,
    MalformedMessage,
    NotFoundError,
    PermanentError,
    RefusedMessages,
    RofError,
    StoreUnavailableError,
)
from rof_pipelines.settings import CircuitBreakerConfig, RabbitMQConfig

log = logging.getLogger(__name__)

SERVICE = "rabbitmq"
DEFAULT_CONNECT_TIMEOUT_S = 3.0  # TCP connect and socket reads while connecting
DEFAULT_STACK_TIMEOUT_S = 5.0  # the whole AMQP handshake
# A blocking connection answers heartbeats only inside pika calls, so ``on_batch`` (the caller's
# database work) must finish well within this; a hung (not closed) broker is noticed after about as long.
DEFAULT_HEARTBEAT_S = 30
DEFAULT_BLOCKED_TIMEOUT_S = 10.0  # a broker blocking publishers (memory/disk alarm) fails the call

REASON_HEADER = "x-rof-reject-reason"
ORIGINAL_QUEUE_HEADER = "x-rof-original-queue"
REJECTED_AT_HEADER = "x-rof-rejected-at"
REDELIVERED_HEADER = "x-rof-redelivered"
MAX_REASON_CHARS = 2000
DEAD_LETTER_SUFFIX = "dead_letter"

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
# Copied from the original onto its dead-letter copy. Not expiration (the copy must not expire) nor
# user_id (the broker refuses a user_id that is not the publishing connection's user).
_COPIED_PROPERTIES = (
    "content_type",
    "content_encoding",
    "priority",
    "correlation_id",
    "reply_to",
    "message_id",
    "timestamp",
    "type",
    "app_id",
    "cluster_id",
)
_PERMANENT_REPLY_CODES = {403, 405, 406, 530, 540}  # access refused, locked, precondition, not allowed


def _closed_by_broker(exc: BaseException) -> int | None:
    """The reply code of a channel or connection the broker closed, else None."""
    if isinstance(exc, pex.ChannelClosedByBroker | pex.ConnectionClosedByBroker):
        return exc.reply_code
    return None


def _not_found(exc: BaseException) -> bool:
    """closed by the broker with 404 NOT_FOUND (a queue or exchange that is not declared)"""
    return _closed_by_broker(exc) == 404


def _refused_for_good(exc: BaseException) -> bool:
    """closed by the broker with 403, 405, 406, 530 or 540 (access refused, locked, precondition
    failed, not allowed): asking again gets the same answer"""
    return _closed_by_broker(exc) in _PERMANENT_REPLY_CODES


# pika's exceptions -> the project's errors, first match wins. Lost or refused connections and
# anything else the broker closed are the transient ones.
AMQP_ERRORS = ErrorMap(
    "amqp",
    [
        ErrorRule((pex.UnroutableError,), PermanentError, "no queue bound: run declare_topology() first"),
        ErrorRule((pex.NackError,), StoreUnavailableError, "the broker refused the message; retry later"),
        ErrorRule(
            (pex.ProbableAuthenticationError, pex.AuthenticationError),
            PermanentError,
            "check the user and password in storage.rabbitmq.url",
        ),
        ErrorRule(
            (pex.ProbableAccessDeniedError,),
            PermanentError,
            "check the vhost in storage.rabbitmq.url and its permissions",
        ),
        ErrorRule(_not_found, NotFoundError, "run declare_topology() first"),
        ErrorRule(_refused_for_good, PermanentError),
        # refused, lost, heartbeat timeout, blocked, closed (any other reply code of the broker's)
        ErrorRule(
            (pex.AMQPConnectionError, pex.ChannelClosed, pex.ChannelWrongStateError), StoreUnavailableError
        ),
        ErrorRule((OSError, TimeoutError, EOFError), StoreUnavailableError),
    ],
    default=PermanentError,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Topology:
    """The names :meth:`RabbitMQ.declare_topology` declares."""

    exchange: str
    dead_letter_exchange: str
    dead_letter_queue: str
    queues: dict[str, str]  # kind -> queue name

    @property
    def all_queues(self) -> list[str]:
        return [*self.queues.values(), self.dead_letter_queue]


@dataclass(frozen=True)
class Delivery:
    """One message fetched by :meth:`Tick.get`, not yet acknowledged."""

    queue: str
    delivery_tag: int
    redelivered: bool
    properties: pika.BasicProperties
    body: bytes

    @property
    def message_id(self) -> str | None:
        """The AMQP message_id property (authoritative; None for a foreign publisher that set none)."""
        return self.properties.message_id

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.properties.headers or {})

    def parse(self, limits: MessageLimits | None = None) -> Message:
        """The validated message; raises :class:`MalformedMessage` with a reason. A work queue fixes
        the kind; the dead-letter queue accepts any. With ``limits``, a message this deployment
        cannot run is refused too (:func:`check_runnable`)."""
        expected = self.queue if resolve_kind(self.queue) else None
        message = parse_message(expected, self.body, self.properties)
        return check_runnable(message, limits) if limits is not None else message


@dataclass(frozen=True)
class Received:
    """A delivery and the outcome of parsing it: exactly one of ``message`` / ``error`` is set."""

    delivery: Delivery
    message: Message | None
    error: MalformedMessage | None

    @classmethod
    def of(cls, delivery: Delivery, limits: MessageLimits | None = None) -> "Received":
        try:
            return cls(delivery, delivery.parse(limits), None)
        except MalformedMessage as exc:
            return cls(delivery, None, exc)
        except Exception as exc:  # a check that failed in a way nobody foresaw: still this message's fault
            reason = f"could not be checked: {type(exc).__name__}: {exc}"
            return cls(delivery, None, MalformedMessage(reason, message_id=delivery.message_id))

    def refused(self, reason: str) -> "Received":
        """This delivery as malformed with ``reason`` (e.g. the inbox could not store it)."""
        kind = self.message.kind if self.message is not None else None
        return Received(self.delivery, None, MalformedMessage(reason, kind=kind, message_id=self.message_id))

    @property
    def message_id(self) -> str | None:
        if self.message is not None:
            return self.message.message_id
        return self.delivery.message_id or (self.error.message_id if self.error else None)


@dataclass
class DrainResult:
    """What one :meth:`RabbitMQ.drain` did."""

    queue: str
    messages: list[Message] = field(default_factory=list)  # committed by the caller, then acked
    dead_lettered: list[Received] = field(default_factory=list)  # malformed: copied to the DLQ, acked
    redelivered: int = 0  # of the above, how many the broker had delivered before
    remaining: int | None = None  # ready messages left in the queue after the last basic_get

    @property
    def received(self) -> int:
        return len(self.messages) + len(self.dead_lettered)


def _header_text(reason: str) -> str:
    """A reason fit for an AMQP header: one line, bounded, encodable (no lone surrogates)."""
    text = " ".join(str(reason).split())[:MAX_REASON_CHARS] or "rejected"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _describe_exc(exc: BaseException) -> str:
    """pika's str() is often empty; its repr() names the class and the broker's reply."""
    if isinstance(exc, pex.AMQPError | pex.ChannelError):
        return repr(exc)
    return f"{type(exc).__name__}: {exc}"


class Tick:
    """One sensor tick's connection and confirm-mode channel (from :meth:`RabbitMQ.tick`).

    Fetch with :meth:`get`, write the messages to the inbox and COMMIT, then :meth:`ack` them (and
    :meth:`dead_letter` the malformed ones). Whatever is not acked when the tick ends is requeued by
    the broker and delivered again, flagged ``redelivered``, with the same message_id.
    Not thread-safe: one tick belongs to one thread.
    """

    def __init__(self, rabbit: "RabbitMQ", connection: pika.BlockingConnection, channel: BlockingChannel):
        self._rabbit = rabbit
        self._connection = connection
        self._channel = channel
        self.remaining: int | None = None  # ready messages left after the last get

    def get(self, kind_or_queue: str, max_messages: int) -> list[Delivery]:
        """basic_get up to ``max_messages`` from a queue (kind, suffix or full name); fewer if it empties."""
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        queue = self._rabbit.queue_name(kind_or_queue)

        def run() -> list[Delivery]:
            deliveries: list[Delivery] = []
            while len(deliveries) < max_messages:
                method, properties, body = self._channel.basic_get(queue, auto_ack=False)
                if method is None:
                    self.remaining = 0
                    break
                self.remaining = method.message_count
                deliveries.append(Delivery(queue, method.delivery_tag, method.redelivered, properties, body))
            return deliveries

        deliveries = self._rabbit._call(run, operation="get")
        if deliveries:
            MESSAGES_RECEIVED.labels(self._rabbit._label(queue)).inc(len(deliveries))
        return deliveries

    def ack(self, deliveries: Delivery | Iterable[Delivery]) -> None:
        """Acknowledge: the broker forgets them. Only after the caller's COMMIT.

        basic.ack has no reply; the broker applies it before the tick's orderly connection close, and
        if that close never happens the messages come back (the inbox makes that harmless).
        """
        batch = [deliveries] if isinstance(deliveries, Delivery) else list(deliveries)
        if not batch:
            return

        def run() -> None:
            for delivery in batch:
                self._channel.basic_ack(delivery.delivery_tag)

        self._rabbit._call(run, operation="ack")
        for delivery in batch:
            MESSAGES_ACKED.labels(self._rabbit._label(delivery.queue)).inc()

    def dead_letter(self, delivery: Delivery, reason: str, message_id: str | None = None) -> None:
        """Copy the message to the dead-letter queue with ``reason`` in a header, then ack it.

        The copy is confirmed by the broker before the original is acked: a crash in between
        duplicates into the dead-letter queue, never loses the message. ``message_id`` (e.g. the one
        found in the body) is set on the copy when the original has no AMQP message_id.

        A message must leave its queue even when its properties cannot be sent again (a header pika
        cannot encode): the copy then carries only the reason headers, and should even that fail the
        original is rejected without requeue, so the broker's own dead-lettering takes it.
        """
        reason = _header_text(reason)
        original = delivery.properties
        ours = {
            REASON_HEADER: reason,
            ORIGINAL_QUEUE_HEADER: delivery.queue,
            REJECTED_AT_HEADER: datetime.now(UTC).isoformat(),
            REDELIVERED_HEADER: delivery.redelivered,
        }
        copied = {name: getattr(original, name) for name in _COPIED_PROPERTIES}
        copied["message_id"] = original.message_id or (message_id if is_message_id(message_id) else None)
        persistent = pika.DeliveryMode.Persistent
        attempts = [
            pika.BasicProperties(
                **copied, headers={**(original.headers or {}), **ours}, delivery_mode=persistent
            ),
            pika.BasicProperties(message_id=copied["message_id"], headers=ours, delivery_mode=persistent),
        ]
        for properties in attempts:
            try:
                self._copy_to_dead_letters(delivery, properties)
                break
            except PermanentError as exc:  # unencodable properties; a lost connection propagates
                log.error(
                    "%s: could not copy message %s to the dead letters: %s",
                    SERVICE,
                    copied["message_id"],
                    exc,
                )
        else:
            self._reject(delivery)
            log.error(
                "%s: rejected message %s from %s without requeue (broker dead-lettering, no reason "
                "header): %s",
                SERVICE,
                copied["message_id"],
                delivery.queue,
                reason,
            )
            MESSAGES_DEAD_LETTERED.labels(self._rabbit._label(delivery.queue)).inc()
            return
        self._rabbit._call(lambda: self._channel.basic_ack(delivery.delivery_tag), operation="ack")
        MESSAGES_DEAD_LETTERED.labels(self._rabbit._label(delivery.queue)).inc()
        log.warning(
            "%s: dead-lettered message %s from %s: %s",
            SERVICE,
            copied["message_id"],
            delivery.queue,
            reason,
        )

    def _copy_to_dead_letters(self, delivery: Delivery, properties: pika.BasicProperties) -> None:
        exchange = self._rabbit.topology.dead_letter_exchange

        def run() -> None:
            self._channel.basic_publish(
                exchange,
                routing_key=delivery.queue,
                body=delivery.body,
                properties=properties,
                mandatory=True,
            )

        self._rabbit._call(run, operation="dead_letter")

    def _reject(self, delivery: Delivery) -> None:
        """basic.reject without requeue: the queue's x-dead-letter-exchange takes the message."""
        self._rabbit._call(
            lambda: self._channel.basic_reject(delivery.delivery_tag, requeue=False), operation="reject"
        )

    def close(self) -> None:
        """Close the connection; unacked messages go back to their queues."""
        try:
            if self._connection.is_open:
                self._connection.close()
        except Exception as exc:  # the broker went away: it requeues on its own
            log.debug("%s: closing the tick's connection failed: %s", SERVICE, _describe_exc(exc))


class RabbitMQ:
    """The project's broker adapter. Holds configuration only, never a connection (see the module doc)."""

    def __init__(
        self,
        config: RabbitMQConfig,
        breaker: CircuitBreakerConfig | None = None,
        queue_prefix: str = "rof",
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        if not _PREFIX_RE.match(queue_prefix or ""):
            raise ConfigError(f"queue_prefix must be 1-100 of letters, digits, _ . -; got {queue_prefix!r}")
        self.config = config
        self._breaker = breaker
        self.queue_prefix = queue_prefix
        self._connect_timeout = connect_timeout
        url = config.url.get_secret_value()
        password = urlsplit(url).password or ""
        # Every spelling of the password that could reach a message: as written, decoded, re-encoded.
        self._secrets = sorted(
            {s for s in (password, unquote(password), quote(password, safe="")) if s}, key=len
        )
        self.topology = Topology(
            exchange=f"{queue_prefix}.direct",
            dead_letter_exchange=f"{queue_prefix}.dlx",
            dead_letter_queue=f"{queue_prefix}.{DEAD_LETTER_SUFFIX}",
            queues={kind: f"{queue_prefix}.{suffix}" for kind, suffix in QUEUE_SUFFIX.items()},
        )

    # -- plumbing ----------------------------------------------------------------------------------

    def describe(self) -> str:
        """A password-free description for logs and Dagster metadata."""
        return f"{self.config.describe()} prefix={self.queue_prefix}"

    def __repr__(self) -> str:
        return f"RabbitMQ({self.describe()})"

    def queue_name(self, kind_or_queue: str) -> str:
        """A kind (``task``), CLI alias, suffix (``tasks``) or full queue name -> the full queue name."""
        if kind_or_queue in self.topology.all_queues:
            return kind_or_queue
        if kind_or_queue in (DEAD_LETTER_SUFFIX, "dead-letter"):
            return self.topology.dead_letter_queue
        kind = resolve_kind(kind_or_queue)
        if kind is None or kind_or_queue.endswith("." + QUEUE_SUFFIX[kind]):  # another prefix's queue
            raise ValueError(
                f"unknown queue {kind_or_queue!r}: use one of {', '.join(QUEUE_SUFFIX)} "
                f"or {', '.join(self.topology.all_queues)}"
            )
        return self.topology.queues[kind]

    def _label(self, queue: str) -> str:
        """Metric label: the queue without the prefix (tests use random prefixes)."""
        return queue.removeprefix(self.queue_prefix + ".")

    def _scrub(self, text: str) -> str:
        return scrub(text, *self._secrets)

    def _parameters(self) -> pika.URLParameters:
        url = self.config.url.get_secret_value()
        try:
            params = pika.URLParameters(url)
        except Exception as exc:
            raise ConfigError(self._scrub(f"storage.rabbitmq.url is not a valid AMQP URL: {exc}")) from None
        given = parse_qs(urlsplit(url).query)  # what the URL sets itself wins over our defaults
        defaults: dict[str, Any] = {
            "socket_timeout": self._connect_timeout,
            "stack_timeout": max(DEFAULT_STACK_TIMEOUT_S, self._connect_timeout),
            "connection_attempts": 1,
            "retry_delay": 0,
            "heartbeat": DEFAULT_HEARTBEAT_S,
            "blocked_connection_timeout": DEFAULT_BLOCKED_TIMEOUT_S,
        }
        for name, value in defaults.items():
            if name not in given:
                setattr(params, name, value)
        params.client_properties = {"connection_name": f"rof_pipelines {self.queue_prefix}"}
        return params

    def _translate(self, exc: BaseException) -> RofError:
        """pika exception -> the project's error, its class and hint from :data:`AMQP_ERRORS`. The
        message quotes pika's repr, not its str (often empty, e.g. for a refused connection)."""
        rule = AMQP_ERRORS.classify(exc)
        message = self._scrub(f"{SERVICE} ({self.describe()}): {_describe_exc(exc)}")
        return rule.error(f"{message} ({rule.hint})" if rule.hint else message).with_context(SERVICE)

    def _call(self, fn: Callable[..., T], *args: Any, operation: str) -> T:
        return guarded_call(SERVICE, self._breaker, self._translate, fn, *args, operation=operation)

    def _connect(self) -> tuple[pika.BlockingConnection, BlockingChannel]:
        connection = pika.BlockingConnection(self._parameters())
        try:
            channel = connection.channel()
            channel.confirm_delivery()
        except BaseException:
            try:
                connection.close()
            except Exception as exc:
                log.debug("%s: close failed: %s", SERVICE, _describe_exc(exc))
            raise
        return connection, channel

    def _on_channel(self, fn: Callable[[BlockingChannel], T]) -> T:
        """One connection for one call, closed whatever happens."""
        connection, channel = self._connect()
        try:
            return fn(channel)
        finally:
            try:
                if connection.is_open:
                    connection.close()
            except Exception as exc:  # the result (confirmed) stands; the broker cleans up
                log.debug("%s: close failed: %s", SERVICE, _describe_exc(exc))

    # -- interface ---------------------------------------------------------------------------------

    def ping(self) -> str:
        """Connect, open a channel and close (health checks); returns the broker's version."""

        def run(channel: BlockingChannel) -> str:
            props = channel.connection._impl.server_properties or {}
            version = props.get("version", b"?")
            return version.decode() if isinstance(version, bytes) else str(version)

        return self._call(self._on_channel, run, operation="ping")

    def declare_topology(self) -> Topology:
        """Declare the exchanges, the work queues and the dead-letter queue; safe to repeat.

        A queue that already exists with other arguments is a :class:`PermanentError` (406
        PRECONDITION_FAILED): it must be deleted or the prefix changed, never silently redeclared.
        """
        top = self.topology

        def run(channel: BlockingChannel) -> None:
            channel.exchange_declare(top.exchange, exchange_type="direct", durable=True)
            channel.exchange_declare(top.dead_letter_exchange, exchange_type="fanout", durable=True)
            channel.queue_declare(top.dead_letter_queue, durable=True)
            channel.queue_bind(top.dead_letter_queue, top.dead_letter_exchange, routing_key="")
            for kind, queue in top.queues.items():
                channel.queue_declare(
                    queue, durable=True, arguments={"x-dead-letter-exchange": top.dead_letter_exchange}
                )
                channel.queue_bind(queue, top.exchange, routing_key=QUEUE_SUFFIX[kind])

        self._call(self._on_channel, run, operation="declare_topology")
        return top

    def _properties(self, message: Message) -> pika.BasicProperties:
        return pika.BasicProperties(
            content_type=CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message.message_id,
            type=message.kind,
            timestamp=int(message.created_at.timestamp()),
            app_id="rof_pipelines",
            headers={"x-rof-schema-version": SCHEMA_VERSION},
        )

    def publish(self, message: Message) -> str:
        """Publish one message, persistent, and wait for the broker's confirm; returns its message_id."""
        return self.publish_many([message])[0]

    def publish_many(self, messages: Iterable[Message]) -> list[str]:
        """Publish messages over one connection, each confirmed before the next.

        Unroutable (topology not declared) is a PermanentError, not a silent drop. Retrying after a
        failure may publish some messages twice; they keep their message_id, so consumers dedupe.
        """
        batch = list(messages)
        exchange = self.topology.exchange

        def run(channel: BlockingChannel) -> list[str]:
            for message in batch:
                channel.basic_publish(
                    exchange,
                    routing_key=message.queue_suffix,
                    body=message.to_body(),
                    properties=self._properties(message),
                    mandatory=True,
                )
                MESSAGES_PUBLISHED.labels(message.queue_suffix).inc()
            return [message.message_id for message in batch]

        return self._call(self._on_channel, run, operation="publish") if batch else []

    @contextmanager
    def tick(self) -> Iterator[Tick]:
        """A connection for one sensor tick, closed on exit (unacked messages are then requeued).

        Raises StoreUnavailableError / CircuitOpenError when the broker is down: skip the tick.
        """
        connection, channel = self._call(self._connect, operation="connect")
        current = Tick(self, connection, channel)
        try:
            yield current
        finally:
            current.close()

    def drain(
        self,
        kind_or_queue: str,
        max_messages: int,
        on_batch: Callable[[list[Received]], None],
        limits: MessageLimits | None = None,
    ) -> DrainResult:
        """One tick of the sensor protocol: get up to ``max_messages``, hand them to ``on_batch``, and
        only after it returns dead-letter the malformed ones and ack the rest.

        ``on_batch`` gets every :class:`Received` (parsed message or malformed, with delivery tag,
        properties and redelivered flag); it inserts the good ones into the inbox
        (ON CONFLICT (message_id) DO NOTHING), may count the malformed ones, and COMMITs. If it
        raises, nothing is acked: the messages return to the queue when the tick's connection
        closes, and the exception propagates; if it raises :class:`RefusedMessages`, it committed
        all but those, which are dead-lettered with its reasons. ``on_batch`` is not called when the
        queue is empty; it should take seconds, not more than the heartbeat (30 s), or the broker
        drops the connection and the batch is redelivered.

        With ``limits``, a message this deployment cannot run (:func:`check_runnable`) counts as
        malformed: it is dead-lettered with the reason and never reaches ``on_batch`` as a message.
        """
        with self.tick() as current:
            deliveries = current.get(kind_or_queue, max_messages)
            queue = self.queue_name(kind_or_queue)
            result = DrainResult(queue=queue, remaining=current.remaining)
            if not deliveries:
                return result
            received = [Received.of(delivery, limits) for delivery in deliveries]
            try:
                on_batch(received)
            except RefusedMessages as refused:
                received = [
                    item.refused(
                        f"the inbox could not store it: {refused.reasons[item.delivery.delivery_tag]}"
                    )
                    if item.delivery.delivery_tag in refused.reasons
                    else item
                    for item in received
                ]
            for item in received:
                if item.error is not None:
                    current.dead_letter(item.delivery, item.error.reason, item.message_id)
                    result.dead_lettered.append(item)
            good = [item for item in received if item.message is not None]
            current.ack([item.delivery for item in good])
            result.messages = [item.message for item in good if item.message is not None]
            result.redelivered = sum(item.delivery.redelivered for item in received)
            return result

    def queue_depths(self) -> dict[str, int]:
        """Ready (not yet fetched) messages per queue, dead-letter queue included: back-pressure and
        metrics. A missing queue is NotFoundError (declare_topology first)."""
        queues = self.topology.all_queues

        def run(channel: BlockingChannel) -> dict[str, int]:
            return {q: channel.queue_declare(q, passive=True).method.message_count for q in queues}

        return self._call(self._on_channel, run, operation="queue_depths")
