"""The error taxonomy: one module holds every exception class, tables map driver errors, and every
error that passes a breaker knows its service and operation."""

import ast
from pathlib import Path

import pytest

import rof_pipelines
import rof_pipelines.errors as errors_module
from rof_pipelines.adapters.breakers import breaker_for, guarded_call
from rof_pipelines.errors import (
    OS_ERRORS,
    CircuitOpenError,
    ConflictError,
    DataValidationError,
    ErrorMap,
    ErrorRule,
    PermanentError,
    StoreUnavailableError,
)
from rof_pipelines.settings import CircuitBreakerConfig

PACKAGE = Path(rof_pipelines.__file__).parent
_PROJECT_ERRORS = {name for name, value in vars(errors_module).items() if isinstance(value, type)}


def test_every_exception_class_of_the_package_is_defined_in_errors_py():
    """One place to look up what can go wrong (private control-flow signals excepted)."""
    elsewhere = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {getattr(base, "id", getattr(base, "attr", "")) for base in node.bases}
                if any(name.endswith(("Error", "Exception")) or name in _PROJECT_ERRORS for name in bases):
                    elsewhere.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert elsewhere == []


def test_error_map_first_matching_rule_wins_and_names_the_service():
    table = ErrorMap(
        "demo",
        [
            ErrorRule((FileNotFoundError,), PermanentError, hint="check the path"),
            ErrorRule((OSError,), StoreUnavailableError),
            ErrorRule(lambda exc: "bad row" in str(exc), DataValidationError),
        ],
    )
    missing = table.translate(FileNotFoundError("gone"), service="files", label="store x", operation="read")
    assert type(missing) is PermanentError and "check the path" in str(missing)
    assert (missing.service, missing.operation) == ("files", "read")
    assert (
        type(table.translate(ConnectionResetError("reset"), service="s", label="l")) is StoreUnavailableError
    )
    assert type(table.translate(ValueError("bad row 3"), service="s", label="l")) is DataValidationError
    assert type(table.translate(KeyError("x"), service="s", label="l")) is PermanentError
    assert table.table()[-1] == ("anything else", "PermanentError", "")


def test_error_map_keeps_passwords_out_of_the_message():
    error = OS_ERRORS.translate(
        ConnectionRefusedError("connect to postgres://u:Sup3rSecret@h failed"),
        service="postgres",
        label="postgres h:5432",
        secrets=["Sup3rSecret"],
    )
    assert "Sup3rSecret" not in str(error) and isinstance(error, StoreUnavailableError)


def test_guarded_call_tags_translated_and_project_errors_with_service_and_operation():
    config = CircuitBreakerConfig()
    translate = OS_ERRORS.translator(service="svc_a", label="svc a")

    def lost() -> None:
        raise ConnectionResetError("peer went away")

    with pytest.raises(StoreUnavailableError) as caught:
        guarded_call("svc_a", config, translate, lost, operation="write")
    assert (caught.value.service, caught.value.operation) == ("svc_a", "write")
    assert caught.value.retryable

    def conflict() -> None:
        raise ConflictError("someone wrote first")

    with pytest.raises(ConflictError) as caught:
        guarded_call("svc_a", config, translate, conflict)
    assert (caught.value.service, caught.value.operation) == ("svc_a", "conflict")


def test_an_open_circuit_says_which_service_and_operation_it_refused():
    config = CircuitBreakerConfig(fail_max=1)
    translate = OS_ERRORS.translator(service="svc_b", label="svc b")

    def down() -> None:
        raise TimeoutError("no answer")

    with pytest.raises(StoreUnavailableError):
        guarded_call("svc_b", config, translate, down, operation="read")
    assert breaker_for("svc_b").current_state == "open"
    with pytest.raises(CircuitOpenError) as caught:
        guarded_call("svc_b", config, translate, down, operation="read")
    assert (caught.value.service, caught.value.operation) == ("svc_b", "read")
    assert not isinstance(caught.value, PermanentError)
