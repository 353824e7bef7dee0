"""The island GA's core: the plan, migration along the ring, and determinism whatever the order and
the process the island-epochs run in."""

import multiprocessing

import numpy as np
import pytest

from rof_pipelines.core.ga.engine import GASettings, MemoryCheckpoints, nsga2_order
from rof_pipelines.core.ga.fitness import build_fitness_data
from rof_pipelines.core.ga.islands import (
    IslandEpoch,
    IslandPlan,
    epoch_start,
    initial_populations,
    island_settings,
    merge_islands,
    optimise_islands,
    run_island_epoch,
    with_immigrants,
)
from rof_pipelines.core.rl.agent import RLParams
from rof_pipelines.settings import Settings
from rof_pipelines_tests.core.test_ga import SMALL_SPACE, planted_frame

ISLANDS = GASettings(
    generations=5,
    population_size=16,
    min_population=8,
    max_population=24,
    elitism=2,
    sample_fraction=0.6,
    full_window_from_generation=2,
    patience=50,
    checkpoint_interval=2,
    seed=11,
    islands=2,
    migration_interval=2,
    migrants=2,
)


@pytest.fixture(scope="module")
def data():
    frame = planted_frame(n=1500)
    return build_fitness_data(
        frame, RLParams(episodes=4), SMALL_SPACE, sample_fraction=ISLANDS.sample_fraction
    )


@pytest.fixture(scope="module")
def reference(data):
    return optimise_islands(data, ISLANDS)


def front(result) -> list:
    return sorted(tuple(row) for row in result.fitness[result.pareto].tolist())


def same_result(a, b) -> None:
    assert a.population == b.population
    assert np.array_equal(a.fitness, b.fitness)
    assert a.champion_genome == b.champion_genome and front(a) == front(b)


def test_the_plan_cuts_generations_into_epochs_and_the_population_into_islands():
    plan = IslandPlan.from_settings(ISLANDS)
    assert (plan.epochs, plan.sizes) == (3, (8, 8))
    assert [plan.epoch_end(e) for e in (1, 2, 3)] == [2, 4, 5]
    assert [plan.sender(i) for i in range(2)] == [1, 0]
    one = island_settings(ISLANDS, 1, 2)
    assert (one.islands, one.population_size, one.generations) == (1, 8, 4)
    assert one.seed != island_settings(ISLANDS, 0, 2).seed != island_settings(ISLANDS, 1, 3).seed


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"islands": 5}, "each island needs at least 4"),
        ({"migrants": 4}, r"migrants \(4\) must be below the smallest island population \(4"),
    ],
)
def test_island_knobs_are_checked_with_their_numbers(changes, message):
    values = {**ISLANDS.to_dict(), **changes}
    with pytest.raises(ValueError, match=message):
        GASettings(**values)
    ga = {k: v for k, v in values.items() if k != "checkpoint_interval"}
    with pytest.raises(ValueError, match=message):
        Settings(ab_tests={"experiment": {"ga": ga}})


def test_migration_moves_exactly_the_senders_best_into_the_receivers_worst(data):
    initial = initial_populations(data.space, ISLANDS, ())
    first = {
        i: run_island_epoch(data, ISLANDS, i, 1, epoch_start(ISLANDS, i, 1, initial, {})) for i in (0, 1)
    }
    for receiver, sender in ((0, 1), (1, 0)):
        own, other = first[receiver].state, first[sender].state
        moved = with_immigrants(own, other, ISLANDS.migrants)
        best = nsga2_order(np.asarray(other["fitness"]))[: ISLANDS.migrants]
        worst = sorted(nsga2_order(np.asarray(own["fitness"]))[-ISLANDS.migrants :])
        changed = [
            i for i, (a, b) in enumerate(zip(own["population"], moved["population"], strict=True)) if a != b
        ]
        assert changed == worst and len(moved["population"]) == len(own["population"])
        assert [moved["population"][i] for i in worst] == [other["population"][i] for i in best]
        assert [moved["fitness"][i] for i in worst] == [other["fitness"][i] for i in best]
        assert moved["stop_reason"] is None and own["stop_reason"] == "generations"
    assert with_immigrants(own, other, 0)["population"] == own["population"]


def test_same_seed_same_champion_and_front_whatever_the_order_of_the_islands(data, reference):
    reversed_order = optimise_islands(data, ISLANDS, order=lambda epoch, islands: islands[::-1])
    same_result(reference, reversed_order)
    assert reference.generations_run == ISLANDS.generations
    assert len(reference.population) == len(reference.fitness) and reference.trials


def test_a_changed_seed_changes_the_result(data, reference):
    other = optimise_islands(data, GASettings(**{**ISLANDS.to_dict(), "seed": 12}))
    assert other.population != reference.population


def _island_epoch(args) -> dict:
    data, settings, island, epoch, start = args
    return run_island_epoch(data, settings, island, epoch, start).to_payload()


def test_island_epochs_in_separate_processes_give_the_same_result(data, reference):
    initial = initial_populations(data.space, ISLANDS, ())
    plan = IslandPlan.from_settings(ISLANDS)
    done, previous = [], {}
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        for epoch in range(1, plan.epochs + 1):
            starts = [epoch_start(ISLANDS, i, epoch, initial, previous) for i in range(plan.islands)]
            payloads = pool.map(_island_epoch, [(data, ISLANDS, i, epoch, s) for i, s in enumerate(starts)])
            previous = {p["island"]: IslandEpoch.from_payload(p) for p in payloads}
            done.extend(previous.values())
    same_result(reference, merge_islands(data.space, done))


def test_an_island_epoch_resumes_from_its_own_checkpoint(data):
    initial = initial_populations(data.space, ISLANDS, ())
    start = epoch_start(ISLANDS, 0, 1, initial, {})
    sink = MemoryCheckpoints()
    whole = run_island_epoch(data, ISLANDS, 0, 1, start, checkpoints=sink)
    again = run_island_epoch(data, ISLANDS, 0, 1, start, checkpoints=sink)
    assert again.state == whole.state and again.evaluations == 0 < whole.evaluations
