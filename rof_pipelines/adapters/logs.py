"""Logging for every entry point: ``system_setup.log_level``, ``system_setup.log_format`` (``text`` or
``json``) and no secret in any line.

One handler on the root logger (:func:`configure_logging`), whose formatter scrubs every record with
the configuration's secrets (:func:`settings_secrets`, through :func:`core.redaction.scrub`): the
message, its arguments, the traceback and any ``extra`` fields. ``json`` writes one object per line
(``ts``, ``level``, ``logger``, ``message``, ``process``, and ``exc_info``/``stack_info`` when
present, plus Dagster's run id and step when a record carries them), stdlib only.

Where each entry point takes it from:

- ``rof ...`` (every CLI command): the ``rof`` callback calls :func:`configure_for_process` before
  the command runs (a config that does not load falls back to ``LOG_LEVEL``/``LOG_FORMAT`` and
  ``info``/``text``, and the command then reports the config error itself).
- ``rof ops serve``: the same; uvicorn gets no logging config of its own, so its loggers propagate
  to that handler, at the same level (access lines only at ``debug``).
- Dagster runs, two parts:

  * the project's module loggers (``rof_pipelines.*``, drivers) in every process that executes
    steps or ticks: the ``settings`` resource (``RofSettings.setup_for_execution``) calls
    :func:`configure_for_process` with the config in force when Dagster initialises it, so a
    config edit applies to the next run (hot reload), in text or JSON, scrubbed;
  * Dagster's own loggers (its console lines, and which ``context.log`` messages the event log
    keeps): Dagster's public knob is the instance's ``python_logs.python_log_level``, which
    ``rof instance render`` writes from ``system_setup.log_level`` into ``deploy/dagster.yaml``
    (fixed until re-rendered). Dagster only instantiates a job's own loggers when the run config
    names them, so JSON and scrubbed Dagster event lines are opt-in per run:
    ``loggers: {console: {config: {}}}`` selects ``defs/loggers.py: rof_console_logger`` (every
    job's ``console`` logger); ``log_level`` there overrides the level for that run.
    The local instance of ``rof demo`` / ``rof ui`` (``.dagster_home``) has no ``python_logs``
    unless added, so Dagster logs its events at its default (DEBUG) there.
"""

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any

from pydantic import SecretStr

from rof_pipelines.core.redaction import scrub, secret_values

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_DRIVERS = ("pika",)
_MARK = "_rof_handler"  # the attribute naming the handler this module installed
# LogRecord's own attributes; anything else on a record came in through ``extra``.
# (uvicorn's ``color_message`` is its message again with terminal colours.)
_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


def level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    try:
        return LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(LEVELS)}") from None


def _revealed(data: Any) -> Any:
    if isinstance(data, SecretStr):
        return data.get_secret_value()
    if isinstance(data, Mapping):
        return {key: _revealed(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_revealed(value) for value in data]
    return data


def settings_secrets(settings: Any) -> list[str]:
    """Every secret of the configuration: passwords (``SecretStr``), values under keys that look
    secret, and URLs holding credentials (``core.redaction.secret_values`` over the revealed dump)."""
    data = _revealed(settings.model_dump(mode="python", by_alias=True))
    return [str(value) for value in secret_values(data) if str(value)]


class ScrubbingFormatter(logging.Formatter):
    """A text formatter whose every line is scrubbed of ``secrets``."""

    def __init__(self, fmt: str | None = TEXT_FORMAT, secrets: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(fmt, **kwargs)
        self.secrets = tuple(s for s in secrets if s)

    def scrub(self, text: str) -> str:
        return scrub(text, *self.secrets) if self.secrets else text

    def format(self, record: logging.LogRecord) -> str:
        return self.scrub(super().format(record))


class JsonFormatter(ScrubbingFormatter):
    """One JSON object per record; every string is scrubbed before it is encoded (so an escaped
    spelling of a secret cannot slip past)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.scrub(record.getMessage()),
            "process": record.process,
        }
        if record.exc_info:
            entry["exc_info"] = self.scrub(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exc_info"] = self.scrub(record.exc_text)
        if record.stack_info:
            entry["stack_info"] = self.scrub(self.formatStack(record.stack_info))
        meta = getattr(record, "dagster_meta", None)
        if isinstance(meta, Mapping):
            for key in ("run_id", "job_name", "step_key", "dagster_event_type"):
                if meta.get(key) is not None:
                    entry[key] = str(meta[key])
        for key, value in vars(record).items():
            # Dagster's own extras (dagster_meta, dagster_event, ...) are summarised above.
            if key not in _STANDARD and not key.startswith(("_", "dagster")) and key not in entry:
                entry[key] = self.scrub(value) if isinstance(value, str) else _jsonable(value, self.scrub)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _jsonable(value: Any, scrub_text: Any) -> Any:
    try:
        json.dumps(value)
    except Exception:  # not JSON-able (some objects refuse even to be iterated): its text
        return scrub_text(str(value))
    return json.loads(scrub_text(json.dumps(value))) if isinstance(value, dict | list) else value


class CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to whatever ``sys.stderr`` is when a record is emitted (a test runner or
    CliRunner swaps it; a handler holding the old one would write to a closed stream)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def make_formatter(log_format: str, secrets: Iterable[str] = ()) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(None, secrets)
    if log_format == "text":
        return ScrubbingFormatter(TEXT_FORMAT, secrets)
    raise ValueError(f"unknown log format {log_format!r}: use text or json")


def configure_logging(
    level: str | int = "info",
    log_format: str = "text",
    secrets: Iterable[str] = (),
    *,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Install (or replace) this module's one handler on the root logger and set the root level.
    Other handlers (pytest's capture, a host application's) are left alone; calling it again with
    another level or format takes effect at once."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream) if stream is not None else CurrentStderr()
    setattr(handler, _MARK, True)
    handler.setFormatter(make_formatter(log_format, secrets))
    root.addHandler(handler)
    root.setLevel(level_number(level))
    _quiet_drivers(level_number(level))
    return handler


def _quiet_drivers(level: int) -> None:
    """Drivers that log every failed attempt at ERROR with a traceback (pika) stay quiet below
    ``debug``: the adapters report the failure themselves, once, with the project's error. A level
    someone else set on such a logger is left alone."""
    for name in QUIET_DRIVERS:
        driver = logging.getLogger(name)
        ours = getattr(driver, _MARK, False)
        if driver.level != logging.NOTSET and not ours:
            continue
        driver.setLevel(logging.NOTSET if level <= logging.DEBUG else logging.CRITICAL)
        setattr(driver, _MARK, True)


def configure_from_settings(settings: Any, *, stream: IO[str] | None = None) -> logging.Handler:
    setup = settings.system_setup
    return configure_logging(setup.log_level, setup.log_format, settings_secrets(settings), stream=stream)


def configure_from_environment(*, stream: IO[str] | None = None) -> logging.Handler:
    """For a process whose config does not load: ``LOG_LEVEL`` / ``LOG_FORMAT`` when valid, else
    ``info`` / ``text``; secrets cannot be listed then, so nothing config-derived should be logged."""
    level = os.environ.get("LOG_LEVEL", "info").strip().lower()
    log_format = os.environ.get("LOG_FORMAT", "text").strip().lower()
    return configure_logging(
        level if level in LEVELS else "info",
        log_format if log_format in ("text", "json") else "text",
        stream=stream,
    )


def configure_for_process(load: Callable[[], Any] | None = None, *, stream: IO[str] | None = None) -> Any:
    """Configure from the settings ``load()`` returns (default: ``settings.load_settings``); returns
    them, or None when they do not load (then :func:`configure_from_environment`)."""
    from rof_pipelines.errors import ConfigError

    if load is None:
        from rof_pipelines.settings import load_settings as load
    try:
        settings = load()
    except ConfigError:
        configure_from_environment(stream=stream)
        return None
    configure_from_settings(settings, stream=stream)
    return settings
