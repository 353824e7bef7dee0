"""The one composition root: each domain's definitions (defs/<domain>/definitions.py: its assets and
checks, jobs, schedules and sensors) merged, plus the resources they share.

``defs`` is Dagster's lazy ``@definitions``: workspace.yaml, ``dagster dev -m rof_pipelines.definitions``
and the run workers call it when the code location loads, which is when the few load-time settings
(sensor intervals, cron strings, pool tags; see defs/load_time.py) are read. Importing this module
reads no configuration. In code and tests, ``defs()`` returns the ``Definitions``;
``build_definitions(settings)`` builds them afresh from given settings.
"""

from functools import cache
from typing import Any

from dagster import Definitions, ExecutorDefinition, definitions, in_process_executor, multiprocess_executor
from dagster_celery import celery_executor

from rof_pipelines.adapters.celery_workers import executor_config, tune_execution_loop
from rof_pipelines.adapters.io_managers import ParquetFrameIOManager, StepOutputIOManager
from rof_pipelines.adapters.resources import (
    PostgresStateStoreResource,
    QuoteStoreResource,
    RabbitMQResource,
    RofSettings,
)
from rof_pipelines.defs.experiments import definitions as experiments
from rof_pipelines.defs.indicators import definitions as indicators
from rof_pipelines.defs.load_time import settings_at_load
from rof_pipelines.defs.loggers import rof_console_logger
from rof_pipelines.defs.market_day import with_partitions_per_run
from rof_pipelines.defs.ops import definitions as ops
from rof_pipelines.defs.optimisation import definitions as optimisation
from rof_pipelines.defs.quotes import definitions as quotes
from rof_pipelines.defs.rl import definitions as rl
from rof_pipelines.settings import Settings

DOMAINS = (quotes, indicators, rl, optimisation, experiments, ops)


def _celery(at_load: Settings) -> ExecutorDefinition:
    """Steps as tasks on the pools' queues (defs/load_time.py: step_tags), for `rof workers start`
    workers; configured in code, so the broker is in no run's config (adapters/celery_workers.py)."""
    tune_execution_loop()
    return celery_executor.configured(executor_config(at_load), name="celery")


# system_setup.executor -> the executor of every job and of the runs a backfill launches (read at load).
EXECUTORS = {
    "in_process": lambda _: in_process_executor,
    "multiprocess": lambda _: multiprocess_executor,
    "celery": _celery,
}


def shared_resources() -> dict[str, Any]:
    """The resources every domain uses; each reads config.yaml when a run or tick asks, not here."""
    settings = RofSettings()
    return {
        "settings": settings,
        "quote_store": QuoteStoreResource(settings=settings),
        "state_store": PostgresStateStoreResource(settings=settings),
        "rabbitmq": RabbitMQResource(settings=settings),
        "frame_io_manager": ParquetFrameIOManager(settings=settings),
        "io_manager": StepOutputIOManager(settings=settings),
    }


def build_definitions(at_load: Settings) -> Definitions:
    """Every domain's definitions built from ``at_load`` and merged, with the shared resources."""
    per_run = at_load.system_setup.backfill_partitions_per_run
    domains = [with_partitions_per_run(domain.domain_definitions(at_load), per_run) for domain in DOMAINS]
    # A run whose config names `loggers: {console: ...}` logs Dagster's events in system_setup's
    # level and format, scrubbed (defs/loggers.py); otherwise dagster.yaml's python_logs applies.
    loggers = {"console": rof_console_logger}
    executor = EXECUTORS[at_load.system_setup.executor](at_load)
    return Definitions.merge(
        *domains, Definitions(resources=shared_resources(), loggers=loggers, executor=executor)
    )


@definitions
@cache
def defs() -> Definitions:
    """Built once per process, when first asked (Dagster asks once per code-location load); so the
    CLI and the tests resolve jobs against one repository, as they would in the code location."""
    return build_definitions(settings_at_load())
