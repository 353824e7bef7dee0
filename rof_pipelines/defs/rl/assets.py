"""``q_table``: the market's production agent, trained with its active parameters on the window."""

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from dagster import AssetDep, AssetExecutionContext, MetadataValue, Output

from rof_pipelines.adapters.resources import QuoteStoreResource, RofSettings, StateStoreResource
from rof_pipelines.adapters.state_store import ActiveConfig
from rof_pipelines.core.backtest import BacktestResult, buy_and_hold, compute_metrics
from rof_pipelines.core.experiment import (
    CandidateRun,
    candidate_from_params,
    market_base_params,
    run_candidate,
)
from rof_pipelines.core.ga.fitness import FULL, FitnessData, build_fitness_data
from rof_pipelines.core.ga.space import Candidate, SearchSpace
from rof_pipelines.core.market import Market
from rof_pipelines.core.rl.agent import TrainedAgent
from rof_pipelines.defs.load_time import step_tags
from rof_pipelines.defs.market_day import MarketWindow, market_day_asset, open_market_window
from rof_pipelines.defs.reporting import finite_metadata, line_plot_markdown, metrics_markdown
from rof_pipelines.defs.resilience import state_store_required

BUY_AND_HOLD_METRICS = ("total_return", "sharpe", "max_drawdown")


def partition_seed(market: Market, day_key: str) -> int:
    """A stable seed per market and day: the same partition always trains the same agent."""
    return int.from_bytes(hashlib.sha256(f"{market.key}|{day_key}".encode()).digest()[:4], "little")


def params_source(active: ActiveConfig | None) -> str:
    if active is None:
        return "config defaults (no active config yet)"
    return f"active config v{active.version} from {active.source}"


def warm_start(
    data: FitnessData, candidate: Candidate, warm: np.ndarray | None, warm_source: str
) -> tuple[np.ndarray | None, str]:
    """The transferred Q-table if its state space is the candidate's (three actions: sell, hold, buy)."""
    if warm is None:
        return None, warm_source
    fit_env, _ = data.envs(FULL, candidate.params.bins, candidate.windows, candidate.params.allow_short)
    if warm.shape == (fit_env.state_space.n_states, 3):
        return warm, warm_source
    return None, f"none: {warm_source} has another state space {warm.shape}"


def backtest_metrics(run: CandidateRun, candidate: Candidate) -> tuple[dict[str, Any], BacktestResult]:
    """The agent's held-out metrics beside buy-and-hold's, with the same costs."""
    bpy = run.val_env.bars_per_year()
    metrics = compute_metrics(run.equity, run.trade_returns, np.ones(len(run.returns)), bpy)
    metrics["n_trades"] = int(run.trade_returns.shape[0])
    metrics["level_exits"] = run.level_exits
    held = buy_and_hold(run.val_env.step_ret, candidate.params.cost, bpy)
    metrics |= {f"bh_{k}": v for k, v in held.metrics().items() if k in BUY_AND_HOLD_METRICS}
    return metrics, held


@market_day_asset(
    group_name="rl", kinds={"numba"}, deps=[AssetDep("indicator_frame")], op_tags=step_tags("ab_optimizer")
)
def q_table(
    context: AssetExecutionContext,
    settings: RofSettings,
    quote_store: QuoteStoreResource,
    state_store: StateStoreResource,
):
    """Tabular Q-learning agent for the market, trained on the first `ab_tests.train_fraction` of the
    market's window (`data_period`: a span or a number of bars) ending with this day, backtested
    greedily with Kelly sizing on the rest, with the market's costs and calendar annualisation. Uses the
    market's active parameters from the state store (the config's `ai_config` until the optimiser
    promotes others). The stored value is the serialised agent: Q-table, state space and parameters."""
    mw = open_market_window(context, settings, quote_store)
    if mw is None:
        return
    md, config = mw.day, mw.day.settings
    base = market_base_params(config.ai_config, md.profile).replace(
        seed=partition_seed(md.market, md.day.isoformat())
    )
    space = SearchSpace.from_mapping(config.ab_tests.experiment.ga.search_space)
    with state_store_required(md.where, "the market's active config"), state_store.open() as store:
        active = store.configs.get_active(md.market.key)
        warm, warm_source = transfer_q_table(context, store, mw)
    # The active config exactly as the A/B test evaluated it: agent parameters, state bins, indicator
    # windows, exits, Kelly settings and costs; with none promoted yet, the config's agent.
    candidate = candidate_from_params(active.params if active else None, base, space)
    data = build_fitness_data(mw.frame, base, space, validation_fraction=len(mw.split.test) / len(mw.frame))
    init_q, warm_source = warm_start(data, candidate, warm, warm_source)
    run = run_candidate(data, candidate, init_q=init_q)
    metrics, held = backtest_metrics(run, candidate)
    yield Output(
        run.agent.to_bytes(),
        metadata={
            **md.profile_metadata(),
            "params_source": params_source(active),
            "active_version": active.version if active else 0,
            "params": MetadataValue.json(candidate.to_dict()),
            "q_table_warm_start": warm_source,
            **agent_metadata(mw, run, candidate, metrics, held),
        },
    )


def agent_metadata(
    mw: MarketWindow, run: CandidateRun, candidate: Candidate, metrics: dict[str, Any], held: BacktestResult
) -> dict[str, Any]:
    """The window, the training run and the out-of-sample backtest, for the UI."""
    summary = run.agent.summary()
    index = pd.to_datetime(run.val_env.times[-len(run.equity) :], utc=True)
    plot_series = {"agent": run.equity, "buy and hold": held.equity[-len(run.equity) :]}
    return {
        "train_bars": len(mw.split.train),
        "test_bars": len(mw.split.test),
        **mw.bounds_metadata(),
        "episodes": summary["episodes"],
        "state_coverage": summary["state_coverage"],
        "final_episode_reward": summary["episode_rewards"][-1],
        "reward_per_episode": line_plot_markdown(
            "Reward per episode", {"total reward": summary["episode_rewards"]}, "episode", "reward"
        ),
        "equity_out_of_sample": line_plot_markdown(
            "Out-of-sample equity", plot_series, "", "equity", x=index
        ),
        "backtest": metrics_markdown({"agent (out of sample)": finite_metadata(metrics)}),
        "kelly_max_fraction": candidate.params.kelly.max_fraction,
        **{f"test/{k}": v for k, v in finite_metadata(metrics).items() if isinstance(v, int | float | str)},
    }


def transfer_q_table(
    context: AssetExecutionContext, store, mw: MarketWindow
) -> tuple[np.ndarray | None, str]:  # type: ignore[no-untyped-def]
    """With ``transfer_learning.seed_q_table`` on, the Q-table of the nearest transfer source's agent
    (same state space only) to start from; otherwise none."""
    transfer = mw.day.settings.ab_tests.transfer_learning
    if not (transfer.enabled and transfer.seed_q_table):
        return None, "none (transfer_learning.seed_q_table is off)"
    plan = mw.seed_plan(store, exclude_own_task=False)
    market = mw.day.market
    for artifact in plan.q_table_sources:
        path = Path(artifact)
        if path.exists():
            source = TrainedAgent.from_bytes(path.read_bytes())
            context.log.info(f"{market}: Q-table warm start from {artifact}")
            return np.asarray(source.q, dtype=np.float64), f"transfer source {artifact}"
    return None, "none (no transfer source with a stored agent)"
