"""The ops domain: state-store backups (job, schedule, `backup` queue), config hot reload and alerting."""

from dagster import Definitions

from rof_pipelines.defs.ops.alerts import build_alerts_sensor
from rof_pipelines.defs.ops.jobs import build_state_backup_job
from rof_pipelines.defs.ops.schedules import build_state_backup_schedule
from rof_pipelines.defs.ops.sensors import build_backup_sensor, config_reload_sensor
from rof_pipelines.settings import Settings


def domain_definitions(at_load: Settings) -> Definitions:
    state_backup_job = build_state_backup_job(at_load)
    return Definitions(
        jobs=[state_backup_job],
        schedules=[build_state_backup_schedule(at_load, state_backup_job)],
        sensors=[
            config_reload_sensor,
            build_backup_sensor(at_load, state_backup_job),
            build_alerts_sensor(at_load),
        ],
    )
