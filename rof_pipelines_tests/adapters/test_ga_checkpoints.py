"""GA checkpoints in a real PostgreSQL: a run killed with SIGKILL (twice, at different generations)
and restarted finishes bit-identical to an uninterrupted run and repeats at most checkpoint_interval
generations; retention pruning; progress rows."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta

import pytest

from rof_pipelines.adapters.optimisation import (
    decode_payload,
    encode_payload,
    prepare_optimisation,
    run_optimisation,
)
from rof_pipelines.adapters.state_store import StateStore
from rof_pipelines.settings import PROJECT_ROOT, Settings
from rof_pipelines_tests.core.test_ga import planted_frame

pytestmark = pytest.mark.postgres

MARKET = "binance:TONUSDT"
START = datetime(2024, 1, 1, tzinfo=UTC)
END = START + timedelta(days=1)
GA = {
    "generations": 10,
    "population_size": 12,
    "min_population": 8,
    "max_population": 16,
    "sample_fraction": 0.6,
    "full_window_from_generation": 3,
    "patience": 50,
    "seed": 5,
    "search_space": {
        "alpha": {"type": "float", "low": 0.05, "high": 0.5},
        "rsi_low": {"type": "int", "low": 20, "high": 49},
        "rsi_high": {"type": "int", "low": 51, "high": 80},
        "vol_bins": {"type": "int", "low": 1, "high": 3},
        "stop_loss": {"type": "float", "low": 0.0, "high": 0.02},
    },
}
INTERVAL = 2

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from rof_pipelines.adapters.optimisation import prepare_optimisation, run_optimisation
    from rof_pipelines.adapters.state_store import StateStore
    from rof_pipelines.settings import load_settings
    from rof_pipelines_tests.adapters.test_ga_checkpoints import END, MARKET, START, frame, overrides

    def main():
        settings = load_settings(environ={}, overrides=json.loads(sys.argv[1]))
        job = prepare_optimisation(settings, MARKET, frame(), START, END, workers=2)
        with StateStore(settings.state_storage) as store:
            result = run_optimisation(job, store, on_generation=lambda stats: time.sleep(0.3))
        print(json.dumps({"population": result.population, "fitness": result.fitness.tolist(),
                          "champion": result.champion, "resumed_from": result.resumed_from,
                          "trials": sorted([list(g), s] for g, s in result.trials.items()),
                          "full_trials": len(result.full_trials)}))

    if __name__ == "__main__":
        main()
    """
)


def frame():
    return planted_frame(1400, seed=8)


def overrides(pg: dict) -> dict:
    return {
        "state_storage": {**pg, "schema": "rof_state"},
        "ab_tests": {
            "experiment": {"id": "kill-test", "ga": GA},
            "state_management": {"checkpoint_interval": INTERVAL, "retention_days": 7},
        },
        "ai_config": {"rl": {"episodes": 5}},
    }


@pytest.fixture
def pg(pg_database) -> dict:
    return {k: pg_database[k] for k in ("db_host", "db_user", "db_name")} | {"db_password": ""}


@pytest.fixture
def settings(make_settings, pg) -> Settings:
    return make_settings(overrides(pg))


@pytest.fixture
def store(settings):
    with StateStore(settings.state_storage) as migrated:
        migrated.upgrade()
        yield migrated


def _start(settings_json: str, script) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(script), settings_json],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        start_new_session=True,  # its own process group: the kill takes the worker pool down too
    )


def _kill_at(proc: subprocess.Popen, store: StateStore, task_id: str, generation: int) -> int:
    """SIGKILL the run's process group once it reports ``generation``; the generation it had done."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        progress = store.progress.get(task_id)
        if progress is not None and progress.generation >= generation:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            done = store.progress.get(task_id)
            assert done is not None
            return done.generation
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"the run never reached generation {generation}")


def test_sigkilled_run_resumes_bit_identically(settings, store, pg, tmp_path):
    job = prepare_optimisation(settings, MARKET, frame(), START, END, workers=1)
    reference = run_optimisation(job, None)  # uninterrupted, no checkpoints, one worker
    assert reference.generations_run == GA["generations"]

    script = tmp_path / "child.py"
    script.write_text(CHILD)
    payload = json.dumps(overrides(pg))
    key = job.key.as_mapping()
    for kill_at in (3, 7):
        proc = _start(payload, script)
        done = _kill_at(proc, store, job.key.task_id, kill_at)
        saved = store.checkpoints.latest(key)
        assert saved is not None and saved.generation % INTERVAL == 0
        assert done - saved.generation <= INTERVAL, "repeats at most checkpoint_interval generations"
        assert done < GA["generations"], "killed in the middle"
    proc = _start(payload, script)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    finished = json.loads(out.strip().splitlines()[-1])
    assert finished["resumed_from"] is not None and finished["resumed_from"] >= 6
    assert [tuple(p) for p in finished["population"]] == reference.population
    assert finished["fitness"] == reference.fitness.tolist()
    assert finished["champion"] == reference.champion
    # Every configuration scored before the kills still counts: the deflated Sharpe ratio's trials
    # are those of the uninterrupted run.
    assert finished["trials"] == sorted([list(g), s] for g, s in reference.trials.items())
    assert finished["full_trials"] == len(reference.full_trials)

    final = store.checkpoints.latest(key)
    assert final is not None and final.final and final.generation == GA["generations"]
    progress = store.progress.get(job.key.task_id)
    assert progress is not None and progress.status == "completed"
    assert progress.generation == GA["generations"] and progress.eta_seconds == 0
    assert progress.experiment_id == "kill-test" and progress.window_start == START


def test_checkpoints_keep_the_newest_two_and_old_ones_are_pruned(store, settings):
    job = prepare_optimisation(settings, MARKET, frame(), START, END, workers=1)
    key = job.key.as_mapping()
    for generation in range(5):
        store.checkpoints.save(key, generation, encode_payload({"g": generation, "x": -0.0}))
    latest = store.checkpoints.latest(key)
    assert latest is not None and latest.generation == 4
    assert decode_payload(latest.payload) == {"g": 4, "x": -0.0}
    assert str(decode_payload(latest.payload)["x"]) == "-0.0", "bytes keep the sign of zero"
    other = {**key, "config_fingerprint": "another"}
    assert store.checkpoints.latest(other) is None, "another configuration never resumes this one"
    assert store.checkpoints.prune(7) == 0
    assert store.checkpoints.prune(7, now=datetime.now(UTC) + timedelta(days=8)) == 2
    assert store.checkpoints.latest(key) is None


def test_sigterm_stops_after_a_generation_with_a_checkpoint_and_resumes_identically(
    settings, store, pg, tmp_path
):
    """Issue 6's graceful stop: SIGTERM mid-optimisation writes a checkpoint of the generation it
    finished (whatever the interval) before the process exits; the rerun resumes from exactly there."""
    job = prepare_optimisation(settings, MARKET, frame(), START, END, workers=1)
    reference = run_optimisation(job, None)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    payload = json.dumps(overrides(pg))
    proc = _start(payload, script)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        progress = store.progress.get(job.key.task_id)
        if progress is not None and progress.generation >= 3 and progress.generation % INTERVAL == 1:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGTERM)  # the main process only, as Dagster or Kubernetes would
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "optimisation stopped after generation" in err
    saved = store.checkpoints.latest(job.key.as_mapping())
    stopped_at = store.progress.get(job.key.task_id).generation
    assert saved is not None and saved.generation == stopped_at, "the generation it finished is saved"
    proc = _start(payload, script)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    finished = json.loads(out.strip().splitlines()[-1])
    assert finished["resumed_from"] == saved.generation
    assert finished["fitness"] == reference.fitness.tolist() and finished["champion"] == reference.champion


def _processes_in_daemon(queue) -> None:  # type: ignore[no-untyped-def]
    from rof_pipelines.adapters.optimisation import evaluation_processes

    queue.put(evaluation_processes(None, 12))


def test_a_daemonic_step_process_scores_in_itself_instead_of_starting_a_pool():
    """A celery worker's prefork child is daemonic and may not start children: the GA there gets one
    evaluation process (its own), whatever the pool allows elsewhere."""
    import multiprocessing

    from rof_pipelines.adapters.optimisation import evaluation_processes

    assert evaluation_processes(None, 12) == min(12, os.cpu_count() or 1)
    assert evaluation_processes(1, 12) == 1
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_processes_in_daemon, args=(queue,), daemon=True)
    child.start()
    child.join(30)
    assert queue.get(timeout=5) == 1
