"""The genetic optimiser's core: search space and config, fitness twins of the RL code, determinism
across workers and resumes, the champion rule, adaptation, and a planted pattern found out of sample."""

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from ta.momentum import RSIIndicator
from ta.volatility import BollingerBands

from rof_pipelines.core.features import feature_names
from rof_pipelines.core.ga.engine import (
    GASettings,
    MemoryCheckpoints,
    _fast_ga_class,
    champion_index,
    objectives_dict,
    optimise,
    pareto_ranks,
)
from rof_pipelines.core.ga.fitness import (
    FULL,
    _enabled,
    _windowed_feature,
    build_fitness_data,
    env_arrays,
    fit_state_space,
    make_slice,
    score_candidate,
    walk,
)
from rof_pipelines.core.ga.space import Candidate, FeatureWindows, SearchSpace
from rof_pipelines.core.indicators import IndicatorWindows, build_indicator_frame
from rof_pipelines.core.kelly import KellyParams
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import GeneratorConfig, clean_quotes, generate_quotes, resample_bars
from rof_pipelines.core.rl.agent import RLParams, prepare, train
from rof_pipelines.core.rl.env import BinSpec, EnvArrays, build_env
from rof_pipelines.errors import ConfigError
from rof_pipelines.settings import load_settings


def planted_frame(n: int = 3000, seed: int = 3) -> pd.DataFrame:
    """Prices that rise while RSI sits in 45..55 and fall otherwise: learnable only with RSI edges near
    45/55 (the defaults' 30/70 mix the zone with its falling neighbours)."""
    rng = np.random.default_rng(seed)
    rsi = np.empty(n)
    rsi[0] = 50.0
    for t in range(1, n):
        rsi[t] = 50.0 + 0.97 * (rsi[t - 1] - 50.0) + rng.normal(0, 4.0)
    rsi = np.clip(rsi, 0.0, 100.0)
    drift = np.where((rsi > 45) & (rsi < 55), 0.003, -0.002)
    opens = np.empty(n + 1)
    opens[:2] = 100.0
    for t in range(n - 1):  # the exposure chosen at bar t earns open[t + 2] / open[t + 1] - 1
        opens[t + 2] = opens[t + 1] * (1.0 + drift[t] + rng.normal(0, 0.0005))
    close = opens[1:]
    return pd.DataFrame(
        {
            "open": opens[:-1],
            "high": np.maximum(opens[:-1], close) * 1.0005,
            "low": np.minimum(opens[:-1], close) * 0.9995,
            "close": close,
            "rsi": rsi,
            "macd_hist": rng.normal(0, 0.05, n),
            "bb_pband": rng.uniform(-0.2, 1.2, n),
            "atr_pct": rng.uniform(0.001, 0.01, n),
            "trend": rng.normal(0, 1e-3, n),
        },
        index=pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC"),
    )


SMALL_SPACE = SearchSpace.from_mapping(
    {
        "alpha": {"type": "float", "low": 0.05, "high": 0.5},
        "gamma": {"type": "float", "low": 0.0, "high": 0.9},
        "epsilon": {"type": "float", "low": 0.05, "high": 0.5},
        "rsi_low": {"type": "int", "low": 20, "high": 49},
        "rsi_high": {"type": "int", "low": 51, "high": 80},
        "macd_levels": {"type": "int", "low": 0, "high": 2},
        "vol_bins": {"type": "int", "low": 1, "high": 3},
        "trend_levels": {"type": "int", "low": 0, "high": 1},
        "kelly_max_fraction": {"type": "float", "low": 0.1, "high": 1.0},
    }
)
BASE = RLParams(episodes=8)
FAST = GASettings(
    generations=6,
    population_size=12,
    min_population=8,
    max_population=16,
    elitism=2,
    sample_fraction=0.6,
    full_window_from_generation=2,
    patience=50,
    checkpoint_interval=2,
    seed=11,
)


@pytest.fixture(scope="module")
def planted() -> pd.DataFrame:
    return planted_frame()


@pytest.fixture(scope="module")
def data(planted):
    return build_fitness_data(planted.iloc[:2100], BASE, SMALL_SPACE, sample_fraction=FAST.sample_fraction)


@pytest.fixture(scope="module")
def reference(data):
    return optimise(data, FAST, workers=1)


def same_run(a, b) -> None:
    assert a.population == b.population
    assert np.array_equal(a.fitness, b.fitness)
    assert np.array_equal(a.pareto, b.pareto)
    assert a.champion == b.champion and a.champion_genome == b.champion_genome


# --- search space and config ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gene", "spec", "message"),
    [
        ("alpha", {"type": "float", "low": 0.5, "high": 0.1}, "search_space.alpha: low (0.5) must be below"),
        ("gamma", {"type": "float", "low": 0.5, "high": 1.5}, "gamma: high 1.5 is outside the gene's domain"),
        ("macd_levels", {"type": "float", "low": 0, "high": 2}, "macd_levels: type must be 'int'"),
        ("nonsense", {"type": "int", "low": 1, "high": 2}, "unknown gene 'nonsense'"),
        ("vol_bins", {"type": "int", "low": 1.5, "high": 3}, "whole-number bounds"),
    ],
)
def test_invalid_gene_ranges_are_refused_at_config_load(gene, spec, message):
    with pytest.raises(ConfigError) as error:
        load_settings(
            environ={}, overrides={"ab_tests": {"experiment": {"ga": {"search_space": {gene: spec}}}}}
        )
    assert "ab_tests.experiment.ga.search_space" in str(error.value)
    assert message in str(error.value)


def test_ga_bounds_are_checked_together():
    with pytest.raises(ConfigError, match=r"min_population .* <= population_size"):
        load_settings(environ={}, overrides={"ab_tests": {"experiment": {"ga": {"min_population": 60}}}})


def test_configured_space_decodes_onto_valid_parameters():
    ga = load_settings(environ={}).ab_tests.experiment.ga
    space = SearchSpace.from_mapping(ga.search_space)
    rng = np.random.default_rng(0)
    for unit in [*space.random_units(rng, 200), (0.0,) * len(space), (1.0,) * len(space)]:
        genome = space.from_unit(unit)
        for gene, value in zip(space.genes, genome, strict=True):
            assert gene.low <= value <= gene.high
            assert isinstance(value, int if gene.kind == "int" else float)
        per_gene = tuple(g.from_unit(u) for g, u in zip(space.genes, unit, strict=True))
        assert genome == per_gene and [type(v) for v in genome] == [type(v) for v in per_gene]
        candidate = space.decode(genome, RLParams())  # RLParams / BinSpec / KellyParams validate
        assert candidate.params.epsilon_min <= candidate.params.epsilon
        assert space.from_unit(space.to_unit(genome)) == genome


# --- fitness twins of the RL code -------------------------------------------------------------------


@pytest.fixture(scope="module")
def bars_frame() -> pd.DataFrame:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    quotes = generate_quotes(
        Market.parse("test:GAUSDT"), start, start + timedelta(hours=30), config=GeneratorConfig(), seed=4
    )
    clean, _ = clean_quotes(quotes)
    return build_indicator_frame(resample_bars(clean, timedelta(minutes=1)))


@pytest.mark.parametrize(
    "bins",
    [
        BinSpec(),
        BinSpec(rsi_edges=(25.0, 60.0), macd_levels=3, vol_bins=4, trend_levels=2),
        BinSpec(rsi_edges=(), macd_levels=0, bb_edges=(0.5,), vol_bins=1, trend_levels=0),
    ],
)
def test_numpy_state_space_equals_the_rl_module(bars_frame, bins):
    frame = bars_frame
    fit, rest = frame.iloc[:1000], frame.iloc[1000:]
    params = RLParams(bins=bins)
    expected = prepare(fit, params)
    s = make_slice(FULL, frame, validation_fraction=1 - 1000 / len(frame))
    raw = {k: v[:1000] for k, v in s.features.items()}
    space = fit_state_space(raw, s.open[:1000], s.close[:1000], bins, False)
    assert space == expected.state_space
    got = env_arrays(raw, s.open[:1000], s.close[:1000], s.times[:1000], space)
    assert np.array_equal(got.mstate, expected.mstate)
    assert np.array_equal(got.step_ret, expected.step_ret) and np.array_equal(got.times, expected.times)
    held_out = build_env(rest, space)
    raw_rest = {k: v[1000:] for k, v in s.features.items()}
    got_rest = env_arrays(raw_rest, s.open[1000:], s.close[1000:], s.times[1000:], space)
    assert np.array_equal(got_rest.mstate, held_out.mstate)
    assert np.array_equal(got_rest.step_ret, held_out.step_ret)


def test_rewindowed_features_equal_the_indicator_frame(bars_frame):
    bars = bars_frame[["open", "high", "low", "close", "volume"]]
    s = make_slice(FULL, bars_frame, 0.3)
    for name, window, column in (("rsi", 14, "rsi"), ("bb", 20, "bb_pband"), ("vol", 14, "atr_pct")):
        expected = build_indicator_frame(bars)[column].to_numpy()
        got = _windowed_feature(s, name, window, IndicatorWindows())
        assert np.allclose(got, expected, equal_nan=True, rtol=0, atol=1e-12), name
    other = build_indicator_frame(bars, windows=IndicatorWindows(rsi=9))
    assert np.allclose(
        _windowed_feature(s, "rsi", 9, IndicatorWindows()), other["rsi"].to_numpy(), equal_nan=True
    )


def test_rewindowed_features_equal_ta_for_every_window_even_on_flat_prices(bars_frame):
    """The compiled RSI and the direct Bollinger computation against ta, on prices that include a flat
    stretch (zero-width bands, no up or down moves)."""
    frame = bars_frame.copy()
    frame.iloc[300:360, frame.columns.get_indexer(["open", "high", "low", "close"])] = frame["close"].iloc[
        299
    ]
    s = make_slice(FULL, frame, 0.3)
    close = pd.Series(s.close)
    for window in range(2, 45):
        expected_rsi = RSIIndicator(close, window=window).rsi().to_numpy()
        got_rsi = _windowed_feature(s, "rsi", window, IndicatorWindows())
        assert np.array_equal(np.isnan(got_rsi), np.isnan(expected_rsi)), window
        assert np.allclose(got_rsi, expected_rsi, rtol=0, atol=1e-12, equal_nan=True), window
        bands = BollingerBands(close, window=window, window_dev=2.0)
        high, low = bands.bollinger_hband(), bands.bollinger_lband()
        expected_bb = ((close - low) / (high - low).replace(0.0, np.nan)).to_numpy()
        expected_bb = np.where(np.isfinite(expected_bb), expected_bb, np.nan)
        got_bb = _windowed_feature(s, "bb", window, IndicatorWindows())
        assert np.array_equal(got_bb, expected_bb, equal_nan=True), window


def test_environments_from_cached_pieces_equal_the_reference_builders(bars_frame):
    """``FitnessData.envs`` assembles environments from per-feature pieces shared between genomes; it
    must equal fit_state_space + env_arrays (the numpy twins of the RL module) for any genome, also
    with gaps inside a feature (forward fill) and on both slices."""
    frame = bars_frame.copy()
    frame.iloc[700:705, frame.columns.get_loc("atr_pct")] = np.nan
    frame.iloc[1200, frame.columns.get_loc("macd_hist")] = np.nan
    space = SearchSpace.from_mapping(load_settings(environ={}).ab_tests.experiment.ga.search_space)
    data = build_fitness_data(frame, RLParams(), space, sample_fraction=0.5)
    rng = np.random.default_rng(7)
    for unit in space.random_units(rng, 60):
        candidate = space.decode(space.from_unit(unit), data.base)
        windows, bins = candidate.windows, candidate.params.bins
        by_name = {"rsi": windows.rsi, "bb": windows.bb, "vol": windows.atr, "macd": None, "trend": None}
        for slice_name, s in data.slices.items():
            fit_env, val_env = data.envs(slice_name, bins, windows, False)
            raw = {name: data.feature(slice_name, name, by_name[name]) for name in feature_names()}
            raw = {name: values for name, values in raw.items() if name in _enabled(bins)}
            cut = s.fit_rows
            fit_raw = {k: v[:cut] for k, v in raw.items()}
            expected_space = fit_state_space(fit_raw, s.open[:cut], s.close[:cut], bins, False)
            assert fit_env.state_space == expected_space
            expected = (
                env_arrays(fit_raw, s.open[:cut], s.close[:cut], s.times[:cut], expected_space),
                env_arrays(
                    {k: v[cut:] for k, v in raw.items()},
                    s.open[cut:],
                    s.close[cut:],
                    s.times[cut:],
                    expected_space,
                ),
            )
            for got, want in zip((fit_env, val_env), expected, strict=True):
                assert got.mstate.dtype == want.mstate.dtype
                assert np.array_equal(got.mstate, want.mstate)
                assert np.array_equal(got.step_ret, want.step_ret) and np.array_equal(got.times, want.times)


def test_walk_without_levels_is_the_agents_own_backtest(bars_frame):
    params = RLParams(episodes=5, seed=3)
    fit, rest = bars_frame.iloc[:1000], bars_frame.iloc[1000:]
    agent = train(fit, params)
    unit = KellyParams(use_kelly=False, window_trades=1)
    in_sample = agent.evaluate(fit, kelly=unit, baseline=False)
    expected = agent.evaluate(rest, kelly_history=in_sample.trades.ret, baseline=False)
    fit_env, rest_env = prepare(fit, params), build_env(rest, agent.state_space)
    _, ins, _ = walk(agent.q, fit_env, params, unit, 0.0, 0.0)
    assert np.array_equal(ins, in_sample.trades.ret)
    equity, trades, forced = walk(agent.q, rest_env, params, params.kelly, 0.0, 0.0, ins)
    assert np.array_equal(equity, expected.equity) and np.array_equal(trades, expected.trades.ret)
    assert forced == 0


def test_stop_loss_and_take_profit_close_trades_at_their_level():
    rng = np.random.default_rng(5)
    params = RLParams(bins=BinSpec(rsi_edges=(), macd_levels=0, bb_edges=(), vol_bins=1, trend_levels=0))
    space = prepare(planted_frame(300), params).state_space  # one market state
    step_ret = rng.normal(0, 0.004, 3000)
    env = EnvArrays.from_arrays(np.zeros(3001, np.int32), step_ret, space)
    q = np.zeros((space.n_states, 3))
    q[0, 1] = 1.0  # flat: buy
    q[1, 0] = 1.0  # long: hold, forever, unless a level closes the trade
    unit = KellyParams(use_kelly=False, window_trades=1)
    _, free, forced = walk(q, env, params, unit, 0.0, 0.0)
    assert len(free) == 1 and forced == 0
    for stop, take in ((0.01, 0.0), (0.0, 0.01), (0.01, 0.02)):
        _, trades, forced = walk(q, env, params, unit, stop, take)
        assert forced >= 5 and len(trades) == forced + 1
        closed = trades[:-1]  # the last one is liquidated at the final mark
        # Checked at each fill: a level is crossed by at most one step's move (|r| < 2.5 % here), then the
        # exit cost is paid.
        if stop:
            assert closed.min() > -stop - 0.025 - params.cost
        if take:
            assert closed.max() < take + 0.025
        hits = closed[closed > 0] if take else closed[closed < 0]
        assert hits.size > 0


# --- pygad and the Pareto tools ---------------------------------------------------------------------


def test_fast_non_dominated_sorting_equals_pygads():
    import pygad

    rng = np.random.default_rng(0)
    fitness = np.round(rng.normal(size=(40, 3)), 1)  # rounding makes ties and duplicates
    fitness[5] = fitness[6]
    fast = _fast_ga_class()
    ga = fast(
        num_generations=1,
        num_parents_mating=2,
        fitness_func=lambda *_: [0.0, 0.0, 0.0],
        sol_per_pop=40,
        num_genes=2,
        suppress_warnings=True,
    )
    mine_fronts, mine_ranks = ga.non_dominated_sorting(fitness)
    theirs_fronts, theirs_ranks = pygad.GA.non_dominated_sorting(ga, fitness)
    assert np.array_equal(mine_ranks, theirs_ranks)
    assert len(mine_fronts) == len(theirs_fronts)
    for mine, theirs in zip(mine_fronts, theirs_fronts, strict=True):
        assert mine.shape == theirs.shape
        assert [int(i) for i in mine[:, 0]] == [int(i) for i in theirs[:, 0]]
        assert all(np.array_equal(a, b) for a, b in zip(mine[:, 1], theirs[:, 1], strict=True))
    assert np.array_equal(pareto_ranks(fitness), theirs_ranks)


def test_champion_is_the_front_member_nearest_the_ideal_point():
    population = [(1,), (2,), (3,), (4,)]
    fitness = np.array(
        [
            [0.30, 1.0, -0.30],  # best return, worst drawdown
            [0.10, 3.0, -0.05],  # balanced
            [0.01, 0.5, -0.01],  # smallest drawdown
            [0.05, 0.5, -0.20],  # dominated by the balanced one
        ]
    )
    assert list(pareto_ranks(fitness)) == [0, 0, 0, 1]
    assert champion_index(population, fitness) == 1
    assert objectives_dict(fitness[1]) == {"total_return": 0.10, "sharpe": 3.0, "max_drawdown": 0.05}


# --- the run: determinism, workers, resume, adaptation ----------------------------------------------


def test_same_seed_same_result_with_one_or_two_workers(data, reference):
    again = optimise(data, FAST, workers=1)
    same_run(reference, again)
    parallel = optimise(data, FAST, workers=2)
    same_run(reference, parallel)
    other = optimise(data, GASettings(**{**FAST.to_dict(), "seed": 12}), workers=1)
    assert other.population != reference.population


def test_interrupted_run_resumes_bit_identically_from_its_checkpoint(data, reference):
    class Stop(Exception):
        pass

    class JsonCheckpoints(MemoryCheckpoints):  # through JSON, like the state store
        def save(self, generation, payload, *, final):
            super().save(generation, json.loads(json.dumps(payload)), final=final)

    sink = JsonCheckpoints()

    def crash(stats):
        if stats["generation"] == 3:
            raise Stop

    with pytest.raises(Stop):
        optimise(data, FAST, checkpoints=sink, on_generation=crash)
    assert max(sink.saved) == 2  # interval 2: generation 3 is the one repeated
    resumed = optimise(data, FAST, checkpoints=sink)
    assert resumed.resumed_from == 2
    same_run(reference, resumed)
    # A finished task answers from its final checkpoint without evaluating anything.
    done = optimise(data, FAST, checkpoints=sink)
    assert done.evaluations == 0 and done.resumed_from == FAST.generations
    same_run(reference, done)


def test_a_given_initial_population_is_generation_0_and_is_checked(data):
    rng = np.random.default_rng(1)
    initial = SMALL_SPACE.random_units(rng, FAST.population_size)
    sink = MemoryCheckpoints()
    settings = GASettings(**{**FAST.to_dict(), "generations": 2})
    result = optimise(data, settings, checkpoints=sink, initial=initial, initial_note={"seeded": 3})
    assert sink.saved[0]["population"] == [list(u) for u in initial]  # checkpointed like any other
    assert result.history[0]["seeded"] == 3
    with pytest.raises(ValueError, match=r"needs 8 to 16 genomes \(min_population..max_population\), got 7"):
        optimise(data, settings, initial=initial[:7])
    with pytest.raises(ValueError, match=r"initial genome 1 must have 9 unit values in \[0, 1\]"):
        optimise(data, settings, initial=[initial[0], (*initial[1][:-1], 1.5), *initial[2:]])


def test_history_samples_early_generations_then_uses_the_full_window(reference):
    slices = [h["slice"] for h in reference.history]
    assert slices[:2] == ["sample", "sample"] and set(slices[2:]) == {"full"}
    assert len(reference.history) == FAST.generations + 1
    assert reference.evaluations > 0 and reference.cache_hits > 0
    assert reference.pareto[reference.champion]


def test_population_grows_when_diversity_is_low_and_mutation_stays_in_bounds(data):
    settings = GASettings(
        **{**FAST.to_dict(), "diversity_low": 0.99, "diversity_high": 1.0, "generations": 4}
    )
    result = optimise(data, settings, workers=1)
    sizes = [h["population"] for h in result.history]
    assert sizes[0] == 12 and sizes[-1] == 16 and sizes == sorted(sizes)
    shrink = GASettings(**{**FAST.to_dict(), "diversity_low": 0.0, "diversity_high": 0.01, "generations": 4})
    sizes = [h["population"] for h in optimise(data, shrink, workers=1).history]
    assert sizes[-1] == 8
    for h in result.history:
        assert FAST.mutation_rate_min <= h["mutation_rate"] <= FAST.mutation_rate_max


def test_early_stopping_when_the_front_stops_improving(data):
    settings = GASettings(**{**FAST.to_dict(), "patience": 1, "min_delta": 1e6, "generations": 10})
    result = optimise(data, settings, workers=1)
    assert result.stop_reason == "early_stopping"
    assert result.generations_run < 10


def test_finds_the_planted_pattern_clearly_better_than_defaults_out_of_sample(planted):
    train_part, test_part = planted.iloc[:2100], planted.iloc[2100:]
    settings = GASettings(
        **{**FAST.to_dict(), "generations": 10, "population_size": 16, "max_population": 24}
    )
    data = build_fitness_data(train_part, BASE, SMALL_SPACE, sample_fraction=settings.sample_fraction)
    result = optimise(data, settings, workers=2)
    champion = SMALL_SPACE.decode(result.champion_genome, BASE)

    def out_of_sample(candidate) -> dict[str, float]:
        whole = make_slice(FULL, planted, validation_fraction=len(test_part) / len(planted))
        fitness = build_fitness_data(train_part, BASE, SMALL_SPACE)
        fitness.slices = {FULL: whole}
        fit_env, test_env = fitness.envs(FULL, candidate.params.bins, FeatureWindows(), False)
        objectives, _ = score_candidate(candidate, fit_env, test_env)
        return objectives_dict(objectives)

    defaults = Candidate(params=BASE, windows=FeatureWindows())  # the config's agent, no exits
    ours, theirs = out_of_sample(champion), out_of_sample(defaults)
    assert ours["total_return"] > theirs["total_return"] + 0.05, (ours, theirs, result.champion_genome)
    assert ours["sharpe"] > theirs["sharpe"] + 1.0
