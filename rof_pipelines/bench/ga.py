"""GA benchmark: ``rof bench ga --workers K``. Population 50 x 20 generations (no early stopping) on the
training part of 7 days of 1-minute bars for one market, with 1 worker and with K workers, alternated
``repeats`` times in the same run; reports evaluations/s, seconds per generation, peak memory and the
speedup, and checks that every run found the same champion and front (they must: fitness is a pure
function of genome and data).

The machine is shared and its speed drifts by tens of percent between seconds, so one pair of runs
can show almost any ratio. Alternating the two and keeping each one's fastest run (the least
disturbed; what ``timeit`` does) compares like with like; the median ratio of the pairs is printed
too."""

import functools
import hashlib
import json
import multiprocessing
import resource
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from rof_pipelines.bench.rl import ref_params, synthetic_env
from rof_pipelines.core.ga.engine import DEFAULT_START_METHOD, GASettings, optimise
from rof_pipelines.core.ga.fitness import build_fitness_data
from rof_pipelines.core.ga.space import SearchSpace
from rof_pipelines.core.ga.warmup import warm
from rof_pipelines.core.indicators import build_indicator_frame
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import GeneratorConfig, clean_quotes, generate_quotes, resample_bars
from rof_pipelines.core.rl.agent import RLParams, train
from rof_pipelines.core.rl.env import EnvArrays
from rof_pipelines.core.windows import split_train_test
from rof_pipelines.settings import load_settings


def _peak_rss_mb() -> dict[str, float]:
    """ru_maxrss is in KiB on Linux; children = the largest finished worker."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(own, 1), "peak_rss_worker_mb": round(children, 1)}


@dataclass(frozen=True)
class GASetup:
    """What a GA benchmark runs: one market's training bars, the search space, the base agent and
    GA settings measuring every generation (no early stop)."""

    market: Market
    start: datetime
    bars: int
    train: Any
    space: SearchSpace
    base: RLParams
    ga: GASettings


def ga_setup(days: int, population: int, generations: int) -> GASetup:
    """7 days of generated one-minute bars by default; the same for every GA benchmark."""
    settings = load_settings()
    start = datetime(2024, 1, 1, tzinfo=UTC)
    market = Market.parse("bench:BTCUSDT")
    quotes = generate_quotes(
        market, start, start + timedelta(days=days), config=GeneratorConfig(mean_interval_seconds=15.0)
    )
    clean, _ = clean_quotes(quotes)
    frame = build_indicator_frame(resample_bars(clean, timedelta(minutes=1)))
    ga_config = settings.ab_tests.experiment.ga
    ga = GASettings.from_config(
        ga_config,
        settings.ab_tests.state_management.checkpoint_interval,
        population_size=population,
        generations=generations,
        min_population=min(population, ga_config.min_population),
        max_population=max(population, ga_config.max_population),
        patience=generations + 1,  # measure every generation
    )
    return GASetup(
        market,
        start,
        len(frame),
        split_train_test(frame).train,
        SearchSpace.from_mapping(ga_config.search_space),
        RLParams.from_settings(settings.ai_config),
        ga,
    )


def bench_ga(
    workers: int, days: int = 7, population: int = 50, generations: int = 20, repeats: int = 5
) -> dict[str, Any]:
    if workers < 1 or repeats < 1:
        raise ValueError("workers and repeats must be >= 1")
    setup = ga_setup(days, population, generations)
    train_part, space, base, ga = setup.train, setup.space, setup.base, setup.ga
    warm()  # compile / load the kernels outside the timings
    _yardstick_seconds()
    walls: dict[int, list[float]] = {1: [], workers: []}
    ceilings = []
    results = []
    for _ in range(repeats):
        ceilings.append(host_ceiling(workers))
        for count in walls:
            data = build_fitness_data(
                train_part,
                base,
                space,
                validation_fraction=ga.validation_fraction,
                sample_fraction=ga.sample_fraction,
            )  # fresh per run: no warm per-process caches carried over
            began = time.perf_counter()
            results.append(optimise(data, ga, workers=count))
            walls[count].append(time.perf_counter() - began)
    k = results[-1]
    same = all(
        r.champion_genome == k.champion_genome
        and np.array_equal(r.fitness, k.fitness)
        and np.array_equal(r.pareto, k.pareto)
        for r in results
    )
    one_wall, k_wall = min(walls[1]), min(walls[workers])
    pair_ratios = [a / b for a, b in zip(walls[1], walls[workers], strict=True)]
    return {
        "bench": "ga",
        "bars": setup.bars,
        "train_bars": len(train_part),
        "population": population,
        "generations": k.generations_run,
        "genes": len(space),
        "workers": workers,
        "evaluations": k.evaluations,
        "cache_hits": k.cache_hits,
        "wall_seconds": round(k_wall, 3),
        "wall_seconds_1_worker": round(one_wall, 3),
        "evaluations_per_sec": round(k.evaluations / k_wall, 1),
        "seconds_per_generation": round(k_wall / max(1, k.generations_run), 4),
        "speedup": round(one_wall / k_wall, 3),
        "speedup_median_pair": round(float(np.median(pair_ratios)), 3),
        "repeats": repeats,
        "walls_1_worker": [round(w, 3) for w in walls[1]],
        "walls": [round(w, 3) for w in walls[workers]],
        # What K copies of a fixed piece of RL training gain from running at once, measured before each
        # pair: this host's parallel capacity at the time (2.0 on two idle cores), what speedup is
        # bounded by.
        "host_ceiling": round(float(np.median(ceilings)), 3),
        "host_ceilings": [round(c, 3) for c in ceilings],
        "same_result_as_1_worker": bool(same),
        "result_hash": result_hash(k),
        **_peak_rss_mb(),
    }


def result_hash(result: Any) -> str:
    """A fingerprint of what the GA found (champion genome, every fitness, the Pareto flags): equal
    across refactors that keep the optimiser's behaviour, different if any figure moves."""
    digest = hashlib.sha256(repr(tuple(result.champion_genome)).encode())
    digest.update(np.ascontiguousarray(result.fitness, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(result.pareto).astype(np.int64).tobytes())
    return digest.hexdigest()[:16]


def _yardstick_seconds(_: int = 0) -> float:
    """One fixed piece of the GA's dominant work, about 0.15 s: the RL training kernel, 50 episodes
    over 200,000 synthetic bars."""
    env, params = _yardstick()
    began = time.perf_counter()
    train(env, params)
    return time.perf_counter() - began


@functools.cache
def _yardstick() -> tuple[EnvArrays, RLParams]:
    return synthetic_env(200_000), ref_params(50)


def host_ceiling(workers: int) -> float:
    """K x (the yardstick alone) / (K yardsticks at once, in K forked processes): what this host
    gives K processes of this kind of work right now (2.0 on two idle cores)."""
    alone = _yardstick_seconds()
    ctx = multiprocessing.get_context(DEFAULT_START_METHOD)
    with ctx.Pool(workers) as pool:
        pool.map(_yardstick_seconds, range(workers))  # processes up
        began = time.perf_counter()
        pool.map(_yardstick_seconds, range(workers), chunksize=1)
        together = time.perf_counter() - began
    return workers * alone / together


def main(argv: list[str] | None = None) -> None:
    args = argv or sys.argv[1:]
    workers = int(args[0]) if args else 2
    repeats = int(args[1]) if len(args) > 1 else 5
    print(json.dumps(bench_ga(workers, repeats=repeats)), flush=True)


if __name__ == "__main__":
    main()
