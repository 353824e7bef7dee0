"""What the alerting engine reasons about: rules, the snapshot of figures they read, what each rule
observed, the state of each alert, and the notices and deliveries that leave the system.

Every alert is one rule applied to one entity (a market, a pool, a job, ...): its ``fingerprint`` is
the rule's name plus its labels, so the same condition on the same entity is one alert however many
times it is evaluated (dedup). Times are aware UTC datetimes.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")  # ascending
AlertStatus = Literal["pending", "firing", "resolved"]
ALERT_STATUSES: tuple[str, ...] = ("pending", "firing", "resolved")
NoticeEvent = Literal["firing", "resolved", "test"]
NOTICE_EVENTS: tuple[str, ...] = ("firing", "resolved", "test")
DeliveryStatus = Literal["pending", "sent", "dead"]
DELIVERY_STATUSES: tuple[str, ...] = ("pending", "sent", "dead")
Absent = Literal["resolve", "keep"]


def severity_rank(severity: str) -> int:
    """0 info, 1 warning, 2 critical (routing compares ranks)."""
    return SEVERITIES.index(severity)


def fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """The alert's identity: rule name plus its labels, order-free (16 hex digits)."""
    text = json.dumps([rule, sorted((str(k), str(v)) for k, v in labels.items())], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RuleSpec:
    """One rule, ready-made or written in config: a CEL expression true while the condition holds,
    evaluated once per entity of kind ``each`` (``global``: once)."""

    name: str
    expr: str
    each: str = "global"
    for_s: float = 0.0  # the condition must hold this long before the alert fires
    severity: Severity = "warning"
    labels: Mapping[str, str] = field(default_factory=dict)
    message: str = ""  # a template over the entity's figures: "{market}: {ga_best_fitness:.2f}"
    cooldown_s: float = 900.0  # a re-fire within this long after the last notification is not sent
    notify_resolved: bool = True  # send a "resolved" notice when the condition clears
    absent: Absent = "resolve"  # an entity missing from the snapshot: resolve its alert, or keep it
    builtin: bool = False
    description: str = ""


@dataclass(frozen=True)
class Snapshot:
    """The figures rules read, taken once per evaluation.

    ``globals`` are visible to every rule; ``entities[kind][key]`` are one entity's figures (the
    names documented in :mod:`.figures`), ``labels[kind][key]`` the labels its alerts carry. A kind in
    ``unknown`` could not be read this time (its source did not answer): rules over it change nothing.
    """

    taken_at: datetime
    globals: Mapping[str, Any] = field(default_factory=dict)
    entities: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    labels: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)
    unknown: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Observation:
    """One rule on one entity at one evaluation. ``active`` None: it could not be decided (an
    evaluation error, a missing figure, its source down) and the alert's state stays as it is."""

    rule: str
    fingerprint: str
    labels: Mapping[str, str]
    active: bool | None
    summary: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class AlertState:
    """One alert (rule + labels) as the store keeps it between evaluations."""

    rule: str
    fingerprint: str
    labels: Mapping[str, str]
    severity: Severity
    status: AlertStatus
    active_since: datetime | None  # when the condition last became true
    fired_at: datetime | None = None  # when the current (or last) episode fired
    resolved_at: datetime | None = None
    last_notified_at: datetime | None = None  # the last "firing" notice sent (cooldown)
    notified: bool = False  # whether the current episode's "firing" notice was sent
    summary: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)
    version: int = 0  # the store's optimistic lock; 0 = not stored yet


@dataclass(frozen=True)
class Notice:
    """One notification to send: an alert fired or resolved (or a channel test)."""

    notice_id: str  # stable: the same episode's notice always has the same id (idempotency key)
    event: NoticeEvent
    rule: str
    fingerprint: str
    labels: Mapping[str, str]
    severity: Severity
    summary: str
    at: datetime
    values: Mapping[str, Any] = field(default_factory=dict)


def notice_id(fp: str, event: str, episode_start: datetime) -> str:
    """The id of an episode's notice: fingerprint, event and the episode's firing time."""
    text = f"{fp}|{event}|{episode_start.isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def delivery_id(notice: str, channel: str) -> str:
    """One delivery per notice and channel (the outbox's unique key)."""
    return hashlib.sha256(f"{notice}|{channel}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Delivery:
    """One notice to one channel: the outbox row, retried until sent or given up (``dead``)."""

    delivery_id: str
    notice: Notice
    channel: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    lease_until: datetime | None = None  # a claimed row: another evaluation leaves it alone until then
    last_error: str | None = None
    answer: str | None = None  # what the receiver answered (status and body excerpt)
    sent_at: datetime | None = None


@dataclass(frozen=True)
class Route:
    """Which channels a notice goes to: every route that matches adds its channels. A route matches a
    notice at or above ``min_severity`` whose labels include ``match`` and, when ``rules`` is set,
    whose rule is one of them. No routes at all: every channel gets every notice."""

    channels: tuple[str, ...]
    min_severity: Severity = "info"
    match: Mapping[str, str] = field(default_factory=dict)
    rules: tuple[str, ...] = ()
