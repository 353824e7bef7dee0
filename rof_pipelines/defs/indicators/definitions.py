"""The indicators domain: its assets and their checks (no jobs, schedules or sensors of its own)."""

from dagster import Definitions

from rof_pipelines.defs.indicators.assets import indicator_frame
from rof_pipelines.settings import Settings


def domain_definitions(at_load: Settings) -> Definitions:
    """Takes the load-time settings as every domain does; its assets need none of them."""
    return Definitions(assets=[indicator_frame])
