"""A job that snapshots the state store into a configured destination, on a schedule and on demand."""

from typing import Optional

from dagster import Config, JobDefinition, OpExecutionContext, Output, job, op

from rof_pipelines.adapters.backup import prune_backups, write_backup
from rof_pipelines.adapters.resources import RofSettings, StateStoreResource
from rof_pipelines.defs.load_time import pool_tags, step_tags
from rof_pipelines.settings import DEFAULT_BACKUP_DESTINATION, Settings


class BackupOpConfig(Config):
    """A ``backup`` message may name a destination of system_setup.backup, never a URL: the config
    alone says where backups are written and pruned. Empty means ``default`` (``directory``)."""

    destination: Optional[str] = None  # noqa: UP045 - Dagster's config schema needs Optional


@op(
    description="Write a consistent snapshot of every state-store table, then prune old backups.",
    tags=step_tags("task_worker"),
)
def backup_state_store(
    context: OpExecutionContext,
    config: BackupOpConfig,
    settings: RofSettings,
    state_store: StateStoreResource,
):
    backup = settings.load().system_setup.backup
    destination = config.destination or DEFAULT_BACKUP_DESTINATION
    target = backup.resolved_url(destination)  # ConfigError when the name is not (or no longer) configured
    with state_store.open() as store:
        result = write_backup(store, target)
    removed = prune_backups(target, backup.retention_days)
    context.log.info(
        f"backup to {destination} {result.url}: {result.tables}; "
        f"pruned {len(removed)} older than {backup.retention_days}d"
    )
    return Output(
        result.url,
        metadata={
            "destination": destination,
            "url": result.url,
            "schema": result.schema,
            "revision": result.revision or "base",
            "rows_per_table": result.tables,
            "bytes": result.bytes,
            "pruned": len(removed),
        },
    )


def build_state_backup_job(at_load: Settings) -> JobDefinition:
    """``state_backup``, in the task_worker pool (its run tags as the code location loaded them)."""

    @job(
        name="state_backup",
        description="Back up the state store (all tables, one consistent snapshot) and prune old backups.",
        tags=pool_tags(at_load, "task_worker"),
    )
    def state_backup_job():
        backup_state_store()

    return state_backup_job
