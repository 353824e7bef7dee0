"""The GA as islands: K sub-populations evolved apart, exchanging their best genomes every M
generations along a ring (island i sends to island (i + 1) % K, replacing the receiver's worst).

Each island runs the ordinary engine (:func:`~rof_pipelines.core.ga.engine.optimise`) for one *epoch*
of M generations, started from a checkpoint-shaped state: the island's state at the end of the last
epoch with the neighbour's emigrants in it. Nothing is shared between islands but those states, and
every random draw of an island-epoch is seeded from (seed, island, epoch) and the global generation,
so an island-epoch is a pure function of (data, settings, island, epoch, its start state). Hence the
same seed gives the same champion and front whatever the order the islands of an epoch run in, and
whichever process or machine runs them.

Epochs are numbered from 1; "epoch 0" is the initial population (the single GA's own generation 0
draw, seeds included, dealt round robin to the islands). Epoch e ends at generation min(e * M,
generations); there are ceil(generations / M) epochs, and a migration before every epoch but the first.
An island that stopped early (``patience``) stays stopped: it still sends and receives migrants.
"""

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from rof_pipelines.core.defaults import island_min_population, island_sizes
from rof_pipelines.core.ga.engine import (
    CheckpointSink,
    GAResult,
    GASettings,
    ProgressReport,
    champion_index,
    nsga2_order,
    optimise,
    pareto_ranks,
)
from rof_pipelines.core.ga.fitness import FitnessData
from rof_pipelines.core.ga.seeding import seeded_units
from rof_pipelines.core.ga.space import Genome, SearchSpace, UnitGenome, derive_seed

ISLAND_FORMAT = "rof.ga.island_epoch"
ISLAND_VERSION = 1


@dataclass(frozen=True)
class IslandPlan:
    """How a run is cut into islands and epochs (fixed by the settings alone)."""

    islands: int
    epochs: int
    migration_interval: int
    migrants: int
    generations: int
    sizes: tuple[int, ...]

    @classmethod
    def from_settings(cls, settings: GASettings) -> "IslandPlan":
        return cls(
            islands=settings.islands,
            epochs=math.ceil(settings.generations / settings.migration_interval),
            migration_interval=settings.migration_interval,
            migrants=settings.migrants,
            generations=settings.generations,
            sizes=tuple(island_sizes(settings.population_size, settings.islands)),
        )

    def epoch_end(self, epoch: int) -> int:
        """The global generation epoch ``epoch`` (1-based) ends at."""
        if not 1 <= epoch <= self.epochs:
            raise ValueError(f"epoch must be 1..{self.epochs}, got {epoch}")
        return min(epoch * self.migration_interval, self.generations)

    def sender(self, island: int) -> int:
        """The island whose emigrants ``island`` receives (the ring i -> i + 1)."""
        return (island - 1) % self.islands


def island_seed(base: int, island: int, epoch: int) -> int:
    """The engine seed of one island-epoch: from the base seed, the island and the epoch only."""
    return derive_seed(base, "island", island, epoch)


def island_settings(settings: GASettings, island: int, epoch: int) -> GASettings:
    """The engine's settings for one island-epoch: the island's share of the population bounds, the
    epoch's last generation, the island-epoch's seed."""
    plan = IslandPlan.from_settings(settings)
    size = plan.sizes[island]
    return replace(
        settings,
        islands=1,
        population_size=size,
        min_population=island_min_population(settings),
        max_population=max(size, -(-settings.max_population // settings.islands)),
        generations=plan.epoch_end(epoch),
        seed=island_seed(settings.seed, island, epoch),
    )


def initial_populations(
    space: SearchSpace, settings: GASettings, seeds: Sequence[Mapping[str, Any]] = ()
) -> list[list[UnitGenome]]:
    """The single GA's initial population (same seed, same draw, seeds first), dealt round robin so
    the seeds spread over the islands."""
    units = seeded_units(space, seeds, settings)
    return [units[i :: settings.islands] for i in range(settings.islands)]


@dataclass(frozen=True)
class IslandEpoch:
    """One island's state at the end of one epoch, with what computing it cost and scored."""

    island: int
    epoch: int
    state: dict[str, Any]  # the engine's checkpoint payload at the epoch's last generation
    trials: dict[Genome, float] = field(default_factory=dict)
    full_trials: frozenset[Genome] = frozenset()
    evaluations: int = 0
    cache_hits: int = 0
    wall_seconds: float = 0.0

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": ISLAND_FORMAT,
            "version": ISLAND_VERSION,
            "island": self.island,
            "epoch": self.epoch,
            "state": self.state,
            "trials": [
                [list(genome), sharpe, genome in self.full_trials] for genome, sharpe in self.trials.items()
            ],
            "evaluations": self.evaluations,
            "cache_hits": self.cache_hits,
            "wall_seconds": self.wall_seconds,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> "IslandEpoch":
        if payload.get("format") != ISLAND_FORMAT or payload.get("version") != ISLAND_VERSION:
            raise ValueError(f"not a {ISLAND_FORMAT} v{ISLAND_VERSION} payload")
        trials = {tuple(genome): float(sharpe) for genome, sharpe, _ in payload["trials"]}
        full = frozenset(tuple(genome) for genome, _, is_full in payload["trials"] if is_full)
        return cls(
            island=int(payload["island"]),
            epoch=int(payload["epoch"]),
            state=dict(payload["state"]),
            trials=trials,  # type: ignore[arg-type]
            full_trials=full,  # type: ignore[arg-type]
            evaluations=int(payload["evaluations"]),
            cache_hits=int(payload["cache_hits"]),
            wall_seconds=float(payload["wall_seconds"]),
        )

    @property
    def population(self) -> list[UnitGenome]:
        return [tuple(float(x) for x in unit) for unit in self.state["population"]]

    @property
    def fitness(self) -> np.ndarray:
        return np.asarray(self.state["fitness"], dtype=np.float64).reshape(-1, 3)


# --- migration ------------------------------------------------------------------------------------


def emigrants(state: Mapping[str, Any], migrants: int) -> list[tuple[list[float], list[float]]]:
    """An island's ``migrants`` best (NSGA-II order: front, crowding, then index), with their fitness."""
    order = nsga2_order(np.asarray(state["fitness"], dtype=np.float64))[:migrants]
    return [(list(state["population"][i]), list(state["fitness"][i])) for i in order]


def with_immigrants(receiver: Mapping[str, Any], sender: Mapping[str, Any], migrants: int) -> dict[str, Any]:
    """The receiver's state with its ``migrants`` worst replaced, slot by slot, by the sender's best
    (their fitness travels with them: same data, same slice), ready to start the next epoch."""
    if receiver["slice"] != sender["slice"]:
        raise ValueError(
            f"islands on different slices ({receiver['slice']}, {sender['slice']}) cannot migrate"
        )
    population = [list(unit) for unit in receiver["population"]]
    fitness = [list(f) for f in receiver["fitness"]]
    if migrants > 0:
        worst = sorted(nsga2_order(np.asarray(fitness, dtype=np.float64))[-migrants:])
        for slot, (unit, value) in zip(worst, emigrants(sender, migrants), strict=True):
            population[slot], fitness[slot] = unit, value
    stop = receiver.get("stop_reason")
    return {
        **receiver,
        "population": population,
        "fitness": fitness,
        "stop_reason": None if stop == "generations" else stop,  # the epoch's end, not the run's
    }


def epoch_start(
    settings: GASettings,
    island: int,
    epoch: int,
    initial: Sequence[Sequence[UnitGenome]] | Mapping[int, Sequence[UnitGenome]],
    previous: Mapping[int, "IslandEpoch"],
) -> dict[str, Any]:
    """What island-epoch (``island``, ``epoch``) starts from: its share of the initial population
    (epoch 1), else its own last state with the emigrants of its neighbour (``previous``: the
    islands' results of epoch ``epoch - 1`` by island)."""
    if epoch == 1:
        return {"initial": [list(unit) for unit in initial[island]]}
    plan = IslandPlan.from_settings(settings)
    own, sender = previous[island], previous[plan.sender(island)]
    return {"state": with_immigrants(own.state, sender.state, plan.migrants)}


class _EpochSink:
    """The engine's checkpoint sink for one island-epoch: the epoch's own checkpoints when ``inner``
    holds one (a retried step resumes mid-epoch), else the epoch's start state; remembers the newest
    state it saw (the epoch's result)."""

    def __init__(self, inner: CheckpointSink | None, start: dict[str, Any] | None) -> None:
        self.inner = inner
        self.start = start
        self.current: dict[str, Any] | None = start

    def latest(self) -> dict[str, Any] | None:
        found = self.inner.latest() if self.inner is not None else None
        self.current = found if found is not None else self.start
        return self.current

    def save(self, generation: int, payload: dict[str, Any], *, final: bool) -> None:
        self.current = payload
        if self.inner is not None:
            self.inner.save(generation, payload, final=final)

    def progress(self, report: ProgressReport) -> None:
        if self.inner is not None:
            self.inner.progress(report)


def run_island_epoch(
    data: FitnessData,
    settings: GASettings,
    island: int,
    epoch: int,
    start: Mapping[str, Any],
    *,
    workers: int = 1,
    checkpoints: CheckpointSink | None = None,
    on_generation: Callable[[dict[str, Any]], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
    start_method: str | None = None,
) -> IslandEpoch:
    """One island for one epoch (``start`` from :func:`epoch_start`), checkpointed into
    ``checkpoints`` (which must be this island-epoch's own) like any run of the engine."""
    sink = _EpochSink(checkpoints, start.get("state"))
    initial = start.get("initial")
    result = optimise(
        data,
        island_settings(settings, island, epoch),
        workers=workers,
        checkpoints=sink,
        on_generation=on_generation,
        start_method=start_method,
        stop_requested=stop_requested,
        initial=[tuple(unit) for unit in initial] if initial is not None else None,
        initial_note={"island": island},
    )
    assert sink.current is not None  # optimise saves the final generation or resumed a stored one
    return IslandEpoch(
        island=island,
        epoch=epoch,
        state=sink.current,
        trials=dict(result.trials),
        full_trials=result.full_trials,
        evaluations=result.evaluations,
        cache_hits=result.cache_hits,
        wall_seconds=result.wall_seconds,
    )


# --- the merge ------------------------------------------------------------------------------------


def _merged_history(finals: Sequence[IslandEpoch]) -> list[dict[str, Any]]:
    """Per generation, the islands' statistics combined (best of bests, population-weighted means)."""
    by_generation: dict[int, list[dict[str, Any]]] = {}
    for final in finals:
        for entry in final.state["history"]:
            by_generation.setdefault(int(entry["generation"]), []).append(entry)
    history = []
    for generation in sorted(by_generation):
        entries = by_generation[generation]
        sizes = np.array([e["population"] for e in entries], dtype=np.float64)

        def mean(name: str, _entries: list[dict[str, Any]] = entries, _sizes: np.ndarray = sizes) -> float:
            return float(np.dot([e[name] for e in _entries], _sizes) / _sizes.sum())

        history.append(
            {
                "generation": generation,
                "slice": entries[0]["slice"],
                "islands": len(entries),
                "population": int(sizes.sum()),
                "best_return": max(e["best_return"] for e in entries),
                "mean_return": mean("mean_return"),
                "best_sharpe": max(e["best_sharpe"] for e in entries),
                "mean_sharpe": mean("mean_sharpe"),
                "best_drawdown": min(e["best_drawdown"] for e in entries),
                "mean_drawdown": mean("mean_drawdown"),
                "front_size": sum(int(e["front_size"]) for e in entries),  # of the islands' own fronts
                "mutation_rate": mean("mutation_rate"),
                "diversity": mean("diversity"),
                "seconds": max(e["seconds"] for e in entries),
            }
        )
    return history


def merge_islands(space: SearchSpace, results: Iterable[IslandEpoch]) -> GAResult:
    """The islands' last epochs as one result of the single GA's shape: the final population (islands
    in index order), its Pareto front and champion (the engine's rules), and the trials and costs of
    every island-epoch in ``results``."""
    results = sorted(results, key=lambda r: (r.epoch, r.island))
    last = max(r.epoch for r in results)
    finals = sorted((r for r in results if r.epoch == last), key=lambda r: r.island)
    population = [unit for final in finals for unit in final.population]
    fitness = np.vstack([final.fitness for final in finals])
    trials: dict[Genome, float] = {}
    full: set[Genome] = set()
    for r in results:  # a full-slice score wins; otherwise the first (in epoch, island order)
        for genome, sharpe in r.trials.items():
            if genome in r.full_trials and genome not in full:
                trials[genome] = sharpe
                full.add(genome)
            elif genome not in trials:
                trials[genome] = sharpe
    reasons = {final.state.get("stop_reason") for final in finals}
    return GAResult(
        population=population,
        fitness=fitness,
        pareto=pareto_ranks(fitness) == 0,
        champion=champion_index([space.from_unit(u) for u in population], fitness),
        history=_merged_history(finals),
        evaluations=sum(r.evaluations for r in results),
        cache_hits=sum(r.cache_hits for r in results),
        generations_run=max(int(final.state["generation"]) for final in finals),
        stop_reason="generations" if "generations" in reasons else "early_stopping",
        resumed_from=None,
        wall_seconds=sum(r.wall_seconds for r in results),
        space=space,
        trials=trials,
        full_trials=frozenset(full),
    )


def optimise_islands(
    data: FitnessData,
    settings: GASettings,
    seeds: Sequence[Mapping[str, Any]] = (),
    *,
    workers: int = 1,
    order: Callable[[int, list[int]], Sequence[int]] | None = None,
) -> GAResult:
    """Every island-epoch in this process, epoch by epoch (``order(epoch, islands)`` may reorder an
    epoch's islands: the result must not change). What the Dagster graph runs as separate steps."""
    initial = initial_populations(data.space, settings, seeds)
    plan = IslandPlan.from_settings(settings)
    done: list[IslandEpoch] = []
    previous: dict[int, IslandEpoch] = {}
    for epoch in range(1, plan.epochs + 1):
        islands = list(range(plan.islands))
        current: dict[int, IslandEpoch] = {}
        for island in order(epoch, islands) if order is not None else islands:
            start = epoch_start(settings, island, epoch, initial, previous)
            current[island] = run_island_epoch(data, settings, island, epoch, start, workers=workers)
        done.extend(current.values())
        previous = current
    return merge_islands(data.space, done)
