"""The console logger of every rof job (Definitions ``loggers``), opt-in per run: Dagster
instantiates a job's loggers only when the run config names them, so a run with
``loggers: {console: {config: {}}}`` (optionally ``log_level: DEBUG``) writes Dagster's events in
``system_setup.log_format`` (text or JSON), scrubbed of the secrets; without it Dagster's default
console logger runs at the instance's ``python_logs.python_log_level``. See adapters/logs.py."""

import logging
from typing import Any

from dagster import Field, logger

from rof_pipelines.adapters.logs import (
    CurrentStderr,
    configure_for_process,
    level_number,
    make_formatter,
    settings_secrets,
)


@logger(
    config_schema={
        "log_level": Field(str, is_required=False, description="overrides system_setup.log_level"),
        "name": Field(str, is_required=False, default_value="dagster"),
    },
    description="The console logger of every rof job: system_setup.log_level and log_format, scrubbed.",
)
def rof_console_logger(init_context: Any) -> logging.Logger:
    settings = configure_for_process()
    config = init_context.logger_config or {}
    setup = settings.system_setup if settings is not None else None
    level = level_number(config.get("log_level") or (setup.log_level if setup else "info"))
    secrets = settings_secrets(settings) if settings is not None else []
    dagster_log = logging.getLogger(f"rof.{config.get('name', 'dagster')}")
    dagster_log.propagate = False  # its own handler; the root handler would print each event twice
    for handler in list(dagster_log.handlers):
        dagster_log.removeHandler(handler)
    handler = CurrentStderr()
    handler.setFormatter(make_formatter(setup.log_format if setup else "text", secrets))
    dagster_log.addHandler(handler)
    dagster_log.setLevel(level)
    if config.get("log_level"):
        logging.getLogger().setLevel(level)
    return dagster_log
