"""The optimisation domain: the GA population, the nightly job and its schedule, and the `tasks`
queue that asks for the same job now."""

from dagster import Definitions

from rof_pipelines.defs.optimisation.assets import ga_population
from rof_pipelines.defs.optimisation.jobs import build_nightly_optimisation_job
from rof_pipelines.defs.optimisation.schedules import build_nightly_optimisation_schedule
from rof_pipelines.defs.optimisation.sensors import build_tasks_sensor
from rof_pipelines.settings import Settings


def domain_definitions(at_load: Settings) -> Definitions:
    nightly_optimisation_job = build_nightly_optimisation_job(at_load)
    return Definitions(
        assets=[ga_population],
        jobs=[nightly_optimisation_job],
        schedules=[build_nightly_optimisation_schedule(at_load, nightly_optimisation_job)],
        sensors=[build_tasks_sensor(at_load, nightly_optimisation_job)],
    )
