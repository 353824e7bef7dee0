"""``q_table``: the market's production agent, trained with its active parameters on the window."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import AssetDep, AssetExecutionContext, MetadataValue, Output, asset

from rof_pipelines.adapters.experiments import candidate_from_params, run_candidate, seed_plan_for
from rof_pipelines.adapters.optimisation import market_base_params
from rof_pipelines.adapters.resources import QuoteStoreResource, RofSettings, StateStoreResource
from rof_pipelines.core.backtest import buy_and_hold, compute_metrics
from rof_pipelines.core.ga.fitness import FULL, build_fitness_data
from rof_pipelines.core.ga.space import SearchSpace
from rof_pipelines.core.market import Market
from rof_pipelines.core.rl.agent import TrainedAgent
from rof_pipelines.defs.market_day import (
    STATE_STORE_RETRY,
    market_day,
    skipped_closed_day,
    state_store_failure,
    window_frame,
)
from rof_pipelines.defs.reporting import finite_metadata, line_plot_markdown, metrics_markdown
from rof_pipelines.errors import TransientError
from rof_pipelines.partitions import market_day_partitions


def partition_seed(market: Market, day_key: str) -> int:
    """A stable seed per market and day: the same partition always trains the same agent."""
    return int.from_bytes(hashlib.sha256(f"{market.key}|{day_key}".encode()).digest()[:4], "little")


@asset(
    partitions_def=market_day_partitions,
    group_name="rl",
    io_manager_key="frame_io_manager",
    kinds={"numba"},
    deps=[AssetDep("indicator_frame")],
    output_required=False,  # nothing on a day the market is closed
    retry_policy=STATE_STORE_RETRY,
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
    md = market_day(context, settings)
    if skipped_closed_day(context, md):
        return
    config, market, day = md.settings, md.market, md.day
    window, split = window_frame(context, md, quote_store)
    frame = window.frame
    train_part, test_part = split.train, split.test

    base = market_base_params(config, md.profile).replace(seed=partition_seed(market, day.isoformat()))
    space = SearchSpace.from_mapping(config.ab_tests.experiment.ga.search_space)
    try:
        with state_store.open() as store:
            active = store.get_active_config(market.key)
            warm, warm_source = transfer_q_table(context, store, config, market, split.train, md.end)
    except TransientError as exc:
        raise state_store_failure(md, "the market's active config", exc) from exc
    # The active config exactly as the A/B test evaluated it: agent parameters, state bins, indicator
    # windows, exits, Kelly settings and costs; with none promoted yet, the config's agent.
    candidate = candidate_from_params(active.params if active else None, base, space)
    source = f"active config v{active.version} from {active.source}" if active else "config defaults (no active config yet)"
    data = build_fitness_data(frame, base, space, validation_fraction=len(test_part) / len(frame))
    init_q = None
    if warm is not None:
        fit_env, _ = data.envs(FULL, candidate.params.bins, candidate.windows, candidate.params.allow_short)
        if warm.shape == (fit_env.state_space.n_states, 3):  # three actions: sell, hold, buy
            init_q = warm
        else:
            warm_source = f"none: {warm_source} has another state space {warm.shape}"
    run = run_candidate(data, candidate, init_q=init_q)
    agent, bpy = run.agent, run.val_env.bars_per_year()
    metrics = compute_metrics(run.equity, run.trade_returns, np.ones(len(run.returns)), bpy)
    metrics["n_trades"] = int(run.trade_returns.shape[0])
    metrics["level_exits"] = run.level_exits
    held = buy_and_hold(run.val_env.step_ret, candidate.params.cost, bpy)
    metrics |= {f"bh_{k}": v for k, v in held.metrics().items() if k in ("total_return", "sharpe", "max_drawdown")}
    summary = agent.summary()
    index = pd.to_datetime(run.val_env.times[-len(run.equity) :], utc=True)
    plot_series = {"agent": run.equity, "buy and hold": held.equity[-len(run.equity) :]}
    kelly_used = candidate.params.kelly.max_fraction
    yield Output(
        agent.to_bytes(),
        metadata={
            **md.profile_metadata(),
            "params_source": source,
            "active_version": active.version if active else 0,
            "params": MetadataValue.json(candidate.to_dict()),
            "q_table_warm_start": warm_source,
            "train_bars": len(train_part),
            "test_bars": len(test_part),
            "window_start": str(frame.index[0]),
            "window_end": str(frame.index[-1]),
            "episodes": summary["episodes"],
            "state_coverage": summary["state_coverage"],
            "final_episode_reward": summary["episode_rewards"][-1],
            "reward_per_episode": line_plot_markdown(
                "Reward per episode", {"total reward": summary["episode_rewards"]}, "episode", "reward"
            ),
            "equity_out_of_sample": line_plot_markdown(
                "Out-of-sample equity",
                plot_series,
                "",
                "equity",
                x=index,
            ),
            "backtest": metrics_markdown({"agent (out of sample)": finite_metadata(metrics)}),
            "kelly_max_fraction": kelly_used,
            **{
                f"test/{k}": v
                for k, v in finite_metadata(metrics).items()
                if isinstance(v, int | float | str)
            },
        },
    )


def transfer_q_table(
    context: AssetExecutionContext, store, config, market: Market, train: pd.DataFrame, end
) -> tuple[np.ndarray | None, str]:  # type: ignore[no-untyped-def]
    """With ``transfer_learning.seed_q_table`` on, the Q-table of the nearest transfer source's agent
    (same state space only) to start from; otherwise none."""
    transfer = config.ab_tests.transfer_learning
    if not (transfer.enabled and transfer.seed_q_table):
        return None, "none (transfer_learning.seed_q_table is off)"
    plan = seed_plan_for(
        store,
        config.ab_tests,
        market.key,
        train,
        end,
        population_size=config.ab_tests.experiment.ga.population_size,
        gene_names=SearchSpace.from_mapping(config.ab_tests.experiment.ga.search_space).names,
        exclude_ids=[],
    )
    for artifact in plan.q_table_sources:
        path = Path(artifact)
        if path.exists():
            source = TrainedAgent.from_bytes(path.read_bytes())
            context.log.info(f"{market}: Q-table warm start from {artifact}")
            return np.asarray(source.q, dtype=np.float64), f"transfer source {artifact}"
    return None, "none (no transfer source with a stored agent)"
