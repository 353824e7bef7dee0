"""What warm-starting buys: on a family of similar synthetic markets (the same planted RSI-zone pattern,
different noise), the GA seeded from the family's finished tasks reaches the cold-start champion's
fitness in fewer generations; with meta and transfer learning off, nothing is seeded and the run is
the cold run, bit for bit."""

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from rof_pipelines.core.ga.engine import GASettings, optimise
from rof_pipelines.core.ga.fitness import build_fitness_data
from rof_pipelines.core.ga.seeding import generations_to_reach, run_seeded, seeded_units
from rof_pipelines.core.ga.space import SearchSpace
from rof_pipelines.core.knowledge import TaskRecord, market_features, plan_seeds
from rof_pipelines.core.rl.agent import RLParams

NOW = datetime(2026, 11, 20, tzinfo=UTC)
BASE = RLParams(episodes=4, seed=1)
SPACE = SearchSpace.from_mapping(
    {
        "alpha": {"type": "float", "low": 0.05, "high": 0.5},
        "gamma": {"type": "float", "low": 0.0, "high": 0.9},
        "rsi_low": {"type": "int", "low": 20, "high": 49},
        "rsi_high": {"type": "int", "low": 51, "high": 80},
        "macd_levels": {"type": "int", "low": 0, "high": 2},
        "vol_bins": {"type": "int", "low": 1, "high": 3},
    }
)
GA = GASettings(
    generations=8,
    population_size=12,
    min_population=8,
    max_population=16,
    patience=15,
    sample_fraction=1.0,  # one slice throughout: best Sharpe comparable generation by generation
    full_window_from_generation=0,
    seed=5,
)
# The family's earlier tasks had more budget (knowledge accumulates over many nightly runs).
SOURCE_GA = GASettings(**{**GA.to_dict(), "generations": 15, "population_size": 16, "max_population": 24})


@dataclass
class Switch:
    enabled: bool
    knowledge_retention_days: int = 30
    min_tasks_for_learning: int = 2
    use_similar_exchanges: bool = True
    use_similar_pairs: bool = True
    max_source_tasks: int = 5


def family_frame(seed: int, n: int = 1500) -> pd.DataFrame:
    """Prices rise while RSI sits in 45..55 and fall otherwise (learnable only with RSI edges near
    45/55), with this member's own noise."""
    rng = np.random.default_rng(seed)
    rsi = np.empty(n)
    rsi[0] = 50.0
    for t in range(1, n):
        rsi[t] = 50.0 + 0.97 * (rsi[t - 1] - 50.0) + rng.normal(0, 4.0)
    rsi = np.clip(rsi, 0.0, 100.0)
    drift = np.where((rsi > 45) & (rsi < 55), 0.003, -0.002)
    opens = np.empty(n + 1)
    opens[:2] = 100.0
    for t in range(n - 1):
        opens[t + 2] = opens[t + 1] * (1.0 + drift[t] + rng.normal(0, 0.0005))
    close = opens[1:]
    return pd.DataFrame(
        {
            "open": opens[:-1],
            "high": np.maximum(opens[:-1], close) * 1.0005,
            "low": np.minimum(opens[:-1], close) * 0.9995,
            "close": close,
            "volume": rng.uniform(50, 150, n),
            "rsi": rsi,
            "macd_hist": rng.normal(0, 0.05, n),
            "bb_pband": rng.uniform(-0.2, 1.2, n),
            "atr_pct": rng.uniform(0.001, 0.01, n),
            "trend": rng.normal(0, 1e-3, n),
        },
        index=pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC"),
    )


def finished_task(market: str, seed: int, days_ago: int) -> TaskRecord:
    """A cold GA run on one family member, as the knowledge base records it."""
    frame = family_frame(seed)
    result = optimise(build_fitness_data(frame, BASE, SPACE, sample_fraction=1.0), SOURCE_GA)
    genes = dict(zip(SPACE.names, result.champion_genome, strict=True))
    return TaskRecord(
        task_id=f"{market}|{seed}",
        market=market,
        finished_at=NOW - timedelta(days=days_ago),
        features=market_features(frame),
        best_params=genes,
        score=result.champion_objectives()["sharpe"],
        generations=result.generations_run,
    )


@pytest.fixture(scope="module")
def knowledge() -> list[TaskRecord]:
    return [
        finished_task("binance:TONUSDT", 11, 3),  # the target's own history (meta-learning)
        finished_task("okx:NOTUSDT", 12, 2),  # the same pair elsewhere / a similar pair (transfer)
        finished_task("binance:NOTUSDT", 13, 1),
    ]


def test_seeding_reaches_the_cold_champion_in_fewer_generations(knowledge):
    target = family_frame(21)
    data = build_fitness_data(target, BASE, SPACE, sample_fraction=1.0)
    plan = plan_seeds(
        "binance:NOTUSDT",
        market_features(target),
        knowledge,
        Switch(True),
        Switch(True),
        now=NOW,
        max_seeds=3,
        gene_names=SPACE.names,
    )
    assert plan.seeds and plan.meta and plan.transfer, plan.reason

    cold = optimise(data, GA)
    target_sharpe = cold.champion_objectives()["sharpe"]
    seeded = run_seeded(data, GA, plan.seeds)
    cold_gens = generations_to_reach(cold.history, target_sharpe)
    seeded_gens = generations_to_reach(seeded.history, target_sharpe)
    report = (
        f"cold champion Sharpe {target_sharpe:.3f}: cold run reached it at generation {cold_gens} "
        f"({cold.evaluations} evaluations in all), seeded run at generation {seeded_gens} "
        f"({seeded.evaluations} evaluations in all); gen-0 best Sharpe cold "
        f"{cold.history[0]['best_sharpe']:.3f} vs seeded {seeded.history[0]['best_sharpe']:.3f}"
    )
    print(report)
    assert cold_gens is not None and seeded_gens is not None, report
    assert seeded_gens < cold_gens, report
    assert seeded.history[0]["best_sharpe"] > cold.history[0]["best_sharpe"], report
    assert seeded.resumed_from is None and seeded.history[0]["seeded"] == len(plan.seeds)


def test_switched_off_nothing_is_seeded_and_the_run_is_cold(knowledge):
    target = family_frame(21)
    plan = plan_seeds(
        "binance:NOTUSDT",
        market_features(target),
        knowledge,
        Switch(False),
        Switch(False),
        now=NOW,
        max_seeds=3,
        gene_names=SPACE.names,
    )
    assert plan.seeds == [] and plan.meta == [] and plan.transfer == []
    assert "meta-learning off" in plan.reason and "transfer learning off" in plan.reason
    data = build_fitness_data(target, BASE, SPACE, sample_fraction=1.0)
    small = GASettings(**{**GA.to_dict(), "generations": 2})
    cold, unseeded = optimise(data, small), run_seeded(data, small, plan.seeds)
    assert unseeded.population == cold.population and np.array_equal(unseeded.fitness, cold.fitness)


def test_seeded_units_keep_the_engines_random_draw_for_the_rest():
    seeds = [{"alpha": 0.3, "rsi_low": 45, "rsi_high": 55}, {"gamma": 99.0}]  # out of range: clamped
    units = seeded_units(SPACE, seeds, GA)
    plain = seeded_units(SPACE, [], GA)
    assert len(units) == GA.population_size and units[2:] == plain[2:]
    first = dict(zip(SPACE.names, SPACE.from_unit(units[0]), strict=True))
    assert first["alpha"] == 0.3 and first["rsi_low"] == 45 and first["rsi_high"] == 55
    assert math.isclose(dict(zip(SPACE.names, SPACE.from_unit(units[1]), strict=True))["gamma"], 0.9)
