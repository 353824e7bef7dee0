"""The building blocks every configuration section shares: a strict pydantic section and Go-style
durations. Kept apart from :mod:`rof_pipelines.settings` so that section modules (alerting) can use
them without importing the whole settings module."""

import math
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ConfigDict

from rof_pipelines.core.market import duration_text
from rof_pipelines.core.redaction import clip

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)?\s*$")
_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "y": 365 * 86400,  # a window length ("2y"); calendar years differ, a window need not care
    None: 1,
}


# Longer than any window or timeout means a typo; beyond it timedelta itself would overflow.
MAX_DURATION = timedelta(days=36525)


def parse_duration(value: Any) -> timedelta:
    """Accept Go-style durations ("30s", "1200s", "24h", "7d") as well as numbers (seconds), from 0 up
    to MAX_DURATION, so that an absurd value is a config error with its key path, not an overflow."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError(f"not a duration: {clip(repr(value), 80)} (use e.g. '30s', '5m', '24h', '7d')")
    if not math.isfinite(seconds) or seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"duration too long (at most {MAX_DURATION.days}d)")
    if seconds < 0:
        raise ValueError("a duration must not be negative")
    return value if isinstance(value, timedelta) else timedelta(seconds=seconds)


def at_least(minimum: timedelta, why: str) -> Any:
    def check(value: timedelta) -> timedelta:
        if value < minimum:
            raise ValueError(f"must be at least {duration_text(minimum)}: {why}; got {duration_text(value)}")
        return value

    return AfterValidator(check)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


SECTION_CONFIG = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)
