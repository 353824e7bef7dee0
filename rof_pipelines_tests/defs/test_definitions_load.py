"""The code location: every domain's definitions merged under the names the daemon, the CLI and the
docs use, and the load-time settings read when Dagster loads the definitions, never at import."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

import rof_pipelines.settings
from rof_pipelines.definitions import build_definitions, defs
from rof_pipelines.defs.load_time import settings_at_load
from rof_pipelines.settings import ENV_OVERRIDES, PROJECT_ROOT

SETTINGS_FILE = rof_pipelines.settings.__file__  # in the directory of the package

JOBS = {"market_data", "all_market_day_assets", "nightly_optimisation", "state_backup", "exchange_ingest"}
SCHEDULES = {"nightly_optimisation_schedule", "state_backup_schedule"}
SENSORS = {
    "market_discovery_sensor",
    "task_messages_sensor",
    "quotes_updated_messages_sensor",
    "backup_messages_sensor",
    "config_reload_sensor",
    "alerts_sensor",
}
ASSETS = {"quote_snapshots", "indicator_frame", "q_table", "ga_population", "ab_report", "strategy_knowledge"}

# Imports every module of the package with the configuration watched: opening config.yaml (or the
# file ROF_CONFIG names) and reading a variable of the configuration's environment layer are
# recorded with the package's functions on the stack. Then it loads the definitions, which must read
# both: the watch itself works.
IMPORT_EVERYTHING = r"""
import importlib, json, os, pkgutil, sys

config_file, default_config, settings_file = sys.argv[1], sys.argv[2], sys.argv[3]
watched_files = {os.path.realpath(config_file), os.path.realpath(default_config)}
watched_keys = {"ROF_CONFIG"}
package = os.path.dirname(os.path.abspath(settings_file))
mapping_helpers = {"os.py", "_collections_abc.py", "<frozen os>", "<frozen _collections_abc>"}
reads = []

def ours(frame):
    return frame.f_code.co_filename.startswith(package + os.sep)

def record(what, frame):
    where = []
    while frame is not None:
        if ours(frame):
            where.append(f"{os.path.relpath(frame.f_code.co_filename, package)}:{frame.f_code.co_name}")
        frame = frame.f_back
    reads.append({"read": what, "where": where})

def on_open(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        if os.path.realpath(os.fsdecode(args[0])) in watched_files:
            record(f"opened {os.fsdecode(args[0])}", sys._getframe(1))

class WatchedEnviron(type(os.environ)):
    def __getitem__(self, key):
        if key in watched_keys:
            # Only when our code asks (past os.getenv, Mapping.get): a library's copy of the whole
            # environment (dict(os.environ)) is not a read of the configuration.
            frame = sys._getframe(1)
            while frame is not None and os.path.basename(frame.f_code.co_filename) in mapping_helpers:
                frame = frame.f_back
            if frame is not None and ours(frame):
                record(f"${key}", frame)
        return super().__getitem__(key)

env = os.environ
os.environ = WatchedEnviron(env._data, env.encodekey, env.decodekey, env.encodevalue, env.decodevalue)
sys.addaudithook(on_open)

import rof_pipelines
import rof_pipelines.settings as settings
watched_keys |= set(settings.ENV_OVERRIDES)
for module in pkgutil.walk_packages(rof_pipelines.__path__, "rof_pipelines."):
    importlib.import_module(module.name)
at_import = list(reads)
imported = sorted(name for name in sys.modules if name.startswith("rof_pipelines."))
reads.clear()
from rof_pipelines.definitions import defs
defs()
print(json.dumps({"at_import": at_import, "imported": imported, "at_load": reads}))
"""
# What may still read the configuration at import, and why (each entry a function on the stack).
IMPORT_TIME_READS = {
    # storage.history_start: the first day of the `date` partitions, which every asset decorator takes.
    "partitions.py:_history_start",
}


def test_the_merged_definitions_hold_every_domains_objects_by_name():
    loaded = defs()
    repository = loaded.get_repository_def()
    repository.validate_loadable()
    assert {job.name for job in repository.get_all_jobs()} >= JOBS
    assert {schedule.name for schedule in repository.schedule_defs} == SCHEDULES
    assert {sensor.name for sensor in repository.sensor_defs} == SENSORS
    assert {key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()} == ASSETS
    assert set(repository.get_top_level_resources()) == {
        "io_manager",
        "settings",
        "quote_store",
        "state_store",
        "rabbitmq",
        "frame_io_manager",
    }


def test_load_time_settings_are_read_when_the_definitions_load(tmp_path: Path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"rabbitmq": {"sensor_interval_seconds": 7}},
                "system_setup": {
                    "schedules": {"state_backup": {"cron": "15 4 * * *"}},
                    "worker_pool": {
                        "task_worker": {"max_workers": 2, "queue_size": 10, "task_timeout": "45s"}
                    },
                },
            }
        )
    )
    monkeypatch.setenv("ROF_CONFIG", str(config))
    loaded = build_definitions(settings_at_load())  # what defs() does once per process
    for name in ("task_messages_sensor", "quotes_updated_messages_sensor", "backup_messages_sensor"):
        assert loaded.resolve_sensor_def(name).minimum_interval_seconds == 7
    assert loaded.resolve_schedule_def("state_backup_schedule").cron_schedule == "15 4 * * *"
    assert loaded.resolve_job_def("state_backup").tags["dagster/max_runtime"] == "45"


def test_importing_any_module_reads_no_configuration(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text("storage: {rabbitmq: {sensor_interval_seconds: 7}}\n")
    env = {key: value for key, value in os.environ.items() if key not in ENV_OVERRIDES}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            IMPORT_EVERYTHING,
            str(config),
            str(PROJECT_ROOT / "config.yaml"),
            SETTINGS_FILE,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "ROF_CONFIG": str(config)},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    unexplained = [read for read in seen["at_import"] if not IMPORT_TIME_READS & set(read["where"])]
    assert unexplained == []
    assert {"rof_pipelines.definitions", "rof_pipelines.defs.ops.sensors", "rof_pipelines.cli"} <= set(
        seen["imported"]
    )
    assert seen["at_load"], "the watch sees the reads when the definitions load"


def test_system_setup_executor_picks_the_executor_of_every_job_and_of_backfill_runs():
    from rof_pipelines.settings import Settings

    for name, expected in (("in_process", "in_process"), ("multiprocess", "multiprocess")):
        built = build_definitions(Settings(system_setup={"executor": name}))
        repository = built.get_repository_def()
        assert {job.executor_def.name for job in repository.get_all_jobs()} == {expected}
    assert Settings().system_setup.executor == "in_process"


def test_backfill_partitions_per_run_sets_every_ranged_assets_policy_at_load():
    from dagster import AssetKey

    from rof_pipelines.settings import Settings

    def policies(settings: Settings) -> dict[str, int | None]:
        graph = build_definitions(settings).resolve_asset_graph()
        return {
            key.to_user_string(): graph.get(key).backfill_policy.max_partitions_per_run
            for key in graph.get_all_asset_keys()
            if graph.get(key).backfill_policy is not None
        }

    assert set(policies(Settings()).values()) == {31}
    assert set(policies(Settings(system_setup={"backfill_partitions_per_run": 1})).values()) == {1}
    assert set(policies(Settings(system_setup={"backfill_partitions_per_run": 7})).values()) == {7}
    # The island GA's graph takes one partition per run whatever the setting; the others follow it.
    islands = Settings(
        system_setup={"backfill_partitions_per_run": 7},
        ab_tests={"experiment": {"ga": {"islands": 2, "migration_interval": 1, "generations": 2}}},
    )
    found = policies(islands)
    assert found.pop(AssetKey("ga_population").to_user_string()) == 1
    assert set(found.values()) == {7}
