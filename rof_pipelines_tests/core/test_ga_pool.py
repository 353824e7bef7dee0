"""The GA's worker processes: same scores as in-process with any number of workers and either start
method, a worker's exception reaches the caller with its type, and a dead worker is reported (with
its pid and exit code) instead of hanging the run."""

import os
import signal

import numpy as np
import pytest

from rof_pipelines.core.ga import pool as pool_module
from rof_pipelines.core.ga.fitness import FULL, SAMPLE, build_fitness_data, evaluate_genome
from rof_pipelines.core.ga.pool import GenomePool
from rof_pipelines.core.rl.agent import RLParams
from rof_pipelines.errors import DataValidationError, WorkerLost
from rof_pipelines_tests.core.test_ga import SMALL_SPACE, planted_frame


@pytest.fixture(scope="module")
def data():
    return build_fitness_data(planted_frame(1200), RLParams(episodes=3), SMALL_SPACE, sample_fraction=0.6)


@pytest.fixture(scope="module")
def genomes():
    rng = np.random.default_rng(3)
    return [SMALL_SPACE.from_unit(u) for u in SMALL_SPACE.random_units(rng, 13)]


@pytest.mark.parametrize(("workers", "start_method"), [(1, "fork"), (3, "fork"), (2, "spawn")])
def test_workers_score_exactly_like_the_parent(data, genomes, workers, start_method):
    expected = {name: [evaluate_genome(data, name, g) for g in genomes] for name in (SAMPLE, FULL)}
    pool = GenomePool(data, workers, start_method).start()
    try:
        for _ in range(2):  # batches reuse the workers (and their caches)
            for name in (SAMPLE, FULL):
                assert pool.evaluate(name, genomes) == expected[name]
        assert pool.evaluate(FULL, []) == []
    finally:
        pool.close()


def test_a_workers_exception_reaches_the_caller_with_its_type_and_traceback(data, genomes):
    broken = build_fitness_data(planted_frame(1200).drop(columns=["macd_hist"]), data.base, SMALL_SPACE)
    needs_macd = [g for g in genomes if SMALL_SPACE.decode(g, data.base).params.bins.macd_levels > 0]
    assert needs_macd
    pool = GenomePool(broken, 2, "fork").start()
    try:
        with pytest.raises(DataValidationError, match="no column for feature 'macd'") as caught:
            pool.evaluate(FULL, needs_macd)
        assert any("raised in a GA worker process" in note for note in caught.value.__notes__)
    finally:
        pool.close()


def test_a_worker_killed_before_a_batch_is_reported_not_waited_for(data, genomes):
    pool = GenomePool(data, 2, "fork").start()
    victim = pool._procs[0]
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(timeout=5)
    with pytest.raises(WorkerLost, match=rf"process {victim.pid} died \(exit code -9\)"):
        pool.evaluate(FULL, genomes)


def test_a_worker_dying_mid_batch_is_reported_with_its_exit_code(data, genomes, monkeypatch):
    poison = genomes[5]

    def dies_on_poison(fitness_data, slice_name, genome):
        if genome == poison:
            os._exit(3)
        return evaluate_genome(fitness_data, slice_name, genome)

    monkeypatch.setattr(pool_module, "evaluate_genome", dies_on_poison)  # inherited by the fork
    pool = GenomePool(data, 2, "fork").start()
    workers = list(pool._procs)
    with pytest.raises(WorkerLost, match=r"died \(exit code 3\).*resumes from its newest checkpoint"):
        pool.evaluate(FULL, genomes)
    assert [p.is_alive() for p in workers] == [False, False]  # the pool closed itself
