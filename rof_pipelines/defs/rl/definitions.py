"""The rl domain: its assets and their checks (no jobs, schedules or sensors of its own)."""

from dagster import Definitions

from rof_pipelines.defs.rl.assets import q_table
from rof_pipelines.settings import Settings


def domain_definitions(at_load: Settings) -> Definitions:
    """Takes the load-time settings as every domain does; its assets need none of them."""
    return Definitions(assets=[q_table])
