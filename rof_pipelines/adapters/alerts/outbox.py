"""One alert evaluation: the snapshot through the rules into the state store's outbox, then the
outbox out through the channels.

Firing and delivering are two steps with a commit between them. :func:`enqueue` writes the alerts'
new states and one delivery row per notice and channel in one transaction (a notice's delivery ids
are stable, so a repeated evaluation never writes a second row). :func:`deliver_due` then sends what
is due, each channel in its own thread, one row at a time: a claimed row carries a lease, so a
process killed mid-send leaves a row that is sent again once the lease passes (at least once; the
receivers get the same ``Idempotency-Key`` / ``Message-ID`` both times). A channel that fails stops
for this evaluation and its row waits its backoff; the other channels go on.
"""

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rof_pipelines.core.alerts.engine import backoff_seconds, evaluate, route, transition
from rof_pipelines.core.alerts.model import Delivery, Notice, delivery_id
from rof_pipelines.core.redaction import clip
from rof_pipelines.errors import AlertRefused, ConflictError, RofError, TransientError

log = logging.getLogger(__name__)

LEASE_MARGIN_S = 5.0  # a claimed row's lease: the channel's timeout plus this


@dataclass
class Outcome:
    """What one evaluation did, for the tick's summary and the tests."""

    fired: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    enqueued: int = 0
    sent: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    dead: int = 0
    undecided: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [
            f"fired {', '.join(self.fired) or 'none'}",
            f"resolved {', '.join(self.resolved) or 'none'}",
            f"enqueued {self.enqueued}",
            f"sent {sum(self.sent.values())}"
            + (f" ({', '.join(f'{c} {n}' for c, n in sorted(self.sent.items()))})" if self.sent else ""),
        ]
        if self.failed:
            parts.append("retrying " + "; ".join(f"{c}: {e}" for c, e in sorted(self.failed.items())))
        if self.dead:
            parts.append(f"given up {self.dead}")
        if self.undecided:
            parts.append(f"undecided (source down) {', '.join(self.undecided)}")
        if self.errors:
            parts.append("rule errors " + "; ".join(f"{r}: {e}" for r, e in sorted(self.errors.items())))
        return clip("; ".join(parts), 1000)


def enqueue(
    store: Any,
    rules: Sequence[Any],
    snapshot: Any,
    routes: Sequence[Any],
    channels: Sequence[str],
    outcome: Outcome,
    now: datetime | None = None,
) -> None:
    """Evaluate ``rules`` (compiled) on ``snapshot`` against the stored alert states and commit the new
    states with their deliveries. A concurrent evaluation that wrote first (ConflictError) makes
    this one re-read and try again, once."""
    now = now or datetime.now(UTC)
    specs = {rule.spec.name: rule.spec for rule in rules}
    evaluation = evaluate(rules, snapshot)
    outcome.undecided = sorted(evaluation.undecided_rules)
    outcome.errors = dict(evaluation.errors)
    for attempt in (1, 2):
        states = {state.fingerprint: state for state in store.alerts.states()}
        changes = transition(states, evaluation, specs, now)
        deliveries = [
            Delivery(
                delivery_id=delivery_id(notice.notice_id, channel),
                notice=notice,
                channel=channel,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            for notice in changes.notices
            for channel in route(notice, routes, channels)
        ]
        try:
            outcome.enqueued = store.alerts.apply(changes.changed, deliveries)
        except ConflictError:
            if attempt == 2:
                raise
            continue
        for notice in changes.notices:
            (outcome.fired if notice.event == "firing" else outcome.resolved).append(_describe(notice))
        return


def _describe(notice: Notice) -> str:
    labels = ",".join(f"{k}={v}" for k, v in sorted(notice.labels.items()))
    return f"{notice.rule}{{{labels}}}" if labels else notice.rule


def retire_unknown_channels(store: Any, channels: Sequence[str], now: datetime, outcome: Outcome) -> None:
    """Pending rows for a channel no longer configured are given up, with the reason, rather than
    waiting forever."""
    for row in store.alerts.deliveries(status="pending", limit=1000):
        if row.channel not in channels:
            store.alerts.mark_failed(
                row.delivery_id, f"channel {row.channel!r} is no longer configured", now, None
            )
            outcome.dead += 1


def _retry_at(delivery: Delivery, exc: BaseException, retry: Any, now: datetime) -> datetime | None:
    """When to try again, or None to give up (refused for good, or older than give_up_after).

    A receiver's ``Retry-After`` is honoured even beyond ``retry.maximum`` (retrying earlier only
    earns another 429); it is bounded by ``give_up_after`` alone, so an absurd value cannot park
    the row for longer than the notice would be kept trying anyway."""
    if isinstance(exc, AlertRefused) or not isinstance(exc, TransientError):
        return None
    if now - delivery.notice.at > retry.give_up_after:
        return None
    delay = backoff_seconds(delivery.attempts, retry.initial.total_seconds(), retry.maximum.total_seconds())
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int | float) and retry_after > 0:
        delay = max(delay, min(float(retry_after), retry.give_up_after.total_seconds()))
    return now + timedelta(seconds=delay)


def _drain_channel(
    store: Any,
    name: str,
    channel: Any,
    lease_s: float,
    deadline: float,
    retry: Any,
    clock: Callable[[], datetime],
    outcome: Outcome,
    lock: threading.Lock,
) -> None:
    """Send this channel's due rows one by one until none is due, one fails, or time is up."""
    while time.monotonic() < deadline:
        now = clock()
        claimed = store.alerts.claim_due(now, lease_s, limit=1, channels=[name])
        if not claimed:
            return
        row = claimed[0]
        try:
            answer = channel.send(row.notice, row.delivery_id)
        except Exception as exc:  # the channel's own errors; a bug is reported the same way
            text = clip(str(exc) if isinstance(exc, RofError) else f"{type(exc).__name__}: {exc}", 300)
            retry_at = _retry_at(row, exc, retry, clock())
            store.alerts.mark_failed(row.delivery_id, text, clock(), retry_at)
            with lock:
                if retry_at is None:
                    outcome.dead += 1
                outcome.failed[name] = text
            log.warning(
                "alert delivery %s to %s failed (attempt %d): %s; %s",
                row.delivery_id,
                name,
                row.attempts,
                text,
                f"next try at {retry_at.isoformat()}" if retry_at else "given up",
            )
            return
        store.alerts.mark_sent(row.delivery_id, clip(answer, 500), clock())
        with lock:
            outcome.sent[name] = outcome.sent.get(name, 0) + 1


def deliver_due(
    store: Any,
    channels: Mapping[str, Any],
    retry: Any,
    budget_s: float,
    outcome: Outcome,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Send the outbox's due rows, every channel in parallel, for at most about ``budget_s`` (plus one
    send's timeout)."""
    retire_unknown_channels(store, list(channels), clock(), outcome)
    deadline = time.monotonic() + budget_s
    lock = threading.Lock()
    threads = []
    for name, channel in channels.items():
        lease_s = channel.timeout_s + LEASE_MARGIN_S
        thread = threading.Thread(
            target=_drain_channel,
            args=(store, name, channel, lease_s, deadline, retry, clock, outcome, lock),
            name=f"alerts-{name}",
            daemon=True,
        )
        thread.start()
        threads.append((name, thread, lease_s))
    for name, thread, lease_s in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + lease_s)
        if thread.is_alive():  # its row's lease makes a later evaluation send it again
            with lock:
                outcome.failed[name] = "still sending when the evaluation ended"
