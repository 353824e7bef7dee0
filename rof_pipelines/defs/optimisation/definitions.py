"""The optimisation domain: the GA population, the nightly job and its schedule, and the `tasks`
queue that asks for the same job now."""

from dagster import Definitions

from rof_pipelines.defs.optimisation.assets import ga_population
from rof_pipelines.defs.optimisation.islands import build_island_ga_population
from rof_pipelines.defs.optimisation.jobs import build_nightly_optimisation_job
from rof_pipelines.defs.optimisation.schedules import build_nightly_optimisation_schedule
from rof_pipelines.defs.optimisation.sensors import build_tasks_sensor
from rof_pipelines.settings import Settings


def domain_definitions(at_load: Settings) -> Definitions:
    """``ga_population`` is the single GA's asset, or with ``ga.islands > 1`` at load the island graph
    (defs/optimisation/islands.py) under the same key."""
    nightly_optimisation_job = build_nightly_optimisation_job(at_load)
    islands = at_load.ab_tests.experiment.ga.islands > 1
    return Definitions(
        assets=[build_island_ga_population(at_load) if islands else ga_population],
        jobs=[nightly_optimisation_job],
        schedules=[build_nightly_optimisation_schedule(at_load, nightly_optimisation_job)],
        sensors=[build_tasks_sensor(at_load, nightly_optimisation_job)],
    )
