"""The ready-made rules, as :class:`~.model.RuleSpec` built from their tunables.

Each ready-made rule is an ordinary CEL rule over the documented figures (so it goes through the
same :func:`~.expressions.compile_rule` as a custom one and ``rof alerts rules`` can show its
expression). Tunables from config are rendered into the expression as literals, never pasted as
text: strings are quoted the CEL way and numbers are written as doubles (``300.0``, since CEL does
not coerce ``int`` against ``double`` in arithmetic) or ints where the figure is an int.
"""

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rof_pipelines.core.alerts.model import SEVERITIES, Absent, RuleSpec, Severity
from rof_pipelines.errors import AlertRuleError

COMMON_PARAMS = frozenset({"labels", "severity", "cooldown_s", "message"})


def cel_string(value: Any) -> str:
    """A CEL string literal (JSON's escaping is a subset of CEL's)."""
    return json.dumps(str(value), ensure_ascii=False)


def cel_double(value: Any) -> str:
    """A CEL double literal: ``300.0``, ``0.25``, ``1e+20`` (never ``300``, an int to CEL)."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    text = repr(number)
    return text if any(c in text for c in ".eE") else text + ".0"


def cel_int(value: Any) -> str:
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f"{value!r} is not a whole number")
    return str(int(value))


def cel_string_list(values: Sequence[Any]) -> str:
    return "[" + ", ".join(cel_string(v) for v in values) + "]"


def _in(name: str, values: Sequence[Any] | None) -> str:
    """`` && name in [..]`` when a filter list is given, nothing for an empty one."""
    return f" && {name} in {cel_string_list(values)}" if values else ""


@dataclass(frozen=True)
class BuiltinRule:
    """One ready-made rule: its kind, defaults and how its expression is made from its tunables."""

    each: str
    severity: Severity
    description: str
    defaults: Mapping[str, Any]
    expression: Callable[[Mapping[str, Any]], str]
    message: str
    absent: Absent = "resolve"
    notify_resolved: bool = True
    for_param: str | None = None  # the tunable (seconds) used as the rule's ``for``


BUILTIN_RULES: dict[str, BuiltinRule] = {
    "run_failed": BuiltinRule(
        each="job",
        severity="critical",
        description="the newest finished run of a job (per market for partitioned runs) failed",
        defaults={"jobs": [], "pools": []},
        expression=lambda p: 'last_status == "FAILURE"' + _in("job", p["jobs"]) + _in("pool", p["pools"]),
        message="job {job} failed (market '{market}', pool {pool}): run {last_run_id}: {last_error}",
        absent="keep",
    ),
    "sensor_failing": BuiltinRule(
        each="sensor",
        severity="warning",
        description="a sensor's ticks failed this many times in a row",
        defaults={"consecutive": 3},
        expression=lambda p: f"workerpool_sensor_consecutive_failures >= {cel_int(p['consecutive'])}",
        message="sensor {sensor} failed {workerpool_sensor_consecutive_failures} ticks in a row: {last_error}",
    ),
    "breaker_open": BuiltinRule(
        each="service",
        severity="critical",
        description="a circuit breaker stayed open longer than longer_than",
        defaults={"longer_than_s": 300.0},
        expression=lambda p: 'state == "open"',
        message="circuit breaker of {service} ({process}) open for {open_seconds:.0f}s "
        "after {circuit_breaker_failures_total:.0f} failures",
        for_param="longer_than_s",
    ),
    "run_queue_waiting": BuiltinRule(
        each="pool",
        severity="warning",
        description="a pool's oldest queued run has waited longer than longer_than",
        defaults={"longer_than_s": 600.0},
        expression=lambda p: f"workerpool_oldest_queued_seconds > {cel_double(p['longer_than_s'])}",
        message="pool {pool}: the oldest of {workerpool_runs_queued:.0f} queued runs has waited "
        "{workerpool_oldest_queued_seconds:.0f}s ({workerpool_runs_in_progress:.0f} in progress, "
        "max_workers {max_workers:.0f})",
    ),
    "daemon_heartbeat_stale": BuiltinRule(
        each="daemon",
        severity="critical",
        description="a Dagster daemon's last heartbeat is older than older_than",
        defaults={"older_than_s": 120.0},
        expression=lambda p: f"workerpool_daemon_heartbeat_age_seconds > {cel_double(p['older_than_s'])}",
        message="daemon {daemon}: last heartbeat {workerpool_daemon_heartbeat_age_seconds:.0f}s ago",
    ),
    "stale_data": BuiltinRule(
        each="market",
        severity="warning",
        description="no new quotes for a market for this long of open market (by its calendar)",
        defaults={"after_s": 7200.0, "markets": []},
        expression=lambda p: (
            f"data_manager_stale_open_seconds > {cel_double(p['after_s'])}" + _in("market", p["markets"])
        ),
        message="market {market}: no new quotes for {data_manager_stale_open_seconds:.0f}s of open market "
        "(calendar {calendar})",
    ),
    "ga_regression": BuiltinRule(
        each="market",
        severity="warning",
        description="the newest GA champion is worse than the previous one by more than by",
        defaults={"by": 0.25},
        expression=lambda p: f"ga_champion_fitness < ga_previous_champion_fitness - {cel_double(p['by'])}",
        message="market {market}: GA champion fitness {ga_champion_fitness:.3f}, "
        "previous champion {ga_previous_champion_fitness:.3f}",
    ),
    "drawdown": BuiltinRule(
        each="market",
        severity="critical",
        description="the config in force lost more than beyond (max drawdown) on the newest test window",
        defaults={"beyond": 0.2},
        expression=lambda p: f"rl_agent_active_max_drawdown > {cel_double(p['beyond'])}",
        message="market {market}: the active config's max drawdown is {rl_agent_active_max_drawdown:.1%}",
    ),
    "config_refused": BuiltinRule(
        each="global",
        severity="warning",
        description="the newest config.yaml edit was refused (the last valid version stays in force)",
        defaults={},
        expression=lambda p: "config_refused",
        message="config.yaml edit refused, the last valid config stays in force: {config_refused_error}",
    ),
    "promotion": BuiltinRule(
        each="promotion",
        severity="info",
        description="an A/B test promoted a winner (each promotion recorded within within)",
        defaults={"within_s": 86400.0},
        expression=lambda p: f"age_seconds <= {cel_double(p['within_s'])}",
        message="A/B experiment {experiment_id} promoted {winner} for market '{market}'",
        notify_resolved=False,
    ),
}


def builtin_spec(name: str, params: Mapping[str, Any]) -> RuleSpec:
    """The ready-made rule ``name`` with the tunables of ``_BuiltinRule.params()`` (durations as
    ``<field>_s`` seconds). AlertRuleError for an unknown rule, tunable or unusable value."""
    rule = BUILTIN_RULES.get(name)
    if rule is None:
        raise AlertRuleError(name, f"no ready-made rule of that name ({', '.join(BUILTIN_RULES)})")
    unknown = sorted(set(params) - COMMON_PARAMS - set(rule.defaults))
    if unknown:
        raise AlertRuleError(
            name,
            f"unknown tunable {', '.join(unknown)} (tunables: {', '.join(sorted(rule.defaults)) or 'none'})",
        )
    tunables = {**rule.defaults, **{k: v for k, v in params.items() if k in rule.defaults}}
    severity = params.get("severity") or rule.severity
    if severity not in SEVERITIES:
        raise AlertRuleError(name, f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    try:
        expr = rule.expression(tunables)
        for_s = float(tunables[rule.for_param]) if rule.for_param else 0.0
    except (ValueError, TypeError) as exc:
        raise AlertRuleError(name, f"tunable: {exc}") from None
    extra: dict[str, Any] = {}
    if params.get("cooldown_s") is not None:
        extra["cooldown_s"] = float(params["cooldown_s"])
    message = params.get("message")
    return RuleSpec(
        name=name,
        expr=expr,
        each=rule.each,
        for_s=for_s,
        severity=severity,
        labels={str(k): str(v) for k, v in (params.get("labels") or {}).items()},
        message=message if message else rule.message,
        notify_resolved=rule.notify_resolved,
        absent=rule.absent,
        builtin=True,
        description=rule.description,
        **extra,
    )


__all__ = ["BUILTIN_RULES", "BuiltinRule", "builtin_spec", "cel_double", "cel_string"]
