"""The deployment files: the Grafana dashboard (deploy/grafana/dashboards/rof.json) and its
provisioning, checked structurally (Grafana is not installable here), every PromQL expression of
the dashboard executed by a real Prometheus over its HTTP API, and ``promtool check config`` on
deploy/prometheus/prometheus.yml."""

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from rof_pipelines.adapters import metrics
from rof_pipelines.settings import PROJECT_ROOT
from rof_pipelines_tests.ops.servers import (
    PROMTOOL,
    Prometheus,
    Pushgateway,
    require_binary,
    temp_root,
    wait_until,
)

DEPLOY = PROJECT_ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "rof.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "rof.yml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"

# What Grafana substitutes before it sends a query (the "All" value of a multi-value variable is
# the variable's allValue, ".*" here).
GRAFANA_BUILTINS = {"$__rate_interval": "1m", "$__interval": "5s", "$__range": "1h"}
_VAR = re.compile(r"\$\{?(\w+)\}?")
_METRIC = re.compile(r"\b((?:" + "|".join(metrics.COMPONENT_PREFIXES) + r")[a-z0-9_]*)")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict) -> list[dict]:
    out = []
    for panel in dash["panels"]:
        out.append(panel)
        out += panel.get("panels", [])
    return out


def expressions(dash: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every query target."""
    return [(p["title"], t["expr"]) for p in panels(dash) for t in p.get("targets", [])]


def variable_queries(dash: dict) -> list[tuple[str, str]]:
    return [(v["name"], v["query"]["query"]) for v in dash["templating"]["list"] if v["type"] == "query"]


def substitute(expr: str, dash: dict) -> str:
    for name, value in GRAFANA_BUILTINS.items():
        expr = expr.replace(name, value)
    for variable in dash["templating"]["list"]:
        expr = re.sub(r"\$\{?" + variable["name"] + r"\}?", variable.get("allValue", ".*"), expr)
    return expr


# --- structure -----------------------------------------------------------------------------------


def test_the_dashboard_is_well_formed_grafana_json():
    dash = dashboard()
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    datasource_uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for panel in panels(dash):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "bargauge", "table", "gauge"}, panel["type"]
        assert panel["datasource"]["uid"] == datasource_uid, panel["title"]
        targets = panel["targets"]
        assert targets, f"panel {panel['title']!r} has no query"
        assert len({t["refId"] for t in targets}) == len(targets)
        assert all(t["expr"].strip() and t["datasource"]["uid"] == datasource_uid for t in targets)
    defined = {v["name"] for v in dash["templating"]["list"]}
    for title, expr in expressions(dash):
        used = {m for m in _VAR.findall(expr) if not m.startswith("__")}
        assert used <= defined, f"{title}: undefined variables {used - defined}"


def test_every_metric_family_has_a_panel_and_every_name_is_a_family():
    """A panel per family: each family of adapters/metrics.py is queried somewhere, and the
    dashboard names no metric that does not exist (a typo would show an empty panel forever)."""
    named = {name for _title, expr in expressions(dashboard()) for name in _METRIC.findall(expr)}
    assert named - set(metrics.FAMILIES) == set(), "unknown metric names in the dashboard"
    assert set(metrics.FAMILIES) - named == set(), "families without a panel"
    components = {p["title"].split(" (")[0] for p in dashboard()["panels"] if p["type"] == "row"}
    for wanted in ("Worker pools", "GA progress", "Agents", "Circuit breakers", "Alerts"):
        assert wanted in components
    assert any(c.startswith("Data") for c in components)


def test_the_provisioning_points_grafana_at_the_dashboard_and_prometheus():
    providers = yaml.safe_load(PROVIDERS.read_text())["providers"]
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"]

    def mounts(service: str) -> dict[str, str]:
        return dict(volume.split(":")[:2] for volume in compose[service]["volumes"])

    assert mounts("grafana")["./deploy/grafana/dashboards"] == providers[0]["options"]["path"]
    assert mounts("grafana")["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts("prometheus")["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert compose["ops"]["command"][:3] == ["rof", "ops", "serve"]
    targets = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"]}
    assert targets["rof_ops"]["static_configs"][0]["targets"] == ["ops:8080"]
    assert targets["pushgateway"]["honor_labels"] is True


def test_promtool_accepts_the_prometheus_config():
    promtool = require_binary(PROMTOOL, "prometheus (promtool)")
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_YML)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- every expression, executed ----------------------------------------------------------------------


def synthetic_exposition() -> bytes:
    """One sample of every family with its documented labels, in the text format (what the
    Pushgateway takes): every panel then has data to evaluate, so a wrong label or an expression
    that only fails on data (many-to-many matching, ...) shows up."""
    registry = metrics.new_registry()
    values = {
        "pool": "ab_optimizer",
        "daemon": "SENSOR",
        "sensor": "alerts_sensor",
        "severity": "critical",
        "market": "binance:TONUSDT",
        "service": "state_store",
        "process": "run",
        "status": "success",
        "rule": "config_refused",
        "channel": "log",
        "queue": "tasks",
        "kind": "task",
        "state": "open",
        "asset": "ga_population",
    }

    class All:
        def collect(self):  # type: ignore[no-untyped-def]
            for family in metrics.FAMILIES.values():
                quantiles = metrics.RUN_WAIT_QUANTILES if "quantile" in family.labels else ("",)
                yield family.build([({**values, "quantile": q}, 1.0 + i) for i, q in enumerate(quantiles)])

    registry.register(All())
    return metrics.render(registry)[0]


def push(url: str, job: str, body: bytes) -> None:
    request = urllib.request.Request(f"{url}/metrics/job/{job}", data=body, method="PUT")
    request.add_header("Content-Type", "text/plain; version=0.0.4")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 202)


@pytest.fixture(scope="module")
def prometheus_with_data(tmp_path_factory):
    """Prometheus scraping a Pushgateway (every family pushed once) and the ops service (OA's app
    with the real collectors over an ephemeral Dagster instance and the in-memory state store)."""
    from dagster import DagsterInstance

    from rof_pipelines.adapters.state_store.memory import InMemoryStateStore
    from rof_pipelines.ops.app import build_app, running
    from rof_pipelines.ops.collectors import collectors
    from rof_pipelines.settings import load_settings

    data_dir = tmp_path_factory.mktemp("dashboard") / "data"
    settings = load_settings(environ={}, overrides={"storage": {"data_dir": str(data_dir)}})
    instance = DagsterInstance.ephemeral()
    with temp_root("rof-dash-") as root:
        gateway = Pushgateway(root)
        prom = None
        try:
            push(gateway.url, "dashboard_test", synthetic_exposition())
            app = build_app(
                lambda: settings,
                collectors=collectors(lambda: settings, instance=instance, store=InMemoryStateStore()),
            )
            with running(app) as ops_url:
                ops_address = ops_url.removeprefix("http://")
                prom = Prometheus(
                    root,
                    {
                        "rof_ops": (ops_address, "/metrics", False),
                        "pushgateway": (f"127.0.0.1:{gateway.port}", "/metrics", True),
                    },
                )
                wait_until(lambda: prom.targets_up(["rof_ops", "pushgateway"]), 30, what="both targets up")
                # rate() and increase() need two samples of a series: a few scrapes.
                wait_until(
                    lambda: prom.query("count_over_time(ga_best_fitness[1m]) >= 3"), 30, what="three scrapes"
                )
                yield prom
        finally:
            if prom is not None:
                prom.stop()
            gateway.stop()
            instance.dispose()


def test_every_dashboard_expression_runs_on_prometheus(prometheus_with_data):
    prom = prometheus_with_data
    dash = dashboard()
    empty = []
    for title, expr in expressions(dash):
        query = substitute(expr, dash)
        result = prom.query(query)  # a PromQL error raises, naming the query and Prometheus's error
        if not result:
            empty.append(f"{title}: {query}")
    assert not empty, "expressions without data although every family has a sample:\n" + "\n".join(empty)
    for name, query in variable_queries(dash):
        match = re.fullmatch(r"label_values\((?:(?P<metric>[^,]+),\s*)?(?P<label>\w+)\)", query)
        assert match, f"variable {name}: {query}"
        if match["metric"]:
            values = [
                s["metric"][match["label"]]
                for s in prom.query(f"group by ({match['label']}) ({match['metric']})")
            ]
        else:
            values = prom.api(f"label/{match['label']}/values")
        assert values, f"variable {name} has no values: {query}"


def test_the_ops_service_scrape_is_seen_by_prometheus(prometheus_with_data):
    up = {s["metric"]["job"]: s["value"][1] for s in prometheus_with_data.query("up")}
    assert up == {"rof_ops": "1", "pushgateway": "1"}
    instance_up = prometheus_with_data.query('workerpool_instance_up{job="rof_ops"}')
    assert [s["value"][1] for s in instance_up] == ["1"]


def test_the_dashboard_path_is_what_compose_mounts():
    assert Path(DASHBOARD).parent.name == "dashboards" and DASHBOARD.is_file()
