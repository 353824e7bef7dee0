"""deploy/prometheus/alerts.yml, the ready-made rules as PromQL for Alertmanager users: promtool
(Debian's, the real binary) checks the rules and the config that loads them and runs the unit tests
of alerts_test.yml; the unit tests are shown to bite (a rule made wrong fails them); and the file is
held to the project: a counterpart for every ready-made rule with its default threshold and severity,
and only metric names and labels the exporter has."""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from rof_pipelines.adapters import metrics
from rof_pipelines.alerting_settings import BuiltinRules
from rof_pipelines.settings import PROJECT_ROOT
from rof_pipelines_tests.ops.servers import PROMTOOL, require_binary

PROMETHEUS_DIR = PROJECT_ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
PROMETHEUS_YML = PROMETHEUS_DIR / "prometheus.yml"

# Ready-made rules with no PromQL counterpart (alerts.yml's header says why).
NOT_EXPRESSIBLE = {"promotion": "no metric counts A/B promotions"}
ACRONYMS = {"ga": "GA"}
# Labels every scraped series has besides its family's own.
TARGET_LABELS = {"job", "instance"}


def alert_name(rule: str) -> str:
    """run_failed -> RofRunFailed, ga_regression -> RofGARegression."""
    return "Rof" + "".join(ACRONYMS.get(part, part.capitalize()) for part in rule.split("_"))


def alert_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    assert [g["name"] for g in groups] == ["rof_pipelines"]
    return {rule["alert"]: rule for rule in groups[0]["rules"]}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = require_binary(PROMTOOL, "prometheus (promtool)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


# --- promtool ----------------------------------------------------------------------------------------


def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_config_check_loads_the_rules_relative_to_the_config(tmp_path: Path):
    """rule_files: [alerts.yml] resolves against prometheus.yml's directory, whatever the cwd."""
    assert yaml.safe_load(PROMETHEUS_YML.read_text())["rule_files"] == ["alerts.yml"]
    result = promtool("check", "config", str(PROMETHEUS_YML), cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "SUCCESS: 1 rule files found" in out
    assert f"SUCCESS: {len(alert_rules())} rules found" in out


def test_promtool_unit_tests_pass(tmp_path: Path):
    result = promtool("test", "rules", str(ALERTS_TEST), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_has_a_firing_and_a_quiet_unit_test():
    """Each alert is expected to fire somewhere and expected not to somewhere (healthy series or
    before its ``for:``): a rule without both is not tested."""
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert set(alert_rules()) - firing == set(), "rules never expected to fire"
    assert set(alert_rules()) - quiet == set(), "rules never expected to stay quiet"


# A rule made wrong in each way the file could be wrong: every one must fail the unit tests.
MUTATIONS = [
    ("RofRunFailed", 'status="failure"', 'status="success"'),
    ("RofSensorFailing", ">= 3", ">= 2"),
    ("RofBreakerOpen", "for: 5m", "for: 4m"),
    ("RofRunQueueWaiting", "> 600", "> 1000"),
    ("RofDaemonHeartbeatStale", "> 120", ">= 110"),
    ("RofStaleData", "> 7200", ">= 7200"),
    ("RofGARegression", "- 0.25", "- 0.15"),
    ("RofDrawdown", "> 0.2", ">= 0.2"),
    ("RofConfigRefused", "\n          or\n", "\n          and\n"),
    ("RofOpsDown", "for: 1m", "for: 0m"),
    ("RofPushgatewayDown", "severity: warning", "severity: critical"),
    ("RofInstanceDown", "for: 2m", "for: 3m"),
    ("RofStateStoreDown", "cannot read the state store", "cannot reach the state store"),
    ("RofAlertDeliveriesFailing", "[15m]", "[1m]"),
]


def test_the_mutations_cover_every_rule():
    assert {alert for alert, _old, _new in MUTATIONS} == set(alert_rules())


@pytest.mark.parametrize(("alert", "old", "new"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_a_rule_made_wrong_fails_the_unit_tests(tmp_path: Path, alert: str, old: str, new: str):
    text = ALERTS.read_text()
    start = text.index(f"- alert: {alert}\n")
    end = text.find("- alert: ", start + 1)
    end = len(text) if end < 0 else end
    block = text[start:end]
    assert block.count(old) == 1, f"{alert}: {old!r} not once in its rule"
    (tmp_path / "alerts.yml").write_text(text[:start] + block.replace(old, new) + text[end:])
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    assert promtool("check", "rules", str(tmp_path / "alerts.yml")).returncode == 0  # still valid PromQL
    result = promtool("test", "rules", str(tmp_path / "alerts_test.yml"), cwd=tmp_path)
    assert result.returncode != 0, result.stdout
    assert f"alertname: {alert}," in result.stdout + result.stderr


# --- held to the project -----------------------------------------------------------------------------


def test_every_ready_made_rule_has_its_alert():
    rules = alert_rules()
    header = ALERTS.read_text().split("groups:")[0]
    for name in BuiltinRules.model_fields:
        if name in NOT_EXPRESSIBLE:
            assert alert_name(name) not in rules
            assert alert_name(name) in header, f"{name}: say in the header why it has no alert"
            continue
        assert alert_name(name) in rules, f"ready-made rule {name} has no {alert_name(name)}"
        assert rules[alert_name(name)]["labels"]["rule"] == name
    expected = {
        "run_failed",
        "sensor_failing",
        "breaker_open",
        "run_queue_waiting",
        "daemon_heartbeat_stale",
        "stale_data",
        "ga_regression",
        "drawdown",
        "config_refused",
    }
    assert expected <= {r["labels"].get("rule") for r in rules.values()}
    assert alert_name("ga_regression") == "RofGARegression"


# Alerts whose value is a state (2 = open, 0 = down) say so in words instead of quoting the number.
STATE_ALERTS = {"RofBreakerOpen", "RofOpsDown", "RofPushgatewayDown", "RofInstanceDown", "RofStateStoreDown"}


def test_every_alert_is_complete():
    for name, rule in alert_rules().items():
        assert "for" in rule, name
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description"}, name
        if name in STATE_ALERTS:
            assert "{{ $labels." in annotations["description"], f"{name}: the description names no series"
        else:
            assert "{{ $value" in annotations["description"], f"{name}: the description quotes no value"


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", duration))


def test_thresholds_are_the_ready_made_defaults():
    """The numbers in the PromQL are ``alerting.rules``' defaults, so a changed default shows here."""
    d = BuiltinRules()
    rules = alert_rules()

    def expr(rule: str) -> str:
        return " ".join(rules[alert_name(rule)]["expr"].split())

    assert f">= {d.sensor_failing.consecutive}" in expr("sensor_failing")
    assert _seconds(rules["RofBreakerOpen"]["for"]) == d.breaker_open.longer_than.total_seconds()
    assert f"> {d.run_queue_waiting.longer_than.total_seconds():g}" in expr("run_queue_waiting")
    assert f"> {d.daemon_heartbeat_stale.older_than.total_seconds():g}" in expr("daemon_heartbeat_stale")
    assert f"> {d.stale_data.after.total_seconds():g}" in expr("stale_data")
    assert f"- {d.ga_regression.by:g}" in expr("ga_regression")
    assert f"> {d.drawdown.beyond:g}" in expr("drawdown")
    assert expr("run_failed") == 'increase(workerpool_runs_finished_total{status="failure"}[10m]) > 0'


def test_severities_are_the_ready_made_rules():
    from rof_pipelines.core.alerts.builtin import BUILTIN_RULES

    rules = alert_rules()
    for name, builtin in BUILTIN_RULES.items():
        if name not in NOT_EXPRESSIBLE:
            assert rules[alert_name(name)]["labels"]["severity"] == builtin.severity, name


_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not a function, keyword,
    label matcher, range, grouping clause or number."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    found = re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text)
    return {m.group(1) for m in found if m.group(2) is None and m.group(1).lower() not in _KEYWORDS}


def test_the_metric_name_extractor():
    expr = 'max without (status) (rate(foo_total{a="b c",d=~"x"}[5m])) > on(x) group_left(y) bar - 1e3 or up'
    assert metric_names(expr) == {"foo_total", "bar", "up"}
    assert metric_names('max_over_time((timestamp(delta(g{s="r"}[2m]) > 0))[6h:1m])') == {"g"}


def test_every_metric_and_label_is_exported():
    """Only families of adapters/metrics.py (and Prometheus' own ``up``), and in the annotations
    only labels those families (or the scrape target) have."""
    used: dict[str, set[str]] = {name: metric_names(rule["expr"]) for name, rule in alert_rules().items()}
    assert all(used.values()), "an alert whose expression selects no metric"
    missing = {n for names in used.values() for n in names} - set(metrics.FAMILIES) - {"up"}
    assert missing == set(), f"not in metrics.FAMILIES: {sorted(missing)}"
    for name, rule in alert_rules().items():
        labels = set(TARGET_LABELS)
        for family in used[name] - {"up"}:
            labels |= set(metrics.FAMILIES[family].labels)
        text = " ".join(rule["annotations"].values())
        named = set(re.findall(r"\$labels\.(\w+)", text))
        assert named <= labels, f"{name}: annotations name labels its series lack: {named - labels}"
        matched = set(re.findall(r"(\w+)\s*=~?\s*\"", rule["expr"]))
        assert matched <= labels, f"{name}: the expression matches labels its series lack"
