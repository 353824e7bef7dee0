"""The A/B experiment without a store: arms built from the GA's population, evaluated on the held-out
folds only, decided with the trial ledger's count, and the per-arm rows a report and the store keep."""

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from rof_pipelines.core.abtest import DecisionRule
from rof_pipelines.core.experiment import (
    ACTIVE,
    BASELINE,
    CHAMPION,
    METRIC_COLUMNS,
    TRANSFER,
    active_rl_params,
    arm_summaries,
    arm_table,
    build_arms,
    candidate_from_params,
    decide_arms,
    decide_experiment,
    evaluate_arms,
    gene_tuple,
    genes_of,
    knowledge_task_id,
    top_pareto,
    trials_key,
)
from rof_pipelines.core.ga.space import Candidate, FeatureWindows, SearchSpace
from rof_pipelines.core.rl.agent import RLParams
from rof_pipelines.core.rl.env import BinSpec

SPACE = SearchSpace.from_mapping(
    {
        "alpha": {"type": "float", "low": 0.05, "high": 0.5},
        "rsi_low": {"type": "int", "low": 20, "high": 49},
        "rsi_high": {"type": "int", "low": 51, "high": 80},
        "rsi_window": {"type": "int", "low": 7, "high": 28},
        "stop_loss": {"type": "float", "low": 0.0, "high": 0.05},
    }
)
BASE = RLParams(episodes=3, seed=1)


def frame(n: int = 900, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    return pd.DataFrame(
        {
            "open": np.concatenate([[100.0], close[:-1]]),
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "rsi": rng.uniform(0, 100, n),
            "macd_hist": rng.normal(0, 0.05, n),
            "bb_pband": rng.uniform(-0.2, 1.2, n),
            "atr_pct": rng.uniform(0.001, 0.01, n),
            "trend": rng.normal(0, 1e-3, n),
        },
        index=pd.date_range("2026-11-19", periods=n, freq="1min", tz="UTC"),
    )


def test_arms_are_evaluated_on_the_held_out_folds_only():
    champion = candidate_from_params(
        {"alpha": 0.3, "rsi_low": 40, "rsi_high": 60, "rsi_window": 10}, BASE, SPACE
    )
    assert champion.windows == FeatureWindows(rsi=10) and champion.params.bins.rsi_edges == (40.0, 60.0)
    data = frame()
    evaluation = evaluate_arms(
        data,
        {ACTIVE: ("active", Candidate(BASE, FeatureWindows())), "ga_champion": ("challenger", champion)},
        BASE,
        SPACE,
        n_folds=3,
        train_fraction=0.7,
    )
    held_out = len(data) - round(len(data) * 0.7)
    lengths = {name: len(arm.returns) for name, arm in evaluation.arms.items()}
    assert set(lengths) == {ACTIVE, "ga_champion", BASELINE} and len(set(lengths.values())) == 1
    assert held_out - 3 <= lengths[ACTIVE] <= held_out  # one step fewer per fold than bars
    assert [f["fold"] for f in evaluation.folds] == [0, 1, 2]
    assert all(pd.Timestamp(f["train_end"]) < pd.Timestamp(f["test_start"]) for f in evaluation.folds)
    decision = decide_arms(evaluation, DecisionRule(n_boot=200, min_periods=30))
    assert set(decision.arms) == {"ga_champion", BASELINE}
    rows = {r.arm: r for r in arm_summaries(evaluation, decision)}
    assert rows[ACTIVE].p_values == {} and 0 <= rows["ga_champion"].p_values["p_adjusted"] <= 1
    assert rows["ga_champion"].params["indicator_windows"] == {"rsi": 10}


def test_q_table_reads_the_champion_form_and_says_what_it_cannot_apply():
    stored = Candidate(
        BASE.replace(alpha=0.33, bins=BinSpec(rsi_edges=(40.0, 60.0))), FeatureWindows(rsi=9), 0.01, 0.0
    ).to_dict()
    params, ignored = active_rl_params(RLParams(seed=7), stored)
    assert params.alpha == 0.33 and params.bins.rsi_edges == (40.0, 60.0) and params.seed == 7
    assert any("indicator_windows" in n for n in ignored) and any("stop_loss" in n for n in ignored)
    legacy, none = active_rl_params(RLParams(), {"alpha": 0.4})
    assert legacy.alpha == 0.4 and none == []


def population(rows: list[dict], champion: int | None, pareto: list[int]) -> pd.DataFrame:
    """A GA population frame as ga_population stores it: genes, objectives, front and champion."""
    frame = pd.DataFrame(rows)
    frame["pareto"] = [i in pareto for i in range(len(frame))]
    frame["champion"] = [i == champion for i in range(len(frame))]
    return frame


GENES = [
    {"alpha": 0.1, "rsi_low": 30, "rsi_high": 70, "rsi_window": 14, "stop_loss": 0.0},
    {"alpha": 0.2, "rsi_low": 35, "rsi_high": 65, "rsi_window": 10, "stop_loss": 0.01},
    {"alpha": 0.3, "rsi_low": 40, "rsi_high": 60, "rsi_window": 7, "stop_loss": 0.02},
    {"alpha": 0.4, "rsi_low": 45, "rsi_high": 55, "rsi_window": 21, "stop_loss": 0.0},
]
OBJECTIVES = [
    {"total_return": 0.01, "sharpe": 1.0, "max_drawdown": 0.1},
    {"total_return": 0.03, "sharpe": 3.0, "max_drawdown": 0.2},
    {"total_return": 0.02, "sharpe": 2.0, "max_drawdown": 0.1},
    {"total_return": 0.00, "sharpe": 0.5, "max_drawdown": 0.3},
]
ROWS = [{**g, **o} for g, o in zip(GENES, OBJECTIVES, strict=True)]


def test_the_arms_are_the_active_config_the_champion_the_best_of_the_front_and_a_transfer():
    frame = population(ROWS, champion=0, pareto=[0, 1, 2])
    assert top_pareto(frame, 2) == [1, 2] and top_pareto(frame, 0) == []  # by Sharpe, champion left out
    arms = build_arms(frame, SPACE, BASE, active_params=None, pareto_challengers=2, transfer_params=GENES[3])
    assert list(arms) == [ACTIVE, CHAMPION, "pareto_1", "pareto_2", TRANSFER]
    assert arms[ACTIVE] == ("active", Candidate(BASE, FeatureWindows()))
    assert {role for name, (role, _) in arms.items() if name != ACTIVE} == {"challenger"}
    champion = SPACE.decode(SPACE.canonical(gene_tuple(frame.iloc[0], SPACE.names)), BASE)
    assert arms[CHAMPION][1] == champion
    assert arms["pareto_1"][1].params.alpha == 0.2 and arms[TRANSFER][1].params.alpha == 0.4
    assert genes_of(frame.iloc[1], SPACE) == GENES[1]
    assert all(type(v) in (int, float) for v in genes_of(frame.iloc[1], SPACE).values())


def test_a_flat_landscape_gives_no_champion_arm():
    arms = build_arms(population(ROWS, champion=None, pareto=[]), SPACE, BASE, active_params={"alpha": 0.3})
    assert list(arms) == [ACTIVE] and arms[ACTIVE][1].params.alpha == 0.3


def test_the_decision_counts_the_ledger_s_trials_for_the_searched_arms_only():
    champion = candidate_from_params(GENES[2], BASE, SPACE)
    evaluation = evaluate_arms(
        frame(),
        {ACTIVE: ("active", Candidate(BASE, FeatureWindows())), CHAMPION: ("challenger", champion)},
        BASE,
        SPACE,
    )
    rule = DecisionRule(n_boot=200, min_periods=30)
    outcome = decide_experiment(evaluation, rule, trials=0, trials_variance=None)
    assert outcome.trials == 1  # at least the champion itself was scored
    direct = decide_arms(evaluation, rule, n_trials={CHAMPION: 1})
    assert outcome.decision.to_dict() == direct.to_dict()
    deflated = decide_experiment(evaluation, rule, trials=50, trials_variance=4.0)
    assert deflated.decision.arms[CHAMPION].dsr <= outcome.decision.arms[CHAMPION].dsr
    assert [a.arm for a in outcome.arms] == [ACTIVE, CHAMPION, BASELINE]
    assert outcome.arms == arm_summaries(evaluation, outcome.decision)
    assert set(outcome.equity) == {ACTIVE, CHAMPION, BASELINE}
    table = arm_table(outcome.arms, outcome.decision)
    assert list(table.index) == [ACTIVE, CHAMPION, BASELINE]
    assert list(table.columns) == [
        "role",
        *METRIC_COLUMNS,
        "p_welch",
        "p_bootstrap",
        "dsr",
        "p_adjusted",
        "verdict",
    ]
    assert table.loc[ACTIVE, "verdict"] == "the config in force" and np.isnan(table.loc[ACTIVE, "p_welch"])


def test_buy_and_hold_is_never_a_config_to_promote():
    evaluation = evaluate_arms(frame(), {ACTIVE: ("active", Candidate(BASE, FeatureWindows()))}, BASE, SPACE)
    outcome = decide_experiment(evaluation, DecisionRule(n_boot=200), trials=1, trials_variance=None)
    forced = replace(outcome, decision=replace(outcome.decision, winner=BASELINE))
    assert forced.winner_params is None


def test_keys_name_the_task_whatever_the_market_s_spelling():
    start, end = datetime(2026, 11, 19, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)
    assert trials_key("Binance:tonusdt", "exp", start, end) == (
        "trials:binance:TONUSDT:exp:2026-11-19T00:00:00+00:00/2026-11-20T00:00:00+00:00"
    )
    assert knowledge_task_id("binance:TONUSDT", "2026-11-20", "exp") == "binance:TONUSDT|2026-11-20|exp"
