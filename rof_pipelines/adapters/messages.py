"""The broker's message schemas: versioned pydantic models, and a parser that says why a body is bad.

Every message carries ``schema_version`` (a change that a version-1 reader cannot handle bumps it),
a ``message_id`` (the consumer's de-duplication key: the inbox keeps one row per id, so a redelivered
or re-published message runs once), its ``kind`` and ``created_at`` (UTC).

Kinds and the queue each one travels on (the queue is ``<prefix>.<suffix>``):

============== ================= =======================================================
kind           queue suffix      meaning
============== ================= =======================================================
task           tasks             optimise a market now (optionally for one day)
quotes.updated quotes.updated    new quotes for a market in [start, end)
backup         backup            back up the state store
============== ================= =======================================================

:func:`parse_message` returns a valid message or raises :class:`MalformedMessage` (whose ``reason`` is
one human-readable line, fit for a dead-letter header), whatever the bytes: a body that crashed the
decoder would otherwise be requeued and crash every later tick. :func:`check_runnable` then refuses
what parses but cannot run here (a day outside the partitions, too many runs), before the message
reaches the inbox.
"""

import datetime as dt
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from rof_pipelines.core.market import Market
from rof_pipelines.errors import MalformedMessage, UnrunnableMessage

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"
MAX_BODY_BYTES = 1 << 20  # a message is a small command, never data; anything bigger is a mistake
# Messages are flat; deep nesting only serves to exhaust the decoder's recursion (RecursionError).
MAX_JSON_DEPTH = 32
MAX_MARKET_CHARS = 100  # a market becomes a partition key, a run tag and a metric label

# kind -> queue suffix; the CLI's spelling ("quotes-updated") and the suffixes are accepted as aliases.
QUEUE_SUFFIX: dict[str, str] = {"task": "tasks", "quotes.updated": "quotes.updated", "backup": "backup"}
_ALIASES: dict[str, str] = {
    **{kind: kind for kind in QUEUE_SUFFIX},
    **{suffix: kind for kind, suffix in QUEUE_SUFFIX.items()},
    "quotes-updated": "quotes.updated",
    "quotes_updated": "quotes.updated",
}
_MESSAGE_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")  # always fullmatch: "$" would allow a newline
# PostgreSQL's jsonb refuses NUL, and lone surrogates cannot be encoded: such a string would fail the
# inbox INSERT of the whole batch, after parsing had accepted it.
_UNSTORABLE_RE = re.compile("[\x00\ud800-\udfff]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP = [1 if b in b"[{" else -1 for b in range(256)]


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00 has no UTC equivalent
        raise ValueError("outside the range of UTC datetimes") from None


def _market(value: str) -> str:
    if len(value) > MAX_MARKET_CHARS:
        raise ValueError(f"market is {len(value)} characters, more than {MAX_MARKET_CHARS}")
    return Market.parse(value).key


def is_message_id(value: object) -> bool:
    """Whether ``value`` can serve as a message id (run key, AMQP property, inbox key)."""
    return isinstance(value, str) and _MESSAGE_ID_RE.fullmatch(value) is not None


def _message_id(value: str) -> str:
    if not is_message_id(value):
        raise ValueError("message_id must be 1-128 characters of letters, digits, _ . : -")
    return value


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
MarketKey = Annotated[str, AfterValidator(_market)]
MessageId = Annotated[str, AfterValidator(_message_id)]


def _new_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


class _Message(BaseModel):
    """Fields every message has. Unknown fields are refused so a typo cannot be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    message_id: MessageId = Field(default_factory=_new_id)
    created_at: UtcDatetime = Field(default_factory=_now)

    @property
    def queue_suffix(self) -> str:
        return QUEUE_SUFFIX[self.kind]  # type: ignore[attr-defined]

    def to_body(self) -> bytes:
        """The JSON body as published (UTF-8)."""
        return self.model_dump_json().encode()


class TaskMessage(_Message):
    """Optimise a market now (for one UTC day when ``date`` is given)."""

    kind: Literal["task"] = "task"
    market: MarketKey
    date: dt.date | None = None
    experiment_id: str | None = Field(default=None, min_length=1, max_length=200)
    reason: str = Field(default="manual", min_length=1, max_length=500)

    @property
    def run_day(self) -> dt.date:
        """The day to optimise: ``date``, else the last complete UTC day when the message was sent."""
        return self.date or (self.created_at - timedelta(days=1)).date()


class QuotesUpdatedMessage(_Message):
    """New quotes for a market in the half-open range [start, end)."""

    kind: Literal["quotes.updated"] = "quotes.updated"
    market: MarketKey
    start: UtcDatetime
    end: UtcDatetime

    @model_validator(mode="after")
    def _ordered(self) -> "QuotesUpdatedMessage":
        if not self.start < self.end:
            raise ValueError(f"start ({self.start.isoformat()}) must be before end ({self.end.isoformat()})")
        return self

    @property
    def first_day(self) -> dt.date:
        return self.start.date()

    @property
    def last_day(self) -> dt.date:
        """The last UTC day the range touches (``end`` is exclusive)."""
        return (self.end - timedelta(microseconds=1)).date()

    @property
    def span_days(self) -> int:
        return (self.last_day - self.first_day).days + 1

    def run_days(self, last_partition_day: dt.date) -> list[dt.date]:
        """The touched days that have a partition: today's, still going, is left to the nightly run."""
        last = min(self.last_day, last_partition_day)
        return [self.first_day + timedelta(days=i) for i in range((last - self.first_day).days + 1)]


def _configured_backup_destination(name: str) -> str:
    """Only the config says where backups go: a message names a destination of the config in force
    ($ROF_CONFIG or config.yaml, read now, so a hot-reloaded destination counts from the next message)."""
    from rof_pipelines.adapters.config_versions import load_in_force
    from rof_pipelines.settings import BACKUP_DESTINATION_NAME_RE

    if not BACKUP_DESTINATION_NAME_RE.match(name):
        raise ValueError(
            "must name a configured backup destination (letters, digits, _ or -), not a URL or a path"
        )
    names = load_in_force().system_setup.backup.destination_names
    if name not in names:
        raise ValueError(f"not a configured backup destination (configured: {', '.join(names)})")
    return name


class BackupMessage(_Message):
    """Back up the state store to a configured destination, by name (None: ``default``)."""

    kind: Literal["backup"] = "backup"
    destination: Annotated[str, AfterValidator(_configured_backup_destination)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_target_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and "target" in data:
            raise ValueError("target: a backup URL is not accepted; name a configured destination instead")
        return data


Message = TaskMessage | QuotesUpdatedMessage | BackupMessage
MODELS: dict[str, type[TaskMessage | QuotesUpdatedMessage | BackupMessage]] = {
    "task": TaskMessage,
    "quotes.updated": QuotesUpdatedMessage,
    "backup": BackupMessage,
}


def resolve_kind(name: str) -> str | None:
    """A kind, its CLI spelling, its queue suffix or a full queue name (``<prefix>.tasks``) -> the kind;
    None when the name matches none of them."""
    if name in _ALIASES:
        return _ALIASES[name]
    for suffix in sorted(set(QUEUE_SUFFIX.values()), key=len, reverse=True):
        if name.endswith("." + suffix):
            return _ALIASES[suffix]
    return None


def _require_kind(name: str) -> str:
    kind = resolve_kind(name)
    if kind is None:
        raise MalformedMessage(f"unknown kind {name!r} (expected one of: {', '.join(MODELS)})")
    return kind


def _explain(exc: ValidationError) -> str:
    """pydantic's errors as one line: ``field.path: problem (got value)``."""
    parts = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(part) for part in err["loc"])
        problem = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            problem = "unexpected field"
        shown = err.get("input")
        quiet = (
            err["type"] in ("missing", "extra_forbidden")
            or isinstance(shown, dict | list)
            or "got " in problem
        )
        detail = "" if quiet else f" (got {shown!r:.80})"
        parts.append(f"{path}: {problem}{detail}" if path else f"{problem}{detail}")
    return "; ".join(parts)


def _property(properties: Any, name: str) -> Any:
    if properties is None:
        return None
    if isinstance(properties, Mapping):
        return properties.get(name)
    return getattr(properties, name, None)


def build_message(kind: str, **fields: Any) -> Message:
    """A new message of ``kind`` (any alias) from keyword fields; None values are left out."""
    kind = _require_kind(kind)
    values = {key: value for key, value in fields.items() if value is not None}
    try:
        return MODELS[kind].model_validate(values)
    except ValidationError as exc:
        raise MalformedMessage(_explain(exc), kind=kind) from None


def parse_message(kind_or_queue: str | None, body: bytes, properties: Any = None) -> Message:
    """Validate a received body; raise :class:`MalformedMessage` with a readable reason if it is bad.

    ``kind_or_queue`` is the kind the consumer expects (a kind, an alias or the queue it read from;
    None accepts any kind). ``properties`` is pika's ``BasicProperties`` (or a mapping): its
    ``message_id``, when present, is authoritative, so a redelivery keeps its id even if the body
    has none; a body id that disagrees with it is refused. Its ``type``, when present, must agree
    with the kind. A message with no id at all is refused: without one, de-duplication is impossible.

    Nothing else ever escapes, whatever the bytes: a decoder's RecursionError, OverflowError or any
    other failure becomes a MalformedMessage too, since a consumer that crashed on a body would get
    the same body back on every later tick.
    """
    where: dict[str, str | None] = {"kind": None, "message_id": None}
    try:
        return _parse(kind_or_queue, body, properties, where)
    except MalformedMessage:
        raise
    except Exception as exc:
        raise MalformedMessage(f"body could not be read: {_describe(exc)}", **where) from None


def _describe(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose str() fails still names its class
        text = type(exc).__name__
    return text[:300]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def nesting_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in a JSON body, without decoding it (linear time, no
    recursion): brackets inside strings are dropped first. Exact for valid JSON."""
    # Escapes pair up from the left, so dropping every "\\" and then every '\"' leaves exactly the
    # quotes that open and close strings; every other piece between them is outside any string.
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)


def _unstorable(data: Any) -> str | None:
    """Why the decoded JSON could not be stored in the inbox (None when it can)."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            if _UNSTORABLE_RE.search(value):
                return "a string holds a NUL character or a lone surrogate, which cannot be stored"
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                return f"JSON nests deeper than {MAX_JSON_DEPTH} levels"
            items = [*value, *value.values()] if isinstance(value, dict) else value
            pending.extend((item, depth + 1) for item in items)
    return None


def _parse(kind_or_queue: str | None, body: bytes, properties: Any, where: dict[str, str | None]) -> Message:
    expected = _require_kind(kind_or_queue) if kind_or_queue else None
    where["kind"] = expected
    property_id = _property(properties, "message_id") or None
    if property_id is not None and not isinstance(property_id, str):
        raise MalformedMessage(f"AMQP message_id must be text, got {type(property_id).__name__}", **where)
    where["message_id"] = property_id if is_message_id(property_id) else None
    if not isinstance(body, bytes | bytearray | memoryview):
        raise MalformedMessage(f"body must be bytes, got {type(body).__name__}", **where)
    body = bytes(body)
    if len(body) > MAX_BODY_BYTES:
        raise MalformedMessage(f"body is {len(body)} bytes, more than {MAX_BODY_BYTES}", **where)
    content_type = _property(properties, "content_type")
    if content_type and (
        not isinstance(content_type, str) or content_type.split(";")[0].strip().lower() != CONTENT_TYPE
    ):
        raise MalformedMessage(f"content_type is {content_type!r:.100}, expected {CONTENT_TYPE!r}", **where)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"body is not UTF-8 text: {exc}", **where) from None
    depth = nesting_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise MalformedMessage(f"JSON nests {depth} levels deep, more than {MAX_JSON_DEPTH}", **where)
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise MalformedMessage(f"body is not valid JSON: {exc}", **where) from None
    except RecursionError:
        raise MalformedMessage(f"JSON nests deeper than {MAX_JSON_DEPTH} levels", **where) from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. an integer of 5,000 digits, NaN
        raise MalformedMessage(f"body is not valid JSON: {_describe(exc)}", **where) from None
    if not isinstance(data, dict):
        raise MalformedMessage(f"body must be a JSON object, got {type(data).__name__}", **where)
    body_id = data.get("message_id")
    if where["message_id"] is None and is_message_id(body_id):
        where["message_id"] = body_id
    problem = _unstorable(data)
    if problem:
        raise MalformedMessage(problem, **where)
    version = data.get("schema_version")
    if version is None:
        raise MalformedMessage("schema_version is missing", **where)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise MalformedMessage(
            f"schema_version {version!r:.80} is not supported (this consumer reads version {SCHEMA_VERSION})",
            **where,
        )

    body_kind = data.get("kind")
    if body_kind is not None and (not isinstance(body_kind, str) or body_kind not in MODELS):
        raise MalformedMessage(
            f"unknown kind {body_kind!r:.80} (expected one of: {', '.join(MODELS)})", **where
        )
    type_kind = _property(properties, "type") or None
    if type_kind is not None and (not isinstance(type_kind, str) or type_kind not in MODELS):
        raise MalformedMessage(f"AMQP type {type_kind!r:.80} is not a known kind", **where)
    kinds = {k for k in (expected, body_kind, type_kind) if k}
    if len(kinds) > 1:
        sources = (("queue expects", expected), ("body says", body_kind), ("AMQP type says", type_kind))
        said = ", ".join(f"{source} {value!r}" for source, value in sources if value)
        raise MalformedMessage(f"kind disagrees: {said}", **where)
    if not kinds:
        raise MalformedMessage(
            "kind is missing (no body field, AMQP type or queue to infer it from)", **where
        )
    kind = kinds.pop()
    where["kind"] = kind

    if property_id is not None:
        if body_id is not None and body_id != property_id:
            raise MalformedMessage(
                f"message_id in the body ({body_id!r:.140}) differs from the AMQP message_id "
                f"({property_id!r:.140})",
                **where,
            )
        data["message_id"] = property_id
    elif body_id is None:
        raise MalformedMessage(
            "message_id is missing (neither the AMQP property nor the body has one)", **where
        )
    data["kind"] = kind
    try:
        message = MODELS[kind].model_validate(data)
    except ValidationError as exc:
        raise MalformedMessage(_explain(exc), **where) from None
    message.to_body()  # what cannot be serialised cannot be stored: fail here, not in the inbox INSERT
    return message


@dataclass(frozen=True)
class MessageLimits:
    """What this deployment can run, checked by :func:`check_runnable` before a message reaches the
    inbox (``storage.rabbitmq.max_days_per_message`` / ``max_runs_per_message``)."""

    first_day: dt.date  # the first `date` partition (storage.history_start)
    last_day: (
        dt.date
    )  # the last `date` partition: yesterday UTC, since a day's partition exists once it is over
    max_days_per_message: int = 31
    max_runs_per_message: int = 100

    @property
    def today(self) -> dt.date:
        return self.last_day + timedelta(days=1)


def planned_runs(message: Message, last_partition_day: dt.date) -> int:
    """How many runs the message asks for (one per touched day with a partition for quotes.updated)."""
    if isinstance(message, QuotesUpdatedMessage):  # counted, not listed: the range may span centuries
        return max(0, (min(message.last_day, last_partition_day) - message.first_day).days + 1)
    return 1


def check_runnable(message: Message, limits: MessageLimits) -> Message:
    """The message if this deployment can run it; else :class:`UnrunnableMessage` with the reason.

    Checked before the inbox, because a committed row that cannot become a run request (a day outside
    the `date` partitions) would fail every later tick, and one message must not ask for thousands of
    runs. A ``quotes.updated`` range may reach into today: today's partition does not exist yet, so
    only the finished days are run (the nightly schedule picks today up once it is over).
    """
    where = {"kind": message.kind, "message_id": message.message_id}
    first, last = limits.first_day, limits.last_day
    if isinstance(message, TaskMessage):
        day = message.run_day
        what = f"date {day}" if message.date else f"created_at {message.created_at.isoformat()} (day {day})"
        if day < first:
            raise UnrunnableMessage(
                f"{what} is before the first partition day {first} (storage.history_start)", **where
            )
        if day > last:
            raise UnrunnableMessage(
                f"{what} has no partition yet: the last is {last} (a UTC day's partition exists once the "
                f"day is over)",
                **where,
            )
    elif isinstance(message, QuotesUpdatedMessage):
        if message.first_day < first:
            raise UnrunnableMessage(
                f"start {message.start.isoformat()} is before the first partition day {first} "
                f"(storage.history_start)",
                **where,
            )
        if message.last_day > limits.today:
            raise UnrunnableMessage(
                f"end {message.end.isoformat()} is in the future (today is {limits.today} UTC)", **where
            )
        if message.span_days > limits.max_days_per_message:
            raise UnrunnableMessage(
                f"start..end spans {message.span_days} days, more than "
                f"storage.rabbitmq.max_days_per_message ({limits.max_days_per_message}); split it",
                **where,
            )
    runs = planned_runs(message, last)
    if runs > limits.max_runs_per_message:
        raise UnrunnableMessage(
            f"asks for {runs} runs, more than storage.rabbitmq.max_runs_per_message "
            f"({limits.max_runs_per_message})",
            **where,
        )
    return message
