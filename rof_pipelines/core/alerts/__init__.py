"""Alerting, the pure part: rules (ready-made and custom, CEL), the snapshot they read, the alert
state machine, routing and retry backoff. The outside world (state store, channels, Dagster) lives
in ``adapters/`` and ``defs/``; nothing here does I/O."""

from rof_pipelines.core.alerts.builtin import BUILTIN_RULES, builtin_spec
from rof_pipelines.core.alerts.engine import (
    Evaluation,
    Transition,
    backoff_seconds,
    evaluate,
    route,
    transition,
)
from rof_pipelines.core.alerts.expressions import CompiledRule, compile_rule
from rof_pipelines.core.alerts.templates import check_template, render

__all__ = [
    "BUILTIN_RULES",
    "CompiledRule",
    "Evaluation",
    "Transition",
    "backoff_seconds",
    "builtin_spec",
    "check_template",
    "compile_rule",
    "evaluate",
    "render",
    "route",
    "transition",
]
