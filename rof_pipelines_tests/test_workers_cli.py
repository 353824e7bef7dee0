"""`rof workers config|start`: the worker's -y file and command come from the same configuration as
the celery executor (adapters/celery_workers.py), so the two cannot disagree."""

import os
import stat
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rof_pipelines.adapters.celery_workers import (
    executor_config,
    worker_command,
    worker_environment,
    worker_queues,
    write_worker_config,
)
from rof_pipelines.cli import app
from rof_pipelines.errors import ConfigError
from rof_pipelines.settings import Settings

BROKER = "amqp://rof:s3cret@rabbit.internal:5672/%2F"


def _config(tmp_path: Path, **system_setup) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"system_setup": system_setup, "storage": {"rabbitmq": {"url": BROKER}}}))
    return path


def test_workers_config_prints_the_executors_settings_inside_the_execution_wrapper(tmp_path: Path):
    config = _config(tmp_path, celery={"backend": "rpc://", "config_source": {"task_acks_late": True}})
    result = CliRunner().invoke(app, ["workers", "config"], env={"ROF_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    # dagster-celery reads only what is under execution: config: (otherwise it silently uses its own
    # default broker on localhost).
    assert list(printed) == ["execution"] and list(printed["execution"]) == ["config"]
    given = printed["execution"]["config"]
    assert (given["broker"], given["backend"]) == (BROKER, "rpc://")
    # the recovery settings stay on unless the file turns them off
    assert given["config_source"]["task_acks_late"] is True
    assert given["config_source"]["task_reject_on_worker_lost"] is True
    assert given["config_source"]["worker_prefetch_multiplier"] == 1


def test_a_broker_from_the_environment_stays_a_reference_not_a_password():
    settings = Settings(storage={"rabbitmq": {"url": BROKER}})
    assert executor_config(settings, {"RABBITMQ_URL": BROKER})["broker"] == {"env": "RABBITMQ_URL"}
    assert executor_config(settings, {})["broker"] == BROKER  # it came from config.yaml
    own = Settings(
        system_setup={"celery": {"broker": "amqp://other:5672//"}}, storage={"rabbitmq": {"url": BROKER}}
    )
    assert executor_config(own, {"RABBITMQ_URL": BROKER})["broker"] == "amqp://other:5672//"


def test_the_worker_file_is_owner_only(tmp_path: Path):
    path = write_worker_config(Settings(storage={"rabbitmq": {"url": BROKER}}), tmp_path, {})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert yaml.safe_load(path.read_text())["execution"]["config"]["broker"] == BROKER


def test_the_worker_command_consumes_its_pools_queues_and_the_default_one(tmp_path: Path):
    command = worker_command(tmp_path / "w.yaml", ["ab_optimizer", "task_worker"], "both", 2)
    assert Path(command[0]).name == "celery" and command[1:4] == ["-A", "dagster_celery.app", "worker"]
    assert "--prefetch-multiplier=1" in command
    assert command[command.index("-Q") + 1] == "ab_optimizer,task_worker,dagster"
    assert command[command.index("-n") + 1] == "both@%h"  # dagster-celery's naming: @host added
    assert command[-2:] == ["-c", "2"]
    assert worker_queues(["task_worker", "task_worker"]) == ["task_worker", "dagster"]


def test_the_worker_environment_carries_the_celery_settings_module(tmp_path: Path, monkeypatch):
    """dagster_celery.app reads its broker and settings from a dagster_celery_config module on
    PYTHONPATH, written from the -y file as dagster-celery's own command writes it."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    settings = Settings(storage={"rabbitmq": {"url": BROKER}})
    config_file = write_worker_config(settings, tmp_path, {})
    env = worker_environment(config_file, {"PATH": "/usr/bin", "PYTHONPATH": "/src"})
    first, module_dir = env["PYTHONPATH"].split(os.pathsep)
    assert first == "/src"
    module = (Path(module_dir) / "dagster_celery_config.py").read_text()
    assert f"broker_url = '{BROKER}'" in module and "task_acks_late = True" in module
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


@pytest.mark.parametrize(
    ("pools", "concurrency", "message"),
    [
        (["gpu"], 1, "worker pools must be among task_worker, ab_optimizer; got gpu"),
        ([], 1, "got none"),
        (["task_worker"], 0, "concurrency must be at least 1"),
    ],
)
def test_bad_pools_or_concurrency_are_refused_with_the_reason(tmp_path: Path, pools, concurrency, message):
    with pytest.raises(ConfigError, match=message):
        worker_command(tmp_path / "w.yaml", pools, "w", concurrency)


def test_workers_start_refuses_an_unknown_pool_before_starting_anything(tmp_path: Path):
    config = _config(tmp_path)
    result = CliRunner().invoke(app, ["workers", "start", "--pool", "gpu"], env={"ROF_CONFIG": str(config)})
    assert result.exit_code != 0
    assert "gpu" in (result.output + str(result.exception))
