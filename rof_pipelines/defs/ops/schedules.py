"""The periodic state-store backup."""

from dagster import DefaultScheduleStatus, JobDefinition, ScheduleDefinition

from rof_pipelines.settings import Settings


def build_state_backup_schedule(at_load: Settings, state_backup_job: JobDefinition) -> ScheduleDefinition:
    """``state_backup_schedule`` at system_setup.schedules.state_backup's cron and timezone, as they
    were when the code location loaded."""
    backup = at_load.system_setup.schedules.state_backup
    return ScheduleDefinition(
        name="state_backup_schedule",
        job=state_backup_job,
        cron_schedule=backup.cron,
        execution_timezone=backup.timezone,
        default_status=DefaultScheduleStatus.RUNNING,
        description="Periodic state-store backup (system_setup.schedules.state_backup).",
        tags={"rof/trigger": "schedule"},
    )
