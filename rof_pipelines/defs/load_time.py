"""Settings that Dagster needs when the code location loads (cron strings, run tags, sensor
intervals), not per run, and the tags that put runs and steps into a worker pool.

They are read once, by ``rof_pipelines.definitions.defs`` (Dagster's lazy ``@definitions``), and passed
to each domain's ``domain_definitions(at_load)``; no module reads them at import. Everything else
reads config through the ``settings`` resource at run time (hot reload); these few values are fixed
until the code location reloads.
"""

import logging

from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

from rof_pipelines.errors import ConfigError
from rof_pipelines.settings import Settings, WorkerPoolConfig, load_settings

log = logging.getLogger(__name__)


def settings_at_load() -> Settings:
    """The configuration, or the defaults if config.yaml is invalid right now (the hot-reload sensor
    reports that; a bad edit must not take the whole code location down)."""
    try:
        return load_settings()
    except ConfigError as exc:
        log.warning("definitions use default settings: %s", exc)
        return Settings()


def pool_tags(at_load: Settings, pool: str) -> dict[str, str]:
    """Run tags that put a job into one of the worker pools (system_setup.worker_pool): the queued
    run coordinator limits concurrent runs per ``rof/pool`` value (see deploy/dagster.yaml), and run
    monitoring stops a run after the pool's task_timeout. Partitioned runs also get Dagster's own
    dagster/partition/* tags."""
    timeout = getattr(at_load.system_setup.worker_pool, pool).task_timeout
    # "manual" unless a schedule or sensor says otherwise (their run requests' tags take precedence).
    return {
        "rof/pool": pool,
        "dagster/max_runtime": str(int(timeout.total_seconds())),
        "rof/trigger": "manual",
    }


def step_tags(pool: str) -> dict[str, str]:
    """Op tags that send a step to its worker pool's Celery queue (system_setup.executor: celery; the
    other executors ignore them): ``rof workers start --pool POOL`` consumes that queue. The queue is
    the pool's name, so the tags are fixed where an asset is declared and need no settings."""
    pools = tuple(WorkerPoolConfig.model_fields)
    if pool not in pools:
        raise ValueError(f"unknown worker pool {pool!r}; system_setup.worker_pool has {', '.join(pools)}")
    return {DAGSTER_CELERY_QUEUE_TAG: pool}
