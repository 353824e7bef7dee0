"""The celery executor's configuration and the workers that match it (system_setup.executor: celery).

One function, :func:`executor_config`, says how runs reach the workers (broker, result backend,
Celery settings); the executor (``definitions.py``) and every worker's ``-y`` file
(:func:`worker_yaml`, ``rof workers config|start``) are built from it, so the two sides cannot
disagree. Steps are routed to a queue per worker pool (``defs/load_time.py: step_tags``).
``rof workers start`` execs the ``celery worker`` dagster-celery's own command would start, with the
Celery settings module dagster-celery writes (:func:`worker_environment`).
"""

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from rof_pipelines.errors import ConfigError
from rof_pipelines.settings import Settings, WorkerPoolConfig

# The queue dagster-celery sends a step without a pool queue tag to; every worker consumes it too, so
# such a step runs somewhere instead of waiting forever for a consumer.
DEFAULT_QUEUE = "dagster"
POOLS = tuple(WorkerPoolConfig.model_fields)
# The environment variable that supplies storage.rabbitmq.url (settings.ENV_OVERRIDES).
RABBITMQ_URL_ENV = "RABBITMQ_URL"
# dagster-celery refuses a worker on more than four queues (a Celery 4 limit it still enforces).
MAX_QUEUES = 4
# How often the run's execution loop looks for finished steps and submits the next. dagster-celery
# sleeps a fixed second per loop, so every level of a run's step graph waited up to a second before
# its steps were even submitted: the island GA's ~10 levels cost ~10 s of idle workers per run
# (`rof bench scale`). The result checks it polls are cheap (rpc:// backend).
EXECUTION_LOOP_TICK_SECONDS = 0.1


def tune_execution_loop() -> None:
    """Set dagster-celery's execution-loop tick (a module constant it has no setting for)."""
    from dagster_celery import core_execution_loop

    core_execution_loop.TICK_SECONDS = EXECUTION_LOOP_TICK_SECONDS


def broker_url(settings: Settings) -> str:
    """system_setup.celery.broker, or the RabbitMQ the sensors use (storage.rabbitmq.url)."""
    return (
        settings.system_setup.celery.broker.get_secret_value()
        or settings.storage.rabbitmq.url.get_secret_value()
    )


def _broker_source(settings: Settings, environ: Mapping[str, str]) -> str | dict[str, str]:
    """A reference to the environment variable when it is where the URL came from: the executor and
    the worker resolve ``{env: RABBITMQ_URL}`` in their own process, so the password is written into
    no definition, config file or run record; otherwise the URL itself (then it is in config.yaml)."""
    url = broker_url(settings)
    if not settings.system_setup.celery.broker.get_secret_value() and environ.get(RABBITMQ_URL_ENV) == url:
        return {"env": RABBITMQ_URL_ENV}
    return url


def executor_config(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """dagster-celery's executor config (``celery_executor.configured(...)`` and a worker's -y file)."""
    celery = settings.system_setup.celery
    return {
        "broker": _broker_source(settings, os.environ if environ is None else environ),
        "backend": celery.backend,
        "config_source": dict(celery.config_source),
    }


def worker_yaml(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """A worker's ``-y`` file. The ``execution: config:`` wrapper is required: dagster-celery silently
    ignores a file without it (and then uses its own default broker)."""
    return yaml.safe_dump({"execution": {"config": executor_config(settings, environ)}}, sort_keys=False)


def worker_queues(pools: Sequence[str]) -> list[str]:
    """The queues a worker of ``pools`` consumes: each pool's, then the default queue."""
    unknown = [pool for pool in pools if pool not in POOLS]
    if unknown or not pools:
        raise ConfigError(f"worker pools must be among {', '.join(POOLS)}; got {', '.join(pools) or 'none'}")
    queues = list(dict.fromkeys([*pools, DEFAULT_QUEUE]))
    if len(queues) > MAX_QUEUES:
        raise ConfigError(f"a worker consumes at most {MAX_QUEUES} queues; got {', '.join(queues)}")
    return queues


def _celery() -> str:
    """The celery command of this environment (beside this Python), else the one on PATH."""
    beside = Path(sys.executable).parent / "celery"
    found = str(beside) if beside.exists() else shutil.which("celery")
    if not found:
        raise ConfigError("the celery command is not installed (pip install dagster-celery)")
    return found


def worker_command(config_file: Path, pools: Sequence[str], name: str, concurrency: int) -> list[str]:
    """The ``celery worker`` that ``dagster-celery worker start -y FILE`` would start, to be exec'd
    in place: dagster-celery's command stays alive beside its worker as a launcher holding ~100 MB of
    imports (``rof bench scale``), for nothing. The queues are one comma-separated ``-Q``; ``-c`` is
    how many steps this worker runs at once; the worker's name gets ``@host`` as dagster-celery's."""
    from dagster_celery.cli import get_worker_name

    if concurrency < 1:
        raise ConfigError(f"a worker's concurrency must be at least 1; got {concurrency}")
    return [
        _celery(),
        "-A",
        "dagster_celery.app",
        "worker",
        "--prefetch-multiplier=1",
        "--loglevel",
        "INFO",
        "-Q",
        ",".join(worker_queues(pools)),
        "-n",
        get_worker_name(name),
        "-c",
        str(concurrency),
    ]


def worker_environment(config_file: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: the Celery settings of ``config_file`` as dagster-celery provides
    them (a ``dagster_celery_config`` module under DAGSTER_HOME, on PYTHONPATH, which
    ``dagster_celery.app`` imports), and this environment's bin/ first on PATH (a venv's bin/ is not
    on PATH under systemd)."""
    from dagster_celery.cli import get_config_dir

    env = dict(os.environ if environ is None else environ)
    config_dir = get_config_dir(str(config_file))
    env["PYTHONPATH"] = os.pathsep.join([p for p in (env.get("PYTHONPATH", ""), config_dir) if p])
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, *[p for p in env.get("PATH", "").split(os.pathsep) if p]])
    return env


def write_worker_config(
    settings: Settings, directory: Path, environ: Mapping[str, str] | None = None
) -> Path:
    """The -y file in ``directory``, owner-only (it may hold the broker's password)."""
    path = directory / "celery-worker.yaml"
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(worker_yaml(settings, environ))
    return path
