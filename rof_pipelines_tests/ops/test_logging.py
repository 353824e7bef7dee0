"""system_setup.log_level and log_format in every entry point (a CLI command, a Dagster run's
console logger and the project's module loggers inside it), JSON lines, and no secret in any line."""

import io
import json
import logging
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from rof_pipelines.adapters.logs import (
    JsonFormatter,
    ScrubbingFormatter,
    configure_from_settings,
    configure_logging,
    settings_secrets,
)
from rof_pipelines.core.redaction import all_spellings

PLANTED = "Planted-Pa55/w@rd"
BROKER_PASSWORD = "br0ker-Secret"


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def secret_settings(make_settings):  # type: ignore[no-untyped-def]
    def build(**system_setup: str):  # type: ignore[no-untyped-def]
        return make_settings(
            {
                "system_setup": system_setup,
                "state_storage": {"db_password": PLANTED},
                "storage": {"rabbitmq": {"url": f"amqp://guest:{BROKER_PASSWORD}@127.0.0.1:5672/"}},
            }
        )

    return build


def _log_everything(name: str = "rof_pipelines.test_logging") -> None:
    log = logging.getLogger(name)
    log.debug("debug line")
    log.info("info line")
    log.warning("connecting with password %s to %s", PLANTED, f"amqp://guest:{BROKER_PASSWORD}@host/")
    try:
        raise RuntimeError(f"driver said: password={PLANTED!r}")
    except RuntimeError:
        log.exception("it failed")
    log.error("escaped: %s", json.dumps({"pw": PLANTED}), extra={"detail": f"token {PLANTED}"})


def _assert_no_secret(text: str) -> None:
    for spelling in all_spellings([PLANTED, BROKER_PASSWORD]):
        assert spelling not in text, spelling


def test_settings_secrets_lists_every_password(secret_settings) -> None:  # type: ignore[no-untyped-def]
    secrets = settings_secrets(secret_settings())
    assert PLANTED in secrets
    assert any(BROKER_PASSWORD in s for s in secrets)


@pytest.mark.parametrize("level, shown", [("debug", True), ("info", False)])
def test_log_level_from_config(secret_settings, level: str, shown: bool) -> None:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    configure_from_settings(secret_settings(log_level=level), stream=stream)
    _log_everything()
    out = stream.getvalue()
    assert ("debug line" in out) is shown
    assert "info line" in out
    _assert_no_secret(out)


def test_json_lines_parse_and_are_scrubbed(secret_settings) -> None:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    handler = configure_from_settings(secret_settings(log_level="debug", log_format="json"), stream=stream)
    assert isinstance(handler.formatter, JsonFormatter)
    _log_everything()
    out = stream.getvalue()
    _assert_no_secret(out)
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["level"] for line in lines] == ["debug", "info", "warning", "error", "error"]
    for line in lines:
        assert line["logger"] == "rof_pipelines.test_logging"
        assert {"ts", "level", "logger", "message", "process"} <= set(line)
    assert "***" in lines[2]["message"] and "amqp://guest:***@host/" in lines[2]["message"]
    assert "RuntimeError" in lines[3]["exc_info"] and "***" in lines[3]["exc_info"]
    assert lines[4]["detail"] == "token ***"


def test_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "text", stream=first)
    configure_logging("warning", "json", stream=second)
    logging.getLogger("rof_pipelines.x").warning("once")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["message"] == "once"
    assert sum(getattr(h, "_rof_handler", False) for h in logging.getLogger().handlers) == 1


def test_text_formatter_scrubs_tracebacks() -> None:
    formatter = ScrubbingFormatter(secrets=[PLANTED])
    try:
        raise ValueError(PLANTED)
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom %s", (PLANTED,), sys.exc_info())
    out = formatter.format(record)
    assert "ValueError" in out and PLANTED not in out


def test_cli_commands_configure_logging(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from rof_pipelines.cli import app

    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("LOG_FORMAT", "json")
    result = CliRunner().invoke(app, ["instance", "render"])
    assert result.exit_code == 0, result.output
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_rof_handler", False)]
    assert root.level == logging.DEBUG
    assert len(ours) == 1 and isinstance(ours[0].formatter, JsonFormatter)

    # A config that does not load: the environment's level still applies, the command reports.
    bad = tmp_path / "bad.yaml"
    bad.write_text("system_setup: {metrics_port: -1}\n")
    monkeypatch.setenv("ROF_CONFIG", str(bad))
    monkeypatch.setenv("LOG_LEVEL", "warning")
    monkeypatch.setenv("LOG_FORMAT", "text")
    result = CliRunner().invoke(app, ["instance", "render"])
    assert result.exit_code != 0
    assert root.level == logging.WARNING


def _write_config(tmp_path, level: str) -> str:  # type: ignore[no-untyped-def]
    config = tmp_path / f"config-{level}.yaml"
    config.write_text(
        f"system_setup: {{log_level: {level}, log_format: json}}\n"
        f"state_storage: {{db_password: {json.dumps(PLANTED)}}}\n"
        f"storage: {{data_dir: {json.dumps(str(tmp_path / 'data'))}}}\n"
    )
    return str(config)


def _json_records(err: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("level, shown", [("debug", True), ("info", False)])
def test_dagster_steps_log_through_the_settings_resource(  # type: ignore[no-untyped-def]
    level: str, shown: bool, tmp_path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The project's module loggers inside a run: configured by the settings resource from the
    config in force (not from the environment), JSON, scrubbed."""
    from dagster import job, op

    from rof_pipelines.adapters.resources import RofSettings

    for name in ("LOG_LEVEL", "LOG_FORMAT", "ROF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    configure_logging("warning", "text")  # whatever the process had before the run

    @op(required_resource_keys={"settings"})
    def speak(context) -> None:  # type: ignore[no-untyped-def]
        log = logging.getLogger("rof_pipelines.adapters.test")
        log.debug("module debug line")
        log.info("module info line")
        log.warning("module warning line %s", PLANTED)

    @job(resource_defs={"settings": RofSettings(config_path=_write_config(tmp_path, level))})
    def speaking() -> None:
        speak()

    capfd.readouterr()
    assert speaking.execute_in_process().success
    err = capfd.readouterr().err
    _assert_no_secret(err)
    messages = [r["message"] for r in _json_records(err) if r["logger"] == "rof_pipelines.adapters.test"]
    assert "module info line" in messages and "module warning line ***" in messages
    assert ("module debug line" in messages) is shown


@pytest.mark.parametrize("level, shown", [("debug", True), ("info", False)])
def test_rof_console_logger_when_the_run_names_it(  # type: ignore[no-untyped-def]
    level: str, shown: bool, tmp_path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Dagster's own event lines in the configured format, scrubbed, at the configured level."""
    from dagster import job, op

    from rof_pipelines.defs.loggers import rof_console_logger

    monkeypatch.setenv("ROF_CONFIG", _write_config(tmp_path, level))
    for name in ("LOG_LEVEL", "LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)

    @op
    def speak(context) -> None:  # type: ignore[no-untyped-def]
        context.log.debug("dagster debug line")
        context.log.info(f"dagster info line {PLANTED}")

    @job(logger_defs={"console": rof_console_logger})
    def speaking() -> None:
        speak()

    capfd.readouterr()
    assert speaking.execute_in_process(run_config={"loggers": {"console": {"config": {}}}}).success
    err = capfd.readouterr().err
    _assert_no_secret(err)
    records = _json_records(err)
    assert records and len(records) == len([line for line in err.splitlines() if line.strip()])
    messages = " | ".join(r["message"] for r in records)
    assert "dagster info line ***" in messages
    assert ("dagster debug line" in messages) is shown
    assert any(r.get("run_id") for r in records)


@pytest.mark.parametrize("level, dagster_level", [("debug", "DEBUG"), ("warn", "WARNING")])
def test_instance_yaml_carries_the_level(make_settings, level: str, dagster_level: str) -> None:  # type: ignore[no-untyped-def]
    import yaml

    from rof_pipelines.defs.instance_config import render_instance_yaml

    rendered = yaml.safe_load(render_instance_yaml(make_settings({"system_setup": {"log_level": level}})))
    assert rendered["python_logs"] == {"python_log_level": dagster_level}


def test_every_job_gets_the_rof_logger() -> None:
    from rof_pipelines.definitions import defs
    from rof_pipelines.defs.loggers import rof_console_logger

    definitions = defs()
    for job_def in definitions.resolve_all_job_defs():
        assert job_def.loggers.get("console") is rof_console_logger, job_def.name


def test_chatty_drivers_stay_quiet_below_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    pika_log = logging.getLogger("pika.adapters.test")
    pika_root = logging.getLogger("pika")
    monkeypatch.setattr(pika_root, "level", logging.NOTSET)  # as if nothing had quietened it yet
    monkeypatch.setattr(pika_root, "_rof_handler", False, raising=False)
    configure_logging("info", "text", stream=stream)
    pika_log.error("Socket failed to connect")
    assert stream.getvalue() == ""
    configure_logging("debug", "text", stream=stream)
    pika_log.error("Socket failed to connect")
    assert "Socket failed to connect" in stream.getvalue()
    configure_logging("info", "text", stream=stream)
