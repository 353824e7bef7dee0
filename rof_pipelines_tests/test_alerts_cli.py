"""`rof alerts` against a real PostgreSQL state store and real local receivers: ``test CHANNEL`` says
what the receiver answered (or why it did not take the notice), ``rules`` lists the ready-made and
custom rules with their channels, ``list`` shows a firing alert with its deliveries after a sensor
tick, ``figures`` every kind of entity rules can read."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, instance_for_test
from typer.testing import CliRunner

from rof_pipelines.cli import app
from rof_pipelines.core.alerts.builtin import BUILTIN_RULES
from rof_pipelines.core.alerts.figures import FIGURES
from rof_pipelines_tests.alert_receivers import HttpReceiver
from rof_pipelines_tests.defs.test_alerts_sensor import AlertingHarness, run_flaky

pytestmark = pytest.mark.postgres

CUSTOM = {
    "name": "low_fitness",
    "each": "market",
    "expr": "ga_best_fitness < 0.5",
    "severity": "critical",
    "labels": {"team": "quant"},
}


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as server:
        yield server


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def harness(
    tmp_path: Path, instance: DagsterInstance, state_storage: dict[str, Any], receiver: HttpReceiver
) -> AlertingHarness:
    return AlertingHarness(
        tmp_path,
        instance,
        state_storage,
        {
            "custom": [CUSTOM],
            "channels": {
                "log": {"type": "log"},
                "hook": {"type": "webhook", "url": receiver.url + "/hook", "timeout": "2s"},
            },
            "routes": [
                {"channels": ["log"]},
                {"channels": ["hook"], "rules": ["run_failed"]},
            ],
        },
    )


def rof(harness: AlertingHarness, *args: str) -> Any:
    return CliRunner().invoke(app, ["alerts", *args], env={"ROF_CONFIG": str(harness.path)})


def test_alerts_test_prints_the_receivers_answer(harness: AlertingHarness, receiver: HttpReceiver) -> None:
    result = rof(harness, "test", "hook")
    assert result.exit_code == 0, result.output
    assert "hook (webhook): delivered; the receiver answered: 200 ok" in result.stdout
    (request,) = receiver.delivered
    assert request.json["event"] == "test" and request.json["rule"] == "channel_test"


def test_alerts_test_against_a_stopped_receiver_exits_1(
    harness: AlertingHarness, receiver: HttpReceiver
) -> None:
    receiver.stop()
    result = rof(harness, "test", "hook")
    assert result.exit_code == 1, result.output
    assert "hook: not delivered" in result.stderr and "Failed to establish a new connection" in result.stderr


def test_alerts_test_unknown_channel_exits_2_naming_the_configured_ones(harness: AlertingHarness) -> None:
    result = rof(harness, "test", "pager")
    assert result.exit_code == 2, result.output
    assert "no channel named 'pager'" in result.stderr and "configured: log, hook" in result.stderr


def test_alerts_rules_lists_ready_made_and_custom_rules_with_their_channels(harness: AlertingHarness) -> None:
    result = rof(harness, "rules", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in map(json.loads, result.stdout.splitlines())}
    assert set(rows) == set(BUILTIN_RULES) | {"low_fitness"}
    assert rows["run_failed"]["source"] == "ready-made" and rows["run_failed"]["channels"] == ["log", "hook"]
    assert rows["low_fitness"]["source"] == "custom" and rows["low_fitness"]["channels"] == ["log"]
    assert rows["low_fitness"]["expr"] == "ga_best_fitness < 0.5" and rows["low_fitness"]["each"] == "market"
    text = rof(harness, "rules")
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    custom = next(line for line in lines if line.startswith("low_fitness "))
    assert "custom" in custom and "critical" in custom and custom.endswith("-> log")
    ready = next(line for line in lines if line.startswith("run_failed "))
    assert "ready-made" in ready and ready.endswith("-> log, hook")


def test_alerts_list_shows_a_firing_alert_with_its_deliveries(
    harness: AlertingHarness, instance: DagsterInstance, receiver: HttpReceiver
) -> None:
    result = rof(harness, "list")
    assert result.exit_code == 0, result.output
    assert "no alerts firing or pending" in result.stdout

    run_flaky(instance)
    harness.tick()
    assert len(receiver.delivered) == 1

    result = rof(harness, "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    head = next(line for line in lines if "run_failed" in line)
    assert head.startswith("FIRING") and "critical" in head and "job=flaky" in head
    hook_line = next(line for line in lines if "-> hook" in line)
    assert "sent" in hook_line and "answered '200 ok'" in hook_line

    result = rof(harness, "list", "--json")
    assert result.exit_code == 0, result.output
    alerts = [json.loads(line) for line in result.stdout.splitlines()]
    (alert,) = [a for a in alerts if a["rule"] == "run_failed"]
    assert alert["status"] == "firing" and alert["labels"]["job"] == "flaky" and alert["notified"] is True
    by_channel = {d["channel"]: d for d in alert["deliveries"]}
    assert set(by_channel) == {"log", "hook"}
    assert by_channel["hook"]["status"] == "sent" and by_channel["hook"]["answer"] == "200 ok"
    assert by_channel["hook"]["attempts"] == 1 and by_channel["hook"]["event"] == "firing"


def test_alerts_figures_lists_every_kind(harness: AlertingHarness) -> None:
    result = rof(harness, "figures")
    assert result.exit_code == 0, result.output
    kinds = [line[:-1] for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert kinds == list(FIGURES)
    assert any(line.split()[:2] == ["ga_best_fitness", "double"] for line in result.stdout.splitlines())


def test_alerts_rules_after_a_refused_edit_shows_the_rules_in_force(harness: AlertingHarness) -> None:
    """As alerts_sensor does, the commands use the last valid config when an edit was refused."""
    assert harness.reload().startswith("applied ")  # config_reload_sensor keeps the last valid version
    broken = {**CUSTOM, "name": "broken_rule", "expr": "no_such_figure > 1"}
    harness.write({"custom": [CUSTOM, broken], "channels": {"log": {"type": "log"}}})
    assert harness.reload().startswith("REFUSED ")
    result = rof(harness, "rules", "--json")
    assert result.exit_code == 0, result.output
    names = {json.loads(line)["name"] for line in result.stdout.splitlines()}
    assert "low_fitness" in names and "broken_rule" not in names
    assert "last valid version (config.yaml.last-valid) is in force" in result.stderr
    assert "broken_rule" in result.stderr and "no_such_figure" in result.stderr
    result = rof(harness, "test", "hook")  # the channel of the version in force, not of the refused edit
    assert result.exit_code == 0, result.output
