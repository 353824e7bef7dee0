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
# Labels with a handful of values each; a run id, message id or market would grow without bound.
BOUNDED_LABELS = {"service", "queue", "kind", "status"}


def _families() -> list:
    return list(metrics.REGISTRY.collect())


def test_every_metric_name_starts_with_a_component_prefix():
    names = [family.name for family in _families()]
    assert names, "the registry holds the project's metrics"
    for name in names:
        assert name.startswith(metrics.COMPONENT_PREFIXES), name


def test_labels_are_bounded():
    for family in _families():
        for sample in family.samples:
            assert set(sample.labels) <= BOUNDED_LABELS, (family.name, sample.labels)
    for value in vars(metrics).values():
        if hasattr(value, "_labelnames"):
            assert set(value._labelnames) <= BOUNDED_LABELS, value


def test_the_docstring_table_lists_exactly_the_registered_metrics():
    documented = set(re.findall(r"^``(\w+)``\s+(?:gauge|counter|histogram)", metrics.__doc__ or "", re.M))
    exposed = {family.name + ("_total" if family.type == "counter" else "") for family in _families()}
    assert documented == exposed


def test_no_metric_is_built_outside_the_metrics_module():
    own = Path(metrics.__file__).resolve()
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.resolve() == own:
            continue
        text = path.read_text()
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prometheus_client"):
                offenders.append(f"{path.relative_to(PACKAGE)}: imports prometheus_client")
            if isinstance(node, ast.Import) and any(
                a.name.startswith("prometheus_client") for a in node.names
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}: imports prometheus_client")
        for match in re.finditer(r"\b(Gauge|Histogram|Summary|Counter)\(", text):
            line = text[: match.start()].count("\n") + 1
            offenders.append(f"{path.relative_to(PACKAGE)}:{line}: {match.group(1)}(")
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
