"""Schedule times must be fixed when the code location loads; they come from config.yaml then."""

import logging

from rof_pipelines.errors import ConfigError
from rof_pipelines.settings import SchedulesConfig, load_settings

log = logging.getLogger(__name__)


def schedule_settings() -> SchedulesConfig:
    """The configured schedules, or the defaults if config.yaml is invalid right now (the hot-reload
    sensor reports that; a bad edit must not take the whole code location down)."""
    try:
        return load_settings().system_setup.schedules
    except ConfigError as exc:
        log.warning("schedules use their defaults: %s", exc)
        return SchedulesConfig()
