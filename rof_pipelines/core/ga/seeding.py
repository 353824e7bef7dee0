"""Warm-starting the GA (meta / transfer learning) without I/O: seeds placed in the engine's own
initial population, the seeded run, and how many generations a run needed to reach a target."""

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from rof_pipelines.core.ga.engine import CheckpointSink, GAResult, GASettings, optimise
from rof_pipelines.core.ga.fitness import FitnessData
from rof_pipelines.core.ga.space import SearchSpace, UnitGenome, derive_seed


def seeded_units(
    space: SearchSpace, seeds: Sequence[Mapping[str, Any]], settings: GASettings
) -> list[UnitGenome]:
    """The engine's own random initial population (same seed, same draw) with its first members
    replaced by the seeds; a gene a seed lacks keeps its random value, values clamp to today's ranges."""
    rng = np.random.default_rng(derive_seed(settings.seed, 0, "init"))
    units = space.random_units(rng, settings.population_size)
    for i, seed in enumerate(list(seeds)[: settings.population_size]):
        row = list(units[i])
        for j, gene in enumerate(space.genes):
            if gene.name in seed:
                row[j] = gene.to_unit(gene.canonical(seed[gene.name]))
        units[i] = tuple(row)
    return units


def run_seeded(
    data: FitnessData,
    settings: GASettings,
    seeds: Sequence[Mapping[str, Any]] = (),
    *,
    workers: int = 1,
    checkpoints: CheckpointSink | None = None,
    on_generation: Callable[[dict[str, Any]], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> GAResult:
    """:func:`optimise`, with ``seeds`` in the initial population of a fresh run (a run with a
    checkpoint resumes as ever: generation 0 is checkpointed like any other, so a restart resumes
    the seeded run, not a cold one). Without seeds this is exactly the cold run."""
    return optimise(
        data,
        settings,
        workers=workers,
        checkpoints=checkpoints,
        on_generation=on_generation,
        stop_requested=stop_requested,
        initial=seeded_units(data.space, seeds, settings) if seeds else None,
        initial_note={"seeded": len(seeds)},
    )


def generations_to_reach(history: Sequence[Mapping[str, Any]], target_sharpe: float) -> int | None:
    """First generation whose best Sharpe reaches ``target_sharpe`` (None: never): how long a run
    took to get as good as another run's champion. Comparable between runs only on one slice, so
    measure with ``sample_fraction`` 1 (or after ``full_window_from_generation``)."""
    for entry in history:
        if entry.get("best_sharpe", -math.inf) >= target_sharpe - 1e-12:
            return int(entry["generation"])
    return None
