"""The one metrics module: every metric prefixed by its component, bounded labels, documented, and
built nowhere else in the package."""

import ast
import re
from pathlib import Path

import pytest

from rof_pipelines.adapters import metrics
from rof_pipelines.adapters.breakers import guarded_call
from rof_pipelines.errors import OS_ERRORS, StoreUnavailableError
from rof_pipelines.settings import CircuitBreakerConfig

PACKAGE = Path(metrics.__file__).resolve().parents[1]
README = PACKAGE.parent / "README.md"


def _families() -> list:
    return list(metrics.REGISTRY.collect()) + list(metrics.RUN_REGISTRY.collect())


def test_every_family_has_a_prefix_a_type_help_bounded_labels_and_a_route():
    assert metrics.FAMILIES
    prefixes = {prefix for prefix in metrics.COMPONENT_PREFIXES}
    for name, family in metrics.FAMILIES.items():
        assert family.name == name and name.startswith(metrics.COMPONENT_PREFIXES), name
        assert family.type in {"gauge", "counter"} and family.help, name
        assert family.route in metrics.ROUTES, name
        assert set(family.labels) <= metrics.BOUNDED_LABELS, name
        assert len(set(family.labels)) == len(family.labels), name
        assert (family.type == "counter") == name.endswith("_total"), name
        assert set(metrics.ROUTE_ADDED_LABELS[family.route]) <= set(family.labels), name
    # every component has families
    assert {p for p in prefixes if any(n.startswith(p) for n in metrics.FAMILIES)} == prefixes


def test_the_metric_objects_are_the_tables_process_and_pushgateway_families():
    exposed = {family.name + ("_total" if family.type == "counter" else ""): family for family in _families()}
    recorded = {
        name for name, f in metrics.FAMILIES.items() if f.route in ("process", "sensor", "pushgateway")
    }
    assert set(exposed) == recorded
    for value in vars(metrics).values():
        if hasattr(value, "_labelnames"):
            name = value._name + ("_total" if value._type == "counter" else "")
            assert tuple(value._labelnames) == metrics.FAMILIES[name].recorded_labels, name


def test_the_docstring_table_lists_the_families_with_type_route_and_labels():
    documented = {
        name: (type_, route, tuple(x.strip() for x in labels.split(",")) if labels != "(none)" else ())
        for name, type_, route, labels in re.findall(
            r"^``(\w+)``\s+(gauge|counter)\s+(\w+)\s+(.+?)\s*$", metrics.__doc__ or "", re.M
        )
    }
    assert documented == {n: (f.type, f.route, f.labels) for n, f in metrics.FAMILIES.items()}


def test_the_readme_table_is_the_families_table():
    assert metrics.readme_table() in README.read_text()


def test_scrape_time_families_take_their_labels_from_the_table():
    family = metrics.FAMILIES["ga_generation"].build([({"market": "binance:TONUSDT"}, 3)])
    [sample] = family.samples
    assert (family.name, sample.labels, sample.value) == ("ga_generation", {"market": "binance:TONUSDT"}, 3.0)
    counter = metrics.FAMILIES["alerts_fired_total"].build([(("config_refused", "log"), 2)])
    assert counter.name == "alerts_fired" and counter.samples[0].name == "alerts_fired_total"


def test_the_process_collector_adds_the_process_label():
    metrics.BREAKER_STATE.labels("label_probe").set(2)
    text = metrics.render(metrics.new_registry([metrics.WithLabels(metrics.REGISTRY, {"process": "ops"})]))[0]
    assert b'circuit_breaker_state{process="ops",service="label_probe"} 2.0' in text


# What builds a metric or a metric family; a registry or the exposition (the ops app serving /metrics)
# may be imported elsewhere, a metric class may not.
METRIC_CLASSES = re.compile(r"^(Gauge|Histogram|Summary|Counter|Info|Enum|\w*MetricFamily|Metric)$")


def test_no_metric_is_built_outside_the_metrics_module():
    own = Path(metrics.__file__).resolve()
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.resolve() == own:
            continue
        where = path.relative_to(PACKAGE)
        text = path.read_text()
        tree = ast.parse(text)
        foreign = set()  # collections.Counter is not a metric: names imported from elsewhere are fine
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                from_prometheus = (node.module or "").startswith("prometheus_client")
                for alias in node.names:
                    if from_prometheus and (METRIC_CLASSES.match(alias.name) or alias.name == "core"):
                        offenders.append(f"{where}: imports {alias.name} from {node.module}")
                    elif not from_prometheus:
                        foreign.add(alias.asname or alias.name)
            if isinstance(node, ast.Import) and any(
                a.name.startswith("prometheus_client") for a in node.names
            ):
                offenders.append(f"{where}: imports the prometheus_client module")
        for match in re.finditer(r"(?<![\w.])(Gauge|Histogram|Summary|Counter|\w*MetricFamily)\(", text):
            if match.group(1) not in foreign:
                line = text[: match.start()].count("\n") + 1
                offenders.append(f"{where}:{line}: {match.group(1)}(")
    assert offenders == []


def test_a_breaker_failure_is_counted_under_circuit_breaker():
    service = "metrics_probe"
    before = metrics.sample_value("circuit_breaker_failures_total", {"service": service})

    def down() -> None:
        raise ConnectionRefusedError("refused")

    translate = OS_ERRORS.translator(service=service, label="probe")
    with pytest.raises(StoreUnavailableError):
        guarded_call(service, CircuitBreakerConfig(fail_max=10), translate, down, operation="read")
    assert metrics.sample_value("circuit_breaker_failures_total", {"service": service}) == before + 1
    assert metrics.sample_value("circuit_breaker_state", {"service": service}) == 0


def test_a_breaker_opening_is_a_transition():
    service = "transition_probe"
    before = metrics.sample_value("circuit_breaker_transitions_total", {"service": service, "state": "open"})

    def down() -> None:
        raise ConnectionRefusedError("refused")

    translate = OS_ERRORS.translator(service=service, label="probe")
    for _ in range(2):
        with pytest.raises(StoreUnavailableError):
            guarded_call(service, CircuitBreakerConfig(fail_max=2), translate, down, operation="read")
    after = metrics.sample_value("circuit_breaker_transitions_total", {"service": service, "state": "open"})
    assert after == before + 1
    assert metrics.sample_value("circuit_breaker_state", {"service": service}) == 2
