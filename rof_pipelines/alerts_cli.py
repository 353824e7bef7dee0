"""``rof alerts``: what the alerting did (``list``), what it checks (``rules``, ``figures``), and whether
a channel's receiver answers (``test``)."""

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from rof_pipelines.core.market import duration_text
from rof_pipelines.errors import ConfigError, RofError
from rof_pipelines.settings import Settings, config_path_from_env, load_settings

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
alerts_app = typer.Typer(help="Alerting: alerts, rules, channels.", no_args_is_help=True)


def _settings() -> Settings:
    """The config in force, as alerts_sensor sees it: after a refused edit of config.yaml, its last
    valid version (said on stderr), so the commands show the rules and channels actually used."""
    from rof_pipelines.adapters.config_versions import last_valid_path

    try:
        return load_settings()
    except ConfigError as exc:
        fallback = last_valid_path(config_path_from_env())
        if not fallback.is_file():
            raise
        typer.secho(
            f"warning: the config file is refused, its last valid version ({fallback.name}) is in force: {exc}",
            fg=typer.colors.YELLOW,
            err=True,
        )
        return load_settings(fallback)


def _store() -> Any:
    from rof_pipelines.adapters.embedded_pg import ensure_state_store
    from rof_pipelines.adapters.state_store import StateStore, ensure_migrated

    settings = _settings()
    ensure_state_store(settings.state_storage)
    store = StateStore(settings.state_storage, settings.system_setup.circuit_breaker)
    ensure_migrated(store, settings)
    return store


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


@alerts_app.command("list")
def alerts_list(
    show_all: Annotated[bool, typer.Option("--all", help="resolved alerts too")] = False,
    limit: int = 50,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Alerts firing and pending (with --all, resolved too), newest first, with each notice's deliveries
    per channel: sent (and what the receiver answered), pending (attempts, next try, last error) or
    given up."""
    store = _store()
    try:
        states = [s for s in store.alerts.states() if show_all or s.status != "resolved"]
        deliveries = store.alerts.deliveries(limit=1000)
    finally:
        store.dispose()
    states.sort(key=lambda s: (s.status == "resolved", -(s.fired_at or s.active_since or _EPOCH).timestamp()))
    by_alert: dict[str, list[Any]] = {}
    for delivery in deliveries:
        by_alert.setdefault(delivery.notice.fingerprint, []).append(delivery)
    for state in states[:limit]:
        rows = by_alert.get(state.fingerprint, [])
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "rule": state.rule,
                        "labels": dict(state.labels),
                        "severity": state.severity,
                        "status": state.status,
                        "active_since": state.active_since,
                        "fired_at": state.fired_at,
                        "resolved_at": state.resolved_at,
                        "notified": state.notified,
                        "summary": state.summary,
                        "deliveries": [
                            {
                                "event": d.notice.event,
                                "channel": d.channel,
                                "status": d.status,
                                "attempts": d.attempts,
                                "next_attempt_at": d.next_attempt_at,
                                "last_error": d.last_error,
                                "answer": d.answer,
                                "sent_at": d.sent_at,
                            }
                            for d in rows
                        ],
                    },
                    default=str,
                )
            )
            continue
        typer.echo(
            f"{state.status.upper():<8} {state.severity:<8} {state.rule} {{{_labels(dict(state.labels))}}} "
            f"since {_when(state.fired_at or state.active_since)}"
            + (f", resolved {_when(state.resolved_at)}" if state.resolved_at else "")
            + ("" if state.notified or state.status == "pending" else " (not notified: cooldown)")
        )
        typer.echo(f"    {state.summary}")
        for d in rows:
            detail = (
                f"answered {d.answer!r} at {_when(d.sent_at)}"
                if d.status == "sent"
                else f"attempts {d.attempts}, next {_when(d.next_attempt_at)}, last error: {d.last_error or '-'}"
            )
            typer.echo(f"    {d.notice.event:<8} -> {d.channel:<12} {d.status:<7} {detail}")
    if not states:
        typer.echo("no alerts" + ("" if show_all else " firing or pending (--all shows resolved ones)"))


@alerts_app.command("rules")
def alerts_rules(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every rule in force (ready-made and custom): what it evaluates, how long it must hold, its
    severity and cooldown, and the channels its notices go to."""
    from rof_pipelines.core.alerts.engine import route
    from rof_pipelines.core.alerts.model import Notice

    alerting = _settings().alerting
    channels = list(alerting.channels)
    enabled = {spec.name for spec in alerting.rule_specs()}
    disabled = [name for name, rule in alerting.rules if not rule.enabled]
    for spec in alerting.rule_specs():
        probe = Notice("", "firing", spec.name, "", dict(spec.labels), spec.severity, "", _EPOCH)
        routed = route(probe, alerting.route_list(), channels)
        row = {
            "name": spec.name,
            "source": "ready-made" if spec.builtin else "custom",
            "each": spec.each,
            "expr": spec.expr,
            "for": duration_text_s(spec.for_s),
            "severity": spec.severity,
            "cooldown": duration_text_s(spec.cooldown_s),
            "notify_resolved": spec.notify_resolved,
            "labels": dict(spec.labels),
            "message": spec.message,
            "channels": routed,
        }
        if as_json:
            typer.echo(json.dumps(row))
            continue
        typer.echo(
            f"{spec.name:<24} {row['source']:<10} each {spec.each:<9} {spec.severity:<8} "
            f"for {row['for']:<6} cooldown {row['cooldown']:<6} -> {', '.join(routed) or 'no channel'}"
        )
        typer.echo(f"    {spec.expr}")
    if disabled and not as_json:
        typer.echo(f"disabled: {', '.join(disabled)}")
    if not enabled and not as_json:
        typer.echo("no rule is enabled")
    if not alerting.enabled and not as_json:
        typer.echo("alerting is disabled (alerting.enabled: false): alerts_sensor evaluates nothing")


def duration_text_s(seconds: float) -> str:
    return duration_text(timedelta(seconds=seconds)) if seconds else "0s"


@alerts_app.command("figures")
def alerts_figures() -> None:
    """The figures rules may read, per kind (`each:`), with their types."""
    from rof_pipelines.core.alerts.figures import FIGURES

    for kind, figures in FIGURES.items():
        typer.echo(f"{kind}:")
        for name, (cel_type, meaning) in figures.items():
            typer.echo(f"    {name:<38} {cel_type:<7} {meaning}")


@alerts_app.command("test")
def alerts_test(
    channel: Annotated[str, typer.Argument(help="a channel name under alerting.channels")],
) -> None:
    """Send a test notification through one channel and print what its receiver answered (exit 1 when
    it did not take it)."""
    from rof_pipelines.adapters.alerts.channels import build_channel, test_notice
    from rof_pipelines.core.alerts.model import delivery_id

    settings = _settings()
    channels = settings.alerting.channels
    if channel not in channels:
        typer.secho(
            f"error: no channel named {channel!r} under alerting.channels "
            f"(configured: {', '.join(channels) or 'none'})",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2)
    sender = build_channel(channel, channels[channel], settings.system_setup.circuit_breaker)
    notice = test_notice(datetime.now(UTC))
    try:
        answer = sender.send(notice, delivery_id(notice.notice_id, channel))
    except RofError as exc:
        typer.secho(f"{channel}: not delivered: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{channel} ({channels[channel].type}): delivered; the receiver answered: {answer}")
