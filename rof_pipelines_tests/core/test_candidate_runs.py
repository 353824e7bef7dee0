"""The production agent runs the promoted config in full: changing any one field of a champion
(agent parameters, state bins, indicator windows, exits, Kelly, costs) changes what q_table's
protocol (``run_candidate``, the same one the A/B test and the optimiser use) does."""

import copy
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from rof_pipelines.core.experiment import candidate_from_params, run_candidate
from rof_pipelines.core.ga.fitness import build_fitness_data
from rof_pipelines.core.ga.space import Candidate, FeatureWindows, SearchSpace
from rof_pipelines.core.indicators import build_indicator_frame
from rof_pipelines.core.kelly import KellyParams
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import generate_quotes, resample_bars
from rof_pipelines.core.rl import RLParams
from rof_pipelines.settings import DEFAULT_SEARCH_SPACE

START = datetime(2026, 11, 18, tzinfo=UTC)


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    quotes = generate_quotes(Market.parse("binance:TONUSDT"), START, START + timedelta(days=2), seed=4)
    frame = build_indicator_frame(resample_bars(quotes, timedelta(minutes=1))).iloc[100:]
    base = RLParams(
        episodes=4,
        fee=0.0,
        slippage=0.0,
        seed=3,
        kelly=KellyParams(use_kelly=True, min_trades=2, warmup_fraction=0.1),
    )
    space = SearchSpace.from_mapping(DEFAULT_SEARCH_SPACE)
    return build_fitness_data(frame, base, space, validation_fraction=0.3), base, space


def behaviour(data, params) -> bytes:  # type: ignore[no-untyped-def]
    fitness_data, base, space = data
    run = run_candidate(fitness_data, candidate_from_params(params, base, space))
    return run.agent.q.tobytes() + run.equity.tobytes()


def champion() -> dict:
    base = RLParams(
        episodes=4,
        fee=0.0,
        slippage=0.0,
        seed=3,
        kelly=KellyParams(use_kelly=True, min_trades=2, warmup_fraction=0.1),
    )
    return Candidate(params=base, windows=FeatureWindows(rsi=14, bb=20, atr=14)).to_dict()


CHAMPION = champion()
CHANGES = {
    "rl.alpha": (("rl", "alpha"), 0.45),
    "rl.gamma": (("rl", "gamma"), 0.5),
    "rl.epsilon": (("rl", "epsilon"), 0.05),
    "rl.risk_aversion": (("rl", "risk_aversion"), 8.0),
    "rl.episodes": (("rl", "episodes"), 2),
    "rl.seed": (("rl", "seed"), 11),
    "costs.fee": (("rl", "fee"), 0.002),
    "costs.slippage": (("rl", "slippage"), 0.002),
    "bins.rsi_edges": (("rl", "bins", "rsi_edges"), [20.0, 50.0, 80.0]),
    "bins.macd_levels": (("rl", "bins", "macd_levels"), 0),
    "bins.bb_edges": (("rl", "bins", "bb_edges"), [0.5]),
    "bins.vol_bins": (("rl", "bins", "vol_bins"), 1),
    "bins.trend_levels": (("rl", "bins", "trend_levels"), 2),
    "windows.rsi": (("indicator_windows", "rsi"), 7),
    "windows.bb": (("indicator_windows", "bb"), 40),
    "windows.atr": (("indicator_windows", "atr"), 28),
    "exits.stop_loss": (("strategy", "stop_loss"), 0.0005),
    "exits.take_profit": (("strategy", "take_profit"), 0.0005),
    "kelly.max_fraction": (("rl", "kelly", "max_fraction"), 0.12),
    "kelly.min_trades": (("rl", "kelly", "min_trades"), 100_000),  # never reached: warm-up size throughout
}


def test_the_champion_round_trips_through_its_stored_form(data):
    _, base, space = data
    candidate = candidate_from_params(CHAMPION, base, space)
    assert candidate_from_params(candidate.to_dict(), base, space) == candidate


@pytest.mark.parametrize("change", list(CHANGES))
def test_changing_one_field_changes_the_production_agent(data, change):
    path, value = CHANGES[change]
    changed = copy.deepcopy(CHAMPION)
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert behaviour(data, CHAMPION) == behaviour(data, copy.deepcopy(CHAMPION))  # deterministic
    assert behaviour(data, changed) != behaviour(data, CHAMPION), f"{change} was not applied"
    assert np.isfinite(np.frombuffer(behaviour(data, changed)[-8:])).all()
