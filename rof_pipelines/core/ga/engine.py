"""The resumable NSGA-II driver around pygad.

Reproducibility by construction: every generation is one fresh ``pygad.GA`` (``num_generations=1``)
seeded with ``derive_seed(seed, generation)`` and started from the current population, and every other
random draw (initial population, immigrants) has its own derived seed. So generation g depends only on
(seed, g, population, fitness, adaptive state), which is exactly what a checkpoint stores: a run
resumed from generation g's checkpoint replays g+1.. bit for bit. Fitness is a pure function of
(genome, data), evaluated in input order, so 1 or N worker processes and cache hits cannot change a
result either.

pygad runs each generation: elitism through its NSGA-II sort (``keep_elitism``), offspring assembly and
reuse of the kept elites' fitness; the NSGA-II operators are passed to it as its custom-operator
callables, vectorised and drawing only from pygad's seeded generator - binary tournament on (front,
crowding distance), SBX crossover and polynomial mutation on the unit cube (pygad's built-ins loop per
gene in Python and made the serial part of a generation larger than its parallel part). pygad's
non-dominated sorting is replaced by a vectorised one that returns the same fronts (tested).

Objectives (all maximised inside the GA): total return, Sharpe, and minus the max drawdown, on the
validation part of the data (see :mod:`rof_pipelines.core.ga.fitness`).

Champion rule: among the first Pareto front (distinct genomes) of the final population, each objective
is min-max normalised over the front (an objective all members share counts as 1), and the member
nearest to the ideal point (1, 1, 1) wins - the balanced compromise, not an extreme of one objective.
Ties go to the higher Sharpe, then the higher return, then the smaller drawdown, then the smaller
genome (lexicographic), so the choice is deterministic.

Adaptation: the mutation probability shrinks (x0.8) after a generation that improved the front and
grows (x1.25) after one that did not, within [mutation_rate_min, mutation_rate_max]. The population
grows by ``resize_step`` random immigrants when diversity (mean normalised gene std) falls below
``diversity_low`` and shrinks by ``resize_step`` (the NSGA-II worst go) above ``diversity_high``,
within [min_population, max_population]. A front "improves" when a new member is not within
``min_delta`` (in each objective's own units) of being dominated by the best front so far; after
``patience`` generations without improvement the run stops early. Early generations
(< ``full_window_from_generation``) score on the most recent ``sample_fraction`` of the data; at the
switch the population is re-scored on the full data and the improvement history restarts.
"""

import logging
import multiprocessing
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from rof_pipelines.core.defaults import GA, ga_problem
from rof_pipelines.core.ga.fitness import FULL, SAMPLE, FitnessData, evaluate_genome
from rof_pipelines.core.ga.pool import GenomePool
from rof_pipelines.core.ga.space import Genome, SearchSpace, UnitGenome, derive_seed
from rof_pipelines.errors import Interrupted

OBJECTIVES = ("total_return", "sharpe", "max_drawdown")
CHECKPOINT_FORMAT = "rof.ga.checkpoint"
CHECKPOINT_VERSION = 1
Fitness = tuple[float, float, float]  # (return, sharpe, -drawdown): maximised

_quiet = logging.getLogger("rof_pipelines.pygad")
_quiet.setLevel(logging.ERROR)


@dataclass(frozen=True)
class GASettings:
    """The optimiser's knobs as plain values (``ab_tests.experiment.ga`` + state management); their
    defaults and limits are :data:`rof_pipelines.core.defaults.GA`, config.yaml's too."""

    generations: int = GA["generations"].default
    population_size: int = GA["population_size"].default
    mutation_rate: float = GA["mutation_rate"].default
    mutation_rate_min: float = GA["mutation_rate_min"].default
    mutation_rate_max: float = GA["mutation_rate_max"].default
    min_population: int = GA["min_population"].default
    max_population: int = GA["max_population"].default
    elitism: int = GA["elitism"].default
    diversity_low: float = GA["diversity_low"].default
    diversity_high: float = GA["diversity_high"].default
    resize_step: int = GA["resize_step"].default
    patience: int = GA["patience"].default
    min_delta: float = GA["min_delta"].default
    sample_fraction: float = GA["sample_fraction"].default
    full_window_from_generation: int = GA["full_window_from_generation"].default
    validation_fraction: float = GA["validation_fraction"].default
    seed: int = GA["seed"].default
    checkpoint_interval: int = GA["checkpoint_interval"].default
    islands: int = GA["islands"].default
    migration_interval: int = GA["migration_interval"].default
    migrants: int = GA["migrants"].default
    island_workers: int = GA["island_workers"].default

    def __post_init__(self) -> None:
        problem = ga_problem(self)
        if problem:
            raise ValueError(problem)

    @classmethod
    def from_config(cls, ga: Any, checkpoint_interval: int, **overrides: Any) -> "GASettings":
        """From a ``GAConfig``-like object; ``overrides`` win."""
        names = [f for f in cls.__dataclass_fields__ if f != "checkpoint_interval"]
        values = {name: getattr(ga, name) for name in names if hasattr(ga, name)}
        values["checkpoint_interval"] = checkpoint_interval
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def slice_for(self, generation: int) -> str:
        if self.sample_fraction < 1.0 and generation < self.full_window_from_generation:
            return SAMPLE
        return FULL


# --- checkpoints ------------------------------------------------------------------------------------


class CheckpointSink(Protocol):
    """Where a run keeps its checkpoints and reports progress (the adapter's state store)."""

    def latest(self) -> dict[str, Any] | None: ...

    def save(self, generation: int, payload: dict[str, Any], *, final: bool) -> None: ...

    def progress(self, report: "ProgressReport") -> None: ...


@dataclass(frozen=True)
class ProgressReport:
    generation: int
    total_generations: int
    best_fitness: float  # the best Sharpe in the population
    eta_seconds: float | None
    details: dict[str, Any]
    final: bool = False


class MemoryCheckpoints:
    """Checkpoints kept in a dict (tests, benchmarks, runs without a state store)."""

    def __init__(self) -> None:
        self.saved: dict[int, dict[str, Any]] = {}
        self.reports: list[ProgressReport] = []

    def latest(self) -> dict[str, Any] | None:
        return self.saved[max(self.saved)] if self.saved else None

    def save(self, generation: int, payload: dict[str, Any], *, final: bool) -> None:
        self.saved[generation] = payload

    def progress(self, report: ProgressReport) -> None:
        self.reports.append(report)


# --- Pareto utilities -----------------------------------------------------------------------------


def pareto_ranks(fitness: np.ndarray) -> np.ndarray:
    """Non-domination rank per row (0 = first front) for maximised objectives."""
    f = np.asarray(fitness, dtype=np.float64)
    n = f.shape[0]
    geq = (f[:, None, :] >= f[None, :, :]).all(axis=2)
    gt = (f[:, None, :] > f[None, :, :]).any(axis=2)
    dominates = geq & gt  # dominates[i, j]: i dominates j
    count = dominates.sum(axis=0)
    ranks = np.full(n, -1, dtype=np.int64)
    rank = 0
    current = np.flatnonzero(count == 0)
    while current.size:
        ranks[current] = rank
        count -= dominates[current].sum(axis=0)
        count[current] = -1
        current = np.flatnonzero(count == 0)
        rank += 1
    return ranks


def crowding(fitness: np.ndarray) -> np.ndarray:
    f = np.asarray(fitness, dtype=np.float64)
    n, m = f.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(f[:, k], kind="stable")
        span = f[order[-1], k] - f[order[0], k]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (f[order[2:], k] - f[order[:-2], k]) / span
    return distance


def ranks_and_crowding(fitness: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: its front (0 = first) and its crowding distance within that front."""
    f = np.asarray(fitness, dtype=np.float64)
    ranks = pareto_ranks(f)
    dist = np.zeros(f.shape[0])
    for r in np.unique(ranks):
        members = np.flatnonzero(ranks == r)
        dist[members] = crowding(f[members])
    return ranks, dist


def nsga2_order(fitness: np.ndarray) -> list[int]:
    """Indices best first: by front, then crowding (larger first), then index."""
    ranks, dist = ranks_and_crowding(fitness)
    return sorted(range(ranks.shape[0]), key=lambda i: (ranks[i], -dist[i], i))


def champion_index(population: Sequence[Genome], fitness: np.ndarray) -> int:
    """The documented champion rule (see the module docstring)."""
    f = np.asarray(fitness, dtype=np.float64)
    front = [int(i) for i in np.flatnonzero(pareto_ranks(f) == 0)]
    seen: dict[Genome, int] = {}
    for i in front:
        seen.setdefault(tuple(population[i]), i)
    members = list(seen.values())
    sub = f[members]
    low, high = sub.min(axis=0), sub.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    norm = np.where(high > low, (sub - low) / span, 1.0)
    distance = np.sqrt(((1.0 - norm) ** 2).sum(axis=1))
    best = min(
        range(len(members)),
        key=lambda j: (distance[j], -sub[j, 1], -sub[j, 0], -sub[j, 2], tuple(population[members[j]])),
    )
    return members[best]


def _improves(new_front: np.ndarray, reference: np.ndarray, min_delta: float) -> bool:
    """Some new point is not within ``min_delta`` of being dominated by the reference front."""
    if reference.size == 0:
        return True
    return any(not any(np.all(p <= q + min_delta) for q in reference) for p in new_front)


def _front(fitness: np.ndarray) -> np.ndarray:
    f = np.asarray(fitness, dtype=np.float64).reshape(-1, len(OBJECTIVES))
    return np.unique(f[pareto_ranks(f) == 0], axis=0) if f.size else f


# --- evaluation -----------------------------------------------------------------------------------

# fork: workers start in milliseconds with the parent's imports and compiled kernels, and only ever run
# pure numpy/numba code (no locks, no I/O), which is what makes forking a threaded parent safe here.
# Elsewhere spawn (workers import the package and receive the data once, pickled, at start).
DEFAULT_START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


class Evaluator:
    """Scores genomes in input order: cache first (genome + data fingerprint), then the process pool
    (or in-process with one worker). The cache is a bounded LRU."""

    def __init__(
        self,
        data: FitnessData,
        workers: int = 1,
        *,
        cache_size: int = 100_000,
        start_method: str | None = None,
    ) -> None:
        self.data = data
        self.workers = max(1, int(workers))
        self.cache_size = cache_size
        self.start_method = start_method or DEFAULT_START_METHOD
        self.cache: OrderedDict[tuple[Genome, str], Fitness] = OrderedDict()
        self.evaluations = 0
        self.cache_hits = 0
        # Every configuration this process scored, with its Sharpe (the full slice's when it has
        # one): the trials a later test must count (core.abtest's deflated Sharpe ratio).
        self.trials: dict[Genome, float] = {}
        self.full_trials: set[Genome] = set()  # the trials scored on the full slice
        self._pool: GenomePool | None = None
        self.pool_start_seconds = 0.0
        self._fingerprints = {name: data.fingerprint(name) for name in data.slices}

    def __enter__(self) -> "Evaluator":
        if self.workers > 1:
            if self.start_method == "fork":
                from rof_pipelines.core.ga.warmup import warm_once

                warm_once()
            self._pool = GenomePool(self.data, self.workers, self.start_method).start()
            self.pool_start_seconds = self._pool.start_seconds
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._pool is not None:
            self._pool.close(wait=exc_type is not None)  # a clean finish need not wait for exits
            self._pool = None

    def count_reused(self, n: int) -> None:
        """Genomes pygad scored from its own memory of the last generation (elites)."""
        self.cache_hits += n

    def trials_payload(self) -> list[list[Any]]:
        """The trials scored so far, for a checkpoint: [genome, Sharpe, scored on the full slice]."""
        return [[list(genome), sharpe, genome in self.full_trials] for genome, sharpe in self.trials.items()]

    def restore_trials(self, rows: Sequence[Sequence[Any]]) -> None:
        """A checkpoint's trials: a resumed run counts what was scored before it (the deflated Sharpe
        ratio's trial count would otherwise depend on whether, and where, the run was interrupted)."""
        for genome, sharpe, full in rows:
            key = tuple(genome)  # as decoded: integer genes stay integers (the ledger hashes them)
            self.trials[key] = float(sharpe)  # type: ignore[index]
            if full:
                self.full_trials.add(key)  # type: ignore[arg-type]

    def seed(self, units: Sequence[UnitGenome], fitness: Sequence[Fitness], slice_name: str) -> None:
        """Remember a checkpoint's scores (a resumed run does not re-score its population)."""
        fp = self._fingerprints[slice_name]
        for unit, value in zip(units, fitness, strict=True):
            self._remember((self.data.space.from_unit(unit), fp), tuple(value))  # type: ignore[arg-type]

    def _remember(self, key: tuple[Genome, str], value: Fitness) -> None:
        self.cache[key] = value
        self.cache.move_to_end(key)
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    def evaluate(
        self, units: Sequence[UnitGenome], slice_name: str, *, count_hits: bool = True
    ) -> list[Fitness]:
        """Fitness of each unit genome, in order; the cache keys on the decoded genome."""
        fp = self._fingerprints[slice_name]
        keys = [(self.data.space.from_unit(u), fp) for u in units]
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if missing:
            genomes = [k[0] for k in missing]
            if self._pool is None:
                results = [evaluate_genome(self.data, slice_name, g) for g in genomes]
            else:
                results = self._pool.evaluate(slice_name, genomes)
            for key, value in zip(missing, results, strict=True):
                self._remember(key, tuple(float(x) for x in value))  # type: ignore[arg-type]
                if slice_name == FULL or key[0] not in self.trials:
                    self.trials[key[0]] = float(value[1])
                if slice_name == FULL:
                    self.full_trials.add(key[0])
            self.evaluations += len(missing)
        if count_hits:
            self.cache_hits += len(keys) - len(missing)
        out = []
        for key in keys:
            self.cache.move_to_end(key)
            out.append(self.cache[key])
        return out


# --- the run --------------------------------------------------------------------------------------


@dataclass
class RunState:
    """What a checkpoint holds: enough to replay the next generation exactly."""

    generation: int
    population: list[UnitGenome]
    fitness: list[Fitness]
    slice_name: str
    mutation_rate: float
    stagnation: int
    reference_front: list[Fitness]
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluations: int = 0
    cache_hits: int = 0
    elapsed_seconds: float = 0.0
    stop_reason: str | None = None

    def to_payload(self, settings: GASettings) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "generation": self.generation,
            "population": [list(g) for g in self.population],
            "fitness": [list(f) for f in self.fitness],
            "slice": self.slice_name,
            "mutation_rate": self.mutation_rate,
            "stagnation": self.stagnation,
            "reference_front": [list(f) for f in self.reference_front],
            "history": self.history,
            "evaluations": self.evaluations,
            "cache_hits": self.cache_hits,
            "elapsed_seconds": self.elapsed_seconds,
            "stop_reason": self.stop_reason,
            # Every random draw of generation g + 1 is seeded from these alone (no carried RNG state).
            "rng": {
                "scheme": "sha256(seed|generation|purpose)[:4]",
                "seed": settings.seed,
                "next_pygad_seed": derive_seed(settings.seed, self.generation + 1, "pygad"),
                "next_immigrant_seed": derive_seed(settings.seed, self.generation + 1, "immigrants"),
            },
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "RunState":
        if payload.get("format") != CHECKPOINT_FORMAT or payload.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"not a {CHECKPOINT_FORMAT} v{CHECKPOINT_VERSION} checkpoint")
        return cls(
            generation=int(payload["generation"]),
            population=[tuple(float(x) for x in g) for g in payload["population"]],
            fitness=[tuple(float(x) for x in f) for f in payload["fitness"]],  # type: ignore[misc]
            slice_name=payload["slice"],
            mutation_rate=float(payload["mutation_rate"]),
            stagnation=int(payload["stagnation"]),
            reference_front=[tuple(float(x) for x in f) for f in payload["reference_front"]],  # type: ignore[misc]
            history=list(payload["history"]),
            evaluations=int(payload["evaluations"]),
            cache_hits=int(payload["cache_hits"]),
            elapsed_seconds=float(payload["elapsed_seconds"]),
            stop_reason=payload.get("stop_reason"),
        )


@dataclass
class GAResult:
    population: list[UnitGenome]  # what pygad evolves; ``genomes`` are their decoded values
    fitness: np.ndarray  # (n, 3) maximised: return, sharpe, -drawdown
    pareto: np.ndarray  # bool per row: on the first front
    champion: int  # row index
    history: list[dict[str, Any]]
    evaluations: int  # fitness computations in this process (a resumed run counts only its own)
    cache_hits: int
    generations_run: int
    stop_reason: str
    resumed_from: int | None
    wall_seconds: float
    space: SearchSpace
    trials: dict[Genome, float] = field(default_factory=dict)  # scored here: genome -> Sharpe
    full_trials: frozenset[Genome] = frozenset()  # the trials whose Sharpe is the full slice's

    @property
    def genomes(self) -> list[Genome]:
        return [self.space.from_unit(u) for u in self.population]

    @property
    def champion_genome(self) -> Genome:
        return self.space.from_unit(self.population[self.champion])

    def champion_objectives(self) -> dict[str, float]:
        return objectives_dict(self.fitness[self.champion])

    @property
    def flat(self) -> bool:
        """Every genome of the final population scores the same: nothing to choose between (under
        high costs typically no configuration trades at all), so no champion should be named."""
        fitness = np.asarray(self.fitness, dtype=np.float64)
        return bool(len(fitness)) and bool(np.all(np.ptp(fitness, axis=0) == 0))


def objectives_dict(fitness: Sequence[float]) -> dict[str, float]:
    """Maximised GA vector -> the metrics' own signs."""
    return {
        "total_return": float(fitness[0]),
        "sharpe": float(fitness[1]),
        "max_drawdown": -float(fitness[2]),
    }


def _stats(state: RunState, space: SearchSpace, seconds: float, evaluator: Evaluator) -> dict[str, Any]:
    f = np.asarray(state.fitness, dtype=np.float64)
    return {
        "generation": state.generation,
        "slice": state.slice_name,
        "population": len(state.population),
        "best_return": float(f[:, 0].max()),
        "mean_return": float(f[:, 0].mean()),
        "best_sharpe": float(f[:, 1].max()),
        "mean_sharpe": float(f[:, 1].mean()),
        "best_drawdown": float(-f[:, 2].max()),
        "mean_drawdown": float(-f[:, 2].mean()),
        "front_size": int((pareto_ranks(f) == 0).sum()),
        "mutation_rate": state.mutation_rate,
        "diversity": space.diversity(state.population),
        "seconds": seconds,
    }


def _fast_ga_class() -> type:
    """pygad.GA with a vectorised ``non_dominated_sorting`` (same fronts, same order, same layout:
    pygad's own is O(n^2) Python loops and dominated the run time; tests hold the two equal) and a
    cheaper ``best_solution``."""
    import pygad

    class FastGA(pygad.GA):  # type: ignore[misc, valid-type]
        def non_dominated_sorting(self, fitness: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
            f = np.asarray(fitness, dtype=np.float64)
            if f.ndim != 2:
                return super().non_dominated_sorting(fitness)
            ranks = pareto_ranks(f)
            fronts = []
            for r in range(int(ranks.max()) + 1 if ranks.size else 0):
                members = np.flatnonzero(ranks == r)
                front = np.empty((members.size, 2), dtype=object)
                for row, index in enumerate(members):
                    front[row, 0] = int(index)
                    front[row, 1] = fitness[index]
                fronts.append(front)
            return fronts, ranks

        def best_solution(self, pop_fitness: Any = None) -> tuple[np.ndarray, np.ndarray, int]:
            """Only pygad's own history lists read this here (no stop criteria, no saved solutions;
            the champion is :func:`champion_index`'s), yet pygad asks three times a generation and
            its answer costs a Python crowding sort, in the serial part of a run. The best Sharpe."""
            f = np.asarray(self.last_generation_fitness if pop_fitness is None else pop_fitness, np.float64)
            if f.ndim != 2:
                return super().best_solution(pop_fitness)
            best = int(np.argmax(f[:, 1]))
            return self.population[best].copy(), f[best], best

    return FastGA


_GA_CLASS: type | None = None
SBX_ETA = 15.0
MUTATION_ETA = 20.0


def _tournament(fitness: np.ndarray, num_parents: int, ga: Any) -> tuple[np.ndarray, np.ndarray]:
    """NSGA-II binary tournament: lower front wins, then larger crowding distance, then the first."""
    f = np.asarray(fitness, dtype=np.float64)
    ranks, crowd = ranks_and_crowding(f)
    rng = ga.numpy_random_generator
    a = rng.randint(0, f.shape[0], num_parents)
    b = rng.randint(0, f.shape[0], num_parents)
    a_wins = (ranks[a] < ranks[b]) | ((ranks[a] == ranks[b]) & (crowd[a] >= crowd[b]))
    chosen = np.where(a_wins, a, b)
    return np.array(ga.population[chosen], dtype=np.float64), chosen


def _sbx(parents: np.ndarray, offspring_size: tuple[int, int], ga: Any) -> np.ndarray:
    """Simulated binary crossover on the unit cube, each gene crossed with probability 1/2."""
    n, k = offspring_size
    rng = ga.numpy_random_generator
    rows = np.arange(n)
    p1 = parents[rows % parents.shape[0]].astype(np.float64)
    p2 = parents[(rows + 1) % parents.shape[0]].astype(np.float64)
    u = rng.random_sample((n, k))
    beta = np.where(u <= 0.5, (2.0 * u) ** (1.0 / (SBX_ETA + 1)), (0.5 / (1.0 - u)) ** (1.0 / (SBX_ETA + 1)))
    sign = np.where(rows % 2 == 0, 1.0, -1.0)[:, None]  # alternate the two SBX children
    child = 0.5 * ((1.0 + sign * beta) * p1 + (1.0 - sign * beta) * p2)
    cross = rng.random_sample((n, k)) < 0.5
    return np.clip(np.where(cross, child, p1), 0.0, 1.0)


def _polynomial(offspring: np.ndarray, ga: Any) -> np.ndarray:
    """Polynomial mutation on the unit cube; each gene mutates with the (adaptive) probability."""
    rng = ga.numpy_random_generator
    x = np.asarray(offspring, dtype=np.float64)
    mutate = rng.random_sample(x.shape) < float(ga.mutation_probability)
    u = rng.random_sample(x.shape)
    delta = np.where(
        u < 0.5,
        (2.0 * u) ** (1.0 / (MUTATION_ETA + 1)) - 1.0,
        1.0 - (2.0 * (1.0 - u)) ** (1.0 / (MUTATION_ETA + 1)),
    )
    return np.where(mutate, np.clip(x + delta, 0.0, 1.0), x)


def _one_generation(
    population: list[UnitGenome],
    space: SearchSpace,
    settings: GASettings,
    mutation_rate: float,
    seed: int,
    score: Callable[[list[UnitGenome], bool], list[Fitness]],
    on_reuse: Callable[[int], None] | None = None,
    fitness: Sequence[Fitness] | None = None,
) -> tuple[list[UnitGenome], list[Fitness]]:
    """pygad's NSGA-II for exactly one generation from ``population``, already scored (``fitness``,
    when the caller has it at hand)."""
    global _GA_CLASS
    if _GA_CLASS is None:
        _GA_CLASS = _fast_ga_class()
    n = len(population)

    def fitness_func(ga: Any, solutions: np.ndarray, indices: Any) -> list[list[float]]:
        units = [tuple(row) for row in np.asarray(solutions, dtype=np.float64).tolist()]
        # The first call re-reads the starting population, which is scored already: answered from
        # ``fitness`` (or the cache), not counted as hits. Later, pygad passes only rows it has no
        # fitness for; the elites it reused count as hits.
        offspring = ga.generations_completed > 0
        if not offspring and fitness is not None and indices is not None:
            rows = [int(i) for i in np.atleast_1d(indices)]
            if units == [population[i] for i in rows]:
                return [list(fitness[i]) for i in rows]
        if offspring and on_reuse is not None:
            on_reuse(n - len(solutions))
        return [list(f) for f in score(units, offspring)]

    ga = _GA_CLASS(
        num_generations=1,
        num_parents_mating=max(2, n // 2),
        fitness_func=fitness_func,
        fitness_batch_size=n,
        initial_population=np.array(population, dtype=np.float64),
        gene_type=float,
        gene_space={"low": 0.0, "high": 1.0},
        parent_selection_type=_tournament,
        crossover_type=_sbx,
        mutation_type=_polynomial,
        mutation_probability=mutation_rate,
        keep_elitism=min(settings.elitism, n - 2),
        random_seed=seed,
        suppress_warnings=True,
        logger=_quiet,
    )
    ga.run()
    new_population = [tuple(row) for row in np.asarray(ga.population, dtype=np.float64).tolist()]
    new_fitness = [tuple(row) for row in np.asarray(ga.last_generation_fitness, dtype=np.float64).tolist()]
    return new_population, new_fitness  # type: ignore[return-value]


def _checked_initial(
    initial: Sequence[UnitGenome], space: SearchSpace, settings: GASettings
) -> list[UnitGenome]:
    units = [tuple(float(x) for x in unit) for unit in initial]
    if not settings.min_population <= len(units) <= settings.max_population:
        raise ValueError(
            f"an initial population needs {settings.min_population} to {settings.max_population} "
            f"genomes (min_population..max_population), got {len(units)}"
        )
    for i, unit in enumerate(units):
        if len(unit) != len(space) or not all(0.0 <= x <= 1.0 for x in unit):
            raise ValueError(f"initial genome {i} must have {len(space)} unit values in [0, 1], got {unit}")
    return units


def optimise(
    data: FitnessData,
    settings: GASettings,
    *,
    workers: int = 1,
    checkpoints: CheckpointSink | None = None,
    on_generation: Callable[[dict[str, Any]], None] | None = None,
    start_method: str | None = None,
    stop_requested: Callable[[], bool] | None = None,
    initial: Sequence[UnitGenome] | None = None,
    initial_note: Mapping[str, Any] | None = None,
) -> GAResult:
    """Run (or resume from ``checkpoints``' newest) the optimisation and return the final population.

    ``stop_requested`` is asked after every generation; when it says yes (a SIGTERM, say) that
    generation is checkpointed, whatever the interval, and :class:`Interrupted` is raised, so a
    restart resumes exactly there.

    ``initial`` (unit genomes) replaces the random generation 0 of a fresh run, e.g. one seeded from
    what earlier tasks learned; ``initial_note`` is added to generation 0's history entry. A run
    that resumes from a checkpoint ignores both: the checkpoint already holds its population."""
    space = data.space
    started = time.perf_counter()
    payload = checkpoints.latest() if checkpoints is not None else None
    state = RunState.from_payload(payload) if payload is not None else None
    resumed_from = state.generation if state is not None else None
    base_evals = state.evaluations if state is not None else 0
    base_hits = state.cache_hits if state is not None else 0
    base_elapsed = state.elapsed_seconds if state is not None else 0.0

    with Evaluator(data, workers, start_method=start_method) as evaluator:

        def sync(s: RunState, since: float) -> None:
            s.evaluations = base_evals + evaluator.evaluations
            s.cache_hits = base_hits + evaluator.cache_hits
            s.elapsed_seconds = base_elapsed + (time.perf_counter() - since)

        def report(s: RunState, final: bool) -> None:
            per_gen = s.elapsed_seconds / max(1, s.generation + 1)
            left = 0 if final else max(0, settings.generations - s.generation)
            if checkpoints is not None:
                checkpoints.progress(
                    ProgressReport(
                        generation=s.generation,
                        total_generations=settings.generations,
                        best_fitness=float(np.max(np.asarray(s.fitness)[:, 1])),
                        eta_seconds=per_gen * left,
                        details={**s.history[-1], "evaluations": s.evaluations, "cache_hits": s.cache_hits},
                        final=final,
                    )
                )
            if on_generation is not None:
                on_generation({**s.history[-1], "eta_seconds": per_gen * left, "final": final})

        def checkpoint(s: RunState, final: bool) -> None:
            if checkpoints is not None:
                payload = s.to_payload(settings)
                payload["trials"] = evaluator.trials_payload()
                checkpoints.save(s.generation, payload, final=final)

        def after_generation(s: RunState, final: bool) -> None:
            on_interval = s.generation % settings.checkpoint_interval == 0
            if final or on_interval:
                checkpoint(s, final)
            report(s, final=final)
            if not final and stop_requested is not None and stop_requested():
                if not on_interval:
                    checkpoint(s, False)
                raise Interrupted(s.generation, saved=checkpoints is not None)

        if state is None:
            t0 = time.perf_counter()
            if initial is None:
                rng = np.random.default_rng(derive_seed(settings.seed, 0, "init"))
                population = space.random_units(rng, settings.population_size)
            else:
                population = _checked_initial(initial, space, settings)
            slice_name = settings.slice_for(0)
            fitness = evaluator.evaluate(population, slice_name)
            state = RunState(
                generation=0,
                population=population,
                fitness=fitness,
                slice_name=slice_name,
                mutation_rate=settings.mutation_rate,
                stagnation=0,
                reference_front=[tuple(f) for f in _front(np.asarray(fitness))],  # type: ignore[misc]
            )
            state.history.append(
                {**_stats(state, space, time.perf_counter() - t0, evaluator), **(initial_note or {})}
            )
            sync(state, started)
            after_generation(state, final=False)
        else:
            evaluator.restore_trials(payload.get("trials", []) if payload is not None else [])
            if state.stop_reason is None:
                evaluator.seed(state.population, state.fitness, state.slice_name)

        while state.stop_reason is None:
            t0 = time.perf_counter()
            g = state.generation + 1
            slice_name = settings.slice_for(g)
            population, fitness = list(state.population), list(state.fitness)
            reference = np.asarray(state.reference_front, dtype=np.float64).reshape(-1, len(OBJECTIVES))
            stagnation = state.stagnation
            if slice_name != state.slice_name:  # sample -> full window: re-score, restart the history
                fitness = evaluator.evaluate(population, slice_name)
                reference = _front(np.asarray(fitness))
                stagnation = 0

            diversity = space.diversity(population)
            size = len(population)
            if diversity < settings.diversity_low and size < settings.max_population:
                extra = min(settings.resize_step, settings.max_population - size)
                rng = np.random.default_rng(derive_seed(settings.seed, g, "immigrants"))
                immigrants = space.random_units(rng, extra)
                population += immigrants
                fitness += evaluator.evaluate(immigrants, slice_name)
            elif diversity > settings.diversity_high and size > settings.min_population:
                keep_n = max(settings.min_population, size - settings.resize_step)
                keep = sorted(nsga2_order(np.asarray(fitness))[:keep_n])
                population = [population[i] for i in keep]
                fitness = [fitness[i] for i in keep]

            def score(units: list[UnitGenome], count_hits: bool, _s: str = slice_name) -> list[Fitness]:
                return evaluator.evaluate(units, _s, count_hits=count_hits)

            population, fitness = _one_generation(
                population,
                space,
                settings,
                state.mutation_rate,
                derive_seed(settings.seed, g, "pygad"),
                score,
                evaluator.count_reused,
                fitness,
            )
            front = _front(np.asarray(fitness))
            improved = _improves(front, reference, settings.min_delta)
            if improved:
                reference = _front(np.vstack([reference, front])) if reference.size else front
                stagnation = 0
                rate = max(settings.mutation_rate_min, state.mutation_rate * 0.8)
            else:
                stagnation += 1
                rate = min(settings.mutation_rate_max, state.mutation_rate * 1.25)
            stop = None
            if g >= settings.generations:
                stop = "generations"
            elif stagnation >= settings.patience and slice_name == FULL:
                stop = "early_stopping"
            state = RunState(
                generation=g,
                population=population,
                fitness=fitness,
                slice_name=slice_name,
                mutation_rate=rate,
                stagnation=stagnation,
                reference_front=[tuple(float(x) for x in row) for row in reference],  # type: ignore[misc]
                history=state.history,
                stop_reason=stop,
            )
            state.history.append(
                {**_stats(state, space, time.perf_counter() - t0, evaluator), "improved": improved}
            )
            sync(state, started)
            after_generation(state, final=stop is not None)

    fitness_arr = np.asarray(state.fitness, dtype=np.float64)
    return GAResult(
        population=list(state.population),
        fitness=fitness_arr,
        pareto=pareto_ranks(fitness_arr) == 0,
        champion=champion_index([space.from_unit(u) for u in state.population], fitness_arr),
        history=state.history,
        evaluations=evaluator.evaluations,
        cache_hits=evaluator.cache_hits,
        generations_run=state.generation,
        stop_reason=state.stop_reason or "generations",
        resumed_from=resumed_from,
        wall_seconds=time.perf_counter() - started,
        space=space,
        trials=dict(evaluator.trials),
        full_trials=frozenset(evaluator.full_trials),
    )
