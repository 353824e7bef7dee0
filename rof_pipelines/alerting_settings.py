"""The ``alerting`` section of config.yaml: ready-made rules, custom rules, channels and routes.

Every rule is checked when the config loads: a custom rule's expression compiles (CEL, no ``eval``),
names only documented figures (``core/alerts/figures.py``) and its message only those figures, so an
invalid rule refuses the whole edit with the rule's name and position, and the last valid config
stays in force (hot reload applies valid edits on the next evaluation).

Secrets of channels (webhook URLs, tokens, passwords, header values) are ``SecretStr``; each may be
written as ``${VARIABLE}`` to read it from the environment when the config loads.
"""

import os
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from rof_pipelines.config_types import SECTION_CONFIG, Duration, at_least
from rof_pipelines.core.alerts.figures import KINDS
from rof_pipelines.core.alerts.model import SEVERITIES, Route, RuleSpec, Severity
from rof_pipelines.errors import AlertRuleError

RULE_NAME_RE = r"^[a-z][a-z0-9_]{0,62}$"
CHANNEL_NAME_RE = r"^[A-Za-z][A-Za-z0-9_-]{0,62}$"
_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def _from_environment(value: Any) -> Any:
    """``${NAME}`` -> the environment variable NAME (a config error naming it when unset)."""
    if isinstance(value, str) and (match := _ENV_REF.match(value.strip())):
        name = match.group(1)
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set")
        return os.environ[name]
    return value


Secret = Annotated[SecretStr, BeforeValidator(_from_environment)]
Seconds = Annotated[Duration, at_least(timedelta(0), "a duration")]


class _Section(BaseModel):
    model_config = SECTION_CONFIG


# --- ready-made rules ---------------------------------------------------------------------------------


class _BuiltinRule(_Section):
    """What every ready-made rule has: on/off, severity, labels, cooldown and an optional message."""

    enabled: bool = True
    severity: Severity | None = None  # None: the rule's own default
    labels: dict[str, str] = Field(default_factory=dict)
    cooldown: Duration | None = None  # None: alerting.cooldown
    message: str | None = None  # None: the rule's own template

    def params(self) -> dict[str, Any]:
        """The rule's tunables for :func:`~rof_pipelines.core.alerts.builtin.builtin_spec` (seconds)."""
        out: dict[str, Any] = {"labels": dict(self.labels)}
        if self.severity is not None:
            out["severity"] = self.severity
        if self.cooldown is not None:
            out["cooldown_s"] = self.cooldown.total_seconds()
        if self.message is not None:
            out["message"] = self.message
        for name, value in self:
            if name in _BuiltinRule.model_fields:
                continue
            if isinstance(value, timedelta):
                out[f"{name}_s"] = value.total_seconds()
            elif isinstance(value, list):
                out[name] = list(value)
            else:
                out[name] = value
        return out


class RunFailedRule(_BuiltinRule):
    """The newest finished run of a job (per market for partitioned runs) failed."""

    jobs: list[str] = Field(default_factory=list, description="only these jobs; empty: every job")
    pools: list[str] = Field(default_factory=list, description="only runs of these pools; empty: all")


class SensorFailingRule(_BuiltinRule):
    """A sensor's ticks failed this many times in a row."""

    consecutive: int = Field(default=3, ge=1, le=1000)


class BreakerOpenRule(_BuiltinRule):
    """A circuit breaker stayed open longer than this."""

    longer_than: Seconds = timedelta(minutes=5)


class RunQueueWaitingRule(_BuiltinRule):
    """A pool's oldest queued run has waited longer than this."""

    longer_than: Seconds = timedelta(minutes=10)


class DaemonHeartbeatStaleRule(_BuiltinRule):
    """A Dagster daemon's last heartbeat is older than this."""

    older_than: Seconds = timedelta(minutes=2)


class StaleDataRule(_BuiltinRule):
    """No new quotes for a market for this long of open market (by its calendar)."""

    after: Seconds = timedelta(hours=2)
    markets: list[str] = Field(default_factory=list, description="only these markets; empty: every one")


class GARegressionRule(_BuiltinRule):
    """The newest GA champion's fitness is worse than the previous champion's by more than ``by``."""

    by: float = Field(default=0.25, ge=0, description="in fitness (Sharpe) units")


class DrawdownRule(_BuiltinRule):
    """The config in force lost more than ``beyond`` (max drawdown, 0..1) on the newest test window."""

    beyond: float = Field(default=0.2, gt=0, lt=1)


class ConfigRefusedRule(_BuiltinRule):
    """The newest config.yaml edit was refused (the last valid version stays in force)."""


class PromotionRule(_BuiltinRule):
    """An A/B test promoted a winner (information): each promotion recorded within ``within``."""

    within: Seconds = timedelta(hours=24)


class BuiltinRules(_Section):
    run_failed: RunFailedRule = RunFailedRule()
    sensor_failing: SensorFailingRule = SensorFailingRule()
    breaker_open: BreakerOpenRule = BreakerOpenRule()
    run_queue_waiting: RunQueueWaitingRule = RunQueueWaitingRule()
    daemon_heartbeat_stale: DaemonHeartbeatStaleRule = DaemonHeartbeatStaleRule()
    stale_data: StaleDataRule = StaleDataRule()
    ga_regression: GARegressionRule = GARegressionRule()
    drawdown: DrawdownRule = DrawdownRule()
    config_refused: ConfigRefusedRule = ConfigRefusedRule()
    promotion: PromotionRule = PromotionRule()


# --- custom rules -------------------------------------------------------------------------------------


class CustomRule(BaseModel):
    """A rule written in config: a CEL expression over the documented figures."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, validate_assignment=True, validate_default=True
    )

    name: str = Field(pattern=RULE_NAME_RE)
    expr: str = Field(min_length=1, description="CEL, true while the condition holds")
    each: Literal[KINDS] = "global"  # type: ignore[valid-type]
    for_: Seconds = Field(default=timedelta(0), alias="for")
    severity: Severity = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    message: str = ""
    cooldown: Duration | None = None
    notify_resolved: bool = True
    description: str = ""

    def spec(self, default_cooldown: timedelta) -> RuleSpec:
        return RuleSpec(
            name=self.name,
            expr=self.expr,
            each=self.each,
            for_s=self.for_.total_seconds(),
            severity=self.severity,
            labels=dict(self.labels),
            message=self.message,
            cooldown_s=(self.cooldown or default_cooldown).total_seconds(),
            notify_resolved=self.notify_resolved,
            description=self.description,
        )


# --- channels -----------------------------------------------------------------------------------------

Timeout = Annotated[Duration, at_least(timedelta(milliseconds=100), "a receiver needs time to answer")]


class LogChannel(_Section):
    """The process log (the daemon's): one line per notice, at the severity's level."""

    type: Literal["log"] = "log"


class WebhookChannel(_Section):
    """A generic webhook: the notice as JSON, POSTed, with an ``Idempotency-Key`` header."""

    type: Literal["webhook"]
    url: Secret
    headers: dict[str, Secret] = Field(default_factory=dict)
    timeout: Timeout = timedelta(seconds=5)


class SlackChannel(_Section):
    """A Slack incoming webhook (``{"text": ..., "blocks": [...]}``)."""

    type: Literal["slack"]
    url: Secret
    timeout: Timeout = timedelta(seconds=5)


class TelegramChannel(_Section):
    """A Telegram bot: ``POST {base_url}/bot{token}/sendMessage``."""

    type: Literal["telegram"]
    token: Secret
    chat_id: str = Field(min_length=1)
    base_url: str = "https://api.telegram.org"
    timeout: Timeout = timedelta(seconds=5)


class EmailChannel(_Section):
    """E-mail over SMTP (plain, STARTTLS or SMTPS), one message per notice."""

    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str = ""
    password: Secret = SecretStr("")
    sender: str = Field(min_length=3, pattern=r"^[^@\s]+@[^@\s]+$")
    recipients: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(min_length=1)
    timeout: Timeout = timedelta(seconds=10)


ChannelConfig = Annotated[
    LogChannel | WebhookChannel | SlackChannel | TelegramChannel | EmailChannel,
    Field(discriminator="type"),
]


class RouteConfig(_Section):
    channels: list[str] = Field(min_length=1)
    min_severity: Severity = "info"
    match: dict[str, str] = Field(default_factory=dict, description="labels the alert must carry")
    rules: list[str] = Field(default_factory=list, description="only these rules; empty: any")

    def route(self) -> Route:
        return Route(tuple(self.channels), self.min_severity, dict(self.match), tuple(self.rules))


class RetryConfig(_Section):
    """Backoff of a failed delivery: ``initial`` doubling up to ``maximum``; given up (``dead``) after
    ``give_up_after`` since the notice."""

    initial: Annotated[Duration, at_least(timedelta(seconds=1), "retries need a pause")] = timedelta(
        seconds=10
    )
    maximum: Duration = timedelta(minutes=10)
    give_up_after: Duration = timedelta(hours=24)

    @model_validator(mode="after")
    def _ordered(self) -> "RetryConfig":
        if self.maximum < self.initial:
            raise ValueError("maximum must be at least initial")
        return self


# --- the section ----------------------------------------------------------------------------------------


class AlertingConfig(_Section):
    """``alerting``: evaluated by ``alerts_sensor`` every ``evaluation_interval``."""

    enabled: bool = True
    evaluation_interval: Annotated[
        Duration, at_least(timedelta(seconds=1), "sensors tick in whole seconds")
    ] = timedelta(seconds=30)
    cooldown: Duration = Field(
        default=timedelta(minutes=15),
        description="a rule that fires again within this long after its last notification is not sent",
    )
    retry: RetryConfig = RetryConfig()
    delivery_budget: Annotated[Duration, at_least(timedelta(seconds=1), "a tick needs time to deliver")] = (
        Field(default=timedelta(seconds=30), description="seconds a tick spends delivering, at most")
    )
    retention_days: int = Field(default=30, ge=1)
    rules: BuiltinRules = BuiltinRules()
    custom: list[CustomRule] = Field(default_factory=list)
    channels: dict[str, ChannelConfig] = Field(default_factory=lambda: {"log": LogChannel()})
    routes: list[RouteConfig] = Field(default_factory=list)

    @field_validator("channels")
    @classmethod
    def _channel_names(cls, channels: dict[str, Any]) -> dict[str, Any]:
        for name in channels:
            if not re.match(CHANNEL_NAME_RE, name):
                raise ValueError(
                    f"channel name {name!r}: letters, digits, '_' or '-', starting with a letter"
                )
        return channels

    @model_validator(mode="after")
    def _rules_and_routes(self) -> "AlertingConfig":
        from rof_pipelines.core.alerts.builtin import BUILTIN_RULES

        names: set[str] = set()
        for rule in self.custom:
            if rule.name in BUILTIN_RULES:
                raise ValueError(
                    f"custom rule {rule.name!r}: the name of a ready-made rule (tune it under alerting.rules)"
                )
            if rule.name in names:
                raise ValueError(f"custom rule {rule.name!r} is defined twice")
            names.add(rule.name)
        for i, route in enumerate(self.routes):
            unknown = [c for c in route.channels if c not in self.channels]
            if unknown:
                raise ValueError(
                    f"routes[{i}]: no channel named {', '.join(map(repr, unknown))} "
                    f"(channels: {', '.join(self.channels) or 'none'})"
                )
            unknown_rules = [r for r in route.rules if r not in names and r not in BUILTIN_RULES]
            if unknown_rules:
                raise ValueError(f"routes[{i}]: no rule named {', '.join(map(repr, unknown_rules))}")
        try:
            self.compiled_rules()
        except AlertRuleError as exc:
            raise ValueError(str(exc)) from None
        return self

    def rule_specs(self) -> list[RuleSpec]:
        """Every enabled rule: the ready-made ones with their tunables, then the custom ones."""
        from rof_pipelines.core.alerts.builtin import builtin_spec

        specs = []
        for name, rule in self.rules:
            if rule.enabled:
                params = rule.params()
                params.setdefault("cooldown_s", self.cooldown.total_seconds())
                specs.append(builtin_spec(name, params))
        return specs + [rule.spec(self.cooldown) for rule in self.custom]

    def compiled_rules(self) -> list[Any]:
        """:meth:`rule_specs` compiled (AlertRuleError names the first rule that does not compile)."""
        from rof_pipelines.core.alerts.expressions import compile_rule

        return [compile_rule(spec) for spec in self.rule_specs()]

    def route_list(self) -> list[Route]:
        return [route.route() for route in self.routes]


__all__ = ["SEVERITIES", "AlertingConfig", "ChannelConfig", "CustomRule", "RouteConfig"]
