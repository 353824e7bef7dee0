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

:func:`parse_message` never lets a pydantic or JSON error escape: it raises
:class:`MalformedMessage` whose ``reason`` is one human-readable line, fit for a dead-letter header.
"""

import datetime as dt
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
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
from rof_pipelines.errors import DataValidationError

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"
MAX_BODY_BYTES = 1 << 20  # a message is a small command, never data; anything bigger is a mistake

# kind -> queue suffix; the CLI's spelling ("quotes-updated") and the suffixes are accepted as aliases.
QUEUE_SUFFIX: dict[str, str] = {"task": "tasks", "quotes.updated": "quotes.updated", "backup": "backup"}
_ALIASES: dict[str, str] = {
    **{kind: kind for kind in QUEUE_SUFFIX},
    **{suffix: kind for kind, suffix in QUEUE_SUFFIX.items()},
    "quotes-updated": "quotes.updated",
    "quotes_updated": "quotes.updated",
}
_MESSAGE_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


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


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _market(value: str) -> str:
    return Market.parse(value).key


def _message_id(value: str) -> str:
    if not _MESSAGE_ID_RE.match(value):
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


class BackupMessage(_Message):
    """Back up the state store (to ``target`` when given, else the configured place)."""

    kind: Literal["backup"] = "backup"
    target: str | None = Field(default=None, min_length=1, max_length=1000)


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
    """
    expected = _require_kind(kind_or_queue) if kind_or_queue else None
    property_id = _property(properties, "message_id") or None
    where = {"kind": expected, "message_id": property_id}
    if len(body) > MAX_BODY_BYTES:
        raise MalformedMessage(f"body is {len(body)} bytes, more than {MAX_BODY_BYTES}", **where)
    content_type = _property(properties, "content_type")
    if content_type and content_type.split(";")[0].strip().lower() != CONTENT_TYPE:
        raise MalformedMessage(f"content_type is {content_type!r}, expected {CONTENT_TYPE!r}", **where)
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"body is not UTF-8 text: {exc}", **where) from None
    except json.JSONDecodeError as exc:
        raise MalformedMessage(f"body is not valid JSON: {exc}", **where) from None
    if not isinstance(data, dict):
        raise MalformedMessage(f"body must be a JSON object, got {type(data).__name__}", **where)

    body_id = data.get("message_id")
    where["message_id"] = property_id or (body_id if isinstance(body_id, str) else None)
    version = data.get("schema_version")
    if version is None:
        raise MalformedMessage("schema_version is missing", **where)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise MalformedMessage(
            f"schema_version {version!r} is not supported (this consumer reads version {SCHEMA_VERSION})",
            **where,
        )

    body_kind = data.get("kind")
    if body_kind is not None and (not isinstance(body_kind, str) or body_kind not in MODELS):
        raise MalformedMessage(f"unknown kind {body_kind!r} (expected one of: {', '.join(MODELS)})", **where)
    type_kind = _property(properties, "type") or None
    if type_kind is not None and type_kind not in MODELS:
        raise MalformedMessage(f"AMQP type {type_kind!r} is not a known kind", **where)
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
                f"message_id in the body ({body_id!r}) differs from the AMQP message_id ({property_id!r})",
                **where,
            )
        data["message_id"] = property_id
    elif body_id is None:
        raise MalformedMessage(
            "message_id is missing (neither the AMQP property nor the body has one)", **where
        )
    data["kind"] = kind
    try:
        return MODELS[kind].model_validate(data)
    except ValidationError as exc:
        raise MalformedMessage(_explain(exc), **where) from None
