"""The alerting engine, pure: rules on a snapshot -> observations -> alert state changes and notices.

One evaluation is ``evaluate`` (what every rule sees on every entity now) then ``transition`` (how
the stored alerts move: pending -> firing -> resolved, which notices that sends). Both are pure and
deterministic - same inputs, same outputs, sorted by rule and fingerprint - so the sensor can run
them inside a transaction and retry on an optimistic-lock conflict, and tests can replay any
sequence of ticks with planted times.

Why an alert is notified at most once per episode and not more often than the rule's cooldown:
the ``firing`` notice's id is derived from the fingerprint and the episode's ``fired_at``
(:func:`~.model.notice_id`), so a retried tick produces the same id and the outbox dedups it; a
re-fire within ``cooldown_s`` of the last firing notice fires silently (``notified`` False), and an
episode that was not notified sends no ``resolved`` either. A silent episode still firing when the
cooldown has passed sends its ``firing`` notice then, so a condition that flapped and then stuck is
not left looking resolved to the people who got the last ``resolved`` notice.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from rof_pipelines.core.alerts.expressions import CompiledRule, collections_read
from rof_pipelines.core.alerts.figures import COLLECTIONS, FIGURES
from rof_pipelines.core.alerts.model import (
    AlertState,
    Notice,
    Observation,
    Route,
    RuleSpec,
    Snapshot,
    fingerprint,
    notice_id,
    severity_rank,
)
from rof_pipelines.core.alerts.templates import render
from rof_pipelines.errors import FigureNotSet

_GLOBAL_FIGURES = frozenset(FIGURES["global"])


@dataclass(frozen=True)
class Evaluation:
    """Every rule on every entity of one snapshot."""

    observations: list[Observation] = field(default_factory=list)
    undecided_rules: frozenset[str] = frozenset()  # rules over a kind the snapshot could not read
    errors: dict[str, str] = field(default_factory=dict)  # rule -> its first evaluation error


@dataclass(frozen=True)
class Transition:
    """What an evaluation changes: the alert states to write (each with the version it was read
    at, for the store's optimistic lock; 0 = new) and the notices to put in the outbox."""

    changed: list[AlertState] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)


def _plain(value: Any) -> Any:
    """Mappings and sequences as dicts and lists: what cel converts (it refuses e.g. frozensets)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _scalars(figures: Mapping[str, Any]) -> dict[str, Any]:
    """The figures worth carrying on an alert (no collections)."""
    return {k: v for k, v in sorted(figures.items()) if isinstance(v, str | int | float | bool) or v is None}


def _default_message(spec: RuleSpec, labels: Mapping[str, str]) -> str:
    what = spec.description or "condition holds"
    where = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return f"{spec.name}: {what}" + (f" ({where})" if where else "")


def _kinds_read(rule: CompiledRule) -> set[str]:
    kinds = {rule.spec.each} | set(collections_read(rule))
    if rule.names & _GLOBAL_FIGURES:
        kinds.add("global")
    return kinds


def evaluate(rules: Sequence[CompiledRule], snapshot: Snapshot) -> Evaluation:
    """Every rule on every entity of its kind (``global``: once), as observations.

    Variables: the global figures, one map per kind (``markets``: key -> figures, ...), and for a
    per-entity rule that entity's figures. Labels: the rule's, updated with the entity's (the
    entity's win; an entity the snapshot gives no labels gets ``{kind: key}`` so that alerts on two
    entities never share a fingerprint). A rule reading a kind in ``snapshot.unknown`` is undecided
    and observes nothing (its alerts stay as they are).
    """
    collections = {COLLECTIONS[kind]: _plain(snapshot.entities.get(kind, {})) for kind in COLLECTIONS}
    base: dict[str, Any] = {**_plain(snapshot.globals), **collections}
    observations: list[Observation] = []
    undecided: set[str] = set()
    errors: dict[str, str] = {}
    for rule in sorted(rules, key=lambda r: r.spec.name):
        spec = rule.spec
        if _kinds_read(rule) & set(snapshot.unknown):
            undecided.add(spec.name)
            continue
        if spec.each == "global":
            targets: list[tuple[dict[str, Any], dict[str, str], Mapping[str, Any]]] = [
                (base, dict(spec.labels), snapshot.globals)
            ]
        else:
            entities = snapshot.entities.get(spec.each, {})
            entity_labels = snapshot.labels.get(spec.each, {})
            targets = []
            for key in sorted(entities):
                figures = _plain(entities[key])
                own = entity_labels.get(key) or {spec.each: str(key)}
                labels = {**spec.labels, **{str(k): str(v) for k, v in own.items()}}
                targets.append(({**base, **figures}, labels, figures))
        seen: set[str] = set()
        for variables, labels, figures in targets:
            fp = fingerprint(spec.name, labels)
            if fp in seen:
                errors.setdefault(spec.name, f"two {spec.each} entities carry the same labels {labels}")
                continue
            seen.add(fp)
            values = _scalars(figures)
            try:
                active: bool | None = rule.evaluate(variables)
                error = None
            except FigureNotSet as exc:  # this entity lacks a figure: undecided, not the rule's fault
                active, error = None, str(exc)
            except ValueError as exc:
                active, error = None, str(exc)
                errors.setdefault(spec.name, error)
            summary = render(spec.message, variables) if spec.message else _default_message(spec, labels)
            observations.append(Observation(spec.name, fp, labels, active, summary, values, error))
    observations.sort(key=lambda o: (o.rule, o.fingerprint))
    return Evaluation(observations, frozenset(undecided), errors)


def _seconds(later: datetime, earlier: datetime | None) -> float:
    return float("inf") if earlier is None else (later - earlier).total_seconds()


def _notice(state: AlertState, event: str, now: datetime, values: Mapping[str, Any]) -> Notice:
    assert state.fired_at is not None  # only episodes that fired are notified
    return Notice(
        notice_id=notice_id(state.fingerprint, event, state.fired_at),
        event=event,  # type: ignore[arg-type]
        rule=state.rule,
        fingerprint=state.fingerprint,
        labels=dict(state.labels),
        severity=state.severity,
        summary=state.summary,
        at=now,
        values=dict(values),
    )


def _fire(state: AlertState, spec: RuleSpec, now: datetime) -> tuple[AlertState, Notice | None]:
    """pending -> firing: notified unless the last firing notice is within the cooldown."""
    silent = _seconds(now, state.last_notified_at) < spec.cooldown_s
    fired = replace(
        state,
        status="firing",
        fired_at=now,
        resolved_at=None,
        notified=not silent,
        last_notified_at=state.last_notified_at if silent else now,
    )
    return fired, None if silent else _notice(fired, "firing", now, fired.values)


def _on_active(
    state: AlertState | None, obs: Observation, spec: RuleSpec, now: datetime
) -> tuple[AlertState | None, Notice | None]:
    if state is None or state.status == "resolved":
        pending = AlertState(
            rule=spec.name,
            fingerprint=obs.fingerprint,
            labels=dict(obs.labels),
            severity=spec.severity,
            status="pending",
            active_since=now,
            last_notified_at=state.last_notified_at if state else None,
            summary=obs.summary,
            values=dict(obs.values),
            version=state.version if state else 0,
        )
        return _fire(pending, spec, now) if spec.for_s <= 0 else (pending, None)
    refreshed = state
    if state.summary != obs.summary or state.severity != spec.severity:
        refreshed = replace(state, summary=obs.summary, values=dict(obs.values), severity=spec.severity)
    if state.status == "pending":
        if _seconds(now, state.active_since) >= spec.for_s:
            return _fire(replace(refreshed, values=dict(obs.values)), spec, now)
    elif not state.notified and _seconds(now, state.last_notified_at) >= spec.cooldown_s:
        late = replace(
            refreshed, notified=True, last_notified_at=now
        )  # a silent episode outlived the cooldown
        return late, _notice(late, "firing", now, obs.values)
    return (refreshed, None) if refreshed is not state else (None, None)


def _on_inactive(
    state: AlertState | None, spec: RuleSpec | None, now: datetime, values: Mapping[str, Any] | None = None
) -> tuple[AlertState | None, Notice | None]:
    """The condition no longer holds (or its rule is gone: ``spec`` None, resolved silently)."""
    if state is None or state.status == "resolved":
        return None, None
    resolved = replace(state, status="resolved", resolved_at=now)
    if state.status == "firing" and state.notified and spec is not None and spec.notify_resolved:
        return resolved, _notice(resolved, "resolved", now, state.values if values is None else values)
    return resolved, None


def transition(
    states: Mapping[str, AlertState],
    evaluation: Evaluation,
    rules: Mapping[str, RuleSpec],
    now: datetime,
) -> Transition:
    """Move the stored alerts (keyed by fingerprint) by one evaluation; only changed states return."""
    changed: list[AlertState] = []
    notices: list[Notice] = []

    def keep(result: tuple[AlertState | None, Notice | None]) -> None:
        new, notice = result
        if new is not None:
            changed.append(new)
        if notice is not None:
            notices.append(notice)

    observed: set[str] = set()
    for obs in sorted(evaluation.observations, key=lambda o: (o.rule, o.fingerprint)):
        observed.add(obs.fingerprint)
        spec = rules.get(obs.rule)
        if spec is None or obs.active is None:
            continue
        state = states.get(obs.fingerprint)
        keep(_on_active(state, obs, spec, now) if obs.active else _on_inactive(state, spec, now, obs.values))

    for fp in sorted(states, key=lambda f: (states[f].rule, f)):
        state = states[fp]
        if fp in observed or state.status == "resolved" or state.rule in evaluation.undecided_rules:
            continue
        spec = rules.get(state.rule)
        if spec is None:  # removed from config or disabled: resolved, and nobody told
            keep(_on_inactive(state, None, now))
        elif spec.absent == "resolve":
            keep(_on_inactive(state, spec, now))

    changed.sort(key=lambda s: (s.rule, s.fingerprint))
    notices.sort(key=lambda n: (n.rule, n.fingerprint, n.event))
    return Transition(changed, notices)


def route(notice: Notice, routes: Sequence[Route], channels: Sequence[str]) -> list[str]:
    """The channels a notice goes to, in ``channels`` order. No routes: every channel. A test notice
    is never routed (``rof alerts test CHANNEL`` names its channel)."""
    if notice.event == "test":
        return []
    if not routes:
        return list(channels)
    wanted: set[str] = set()
    for r in routes:
        if severity_rank(notice.severity) < severity_rank(r.min_severity):
            continue
        if any(notice.labels.get(k) != v for k, v in r.match.items()):
            continue
        if r.rules and notice.rule not in r.rules:
            continue
        wanted.update(r.channels)
    return [c for c in channels if c in wanted]


def backoff_seconds(attempt: int, initial_s: float, maximum_s: float) -> float:
    """The pause before retry ``attempt`` (1 = the first retry): ``initial * 2**(attempt-1)``, capped.

    No jitter: the outbox has one sender (the alerts sensor, one tick at a time), so there is no herd
    of clients to spread out, and a deterministic schedule is what the tests and the operator reading
    ``next_attempt_at`` can check.
    """
    exponent = min(max(attempt, 1) - 1, 60)  # 2**60 * any sane initial is past any maximum
    return float(min(maximum_s, initial_s * 2.0**exponent))


__all__ = ["Evaluation", "Transition", "backoff_seconds", "evaluate", "route", "transition"]
