"""``q_table``: the market's production agent, trained with its active parameters on the window."""

import hashlib
import math

from dagster import AssetDep, AssetExecutionContext, MetadataValue, Output, asset

from rof_pipelines.adapters.experiments import active_rl_params
from rof_pipelines.adapters.resources import QuoteStoreResource, RofSettings, StateStoreResource
from rof_pipelines.core.kelly import KellyParams
from rof_pipelines.core.market import Market
from rof_pipelines.core.rl import RLParams, train
from rof_pipelines.defs.market_day import market_day, skipped_closed_day, window_frame
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

    overrides, source = active_overrides(context, state_store, market)
    params = RLParams.from_settings(
        config.ai_config,
        seed=partition_seed(market, day.isoformat()),
        fee=md.profile.fee,
        slippage=md.profile.slippage,
    )
    not_applied: list[str] = []
    if overrides:  # a promoted champion ({rl, indicator_windows, strategy}) or flat RLParams overrides
        params, not_applied = active_rl_params(params, overrides)
        for note in not_applied:
            context.log.warning(f"{market}: active config part not applied by q_table: {note}")
    agent = train(train_part, params)
    # Kelly needs a record: the in-sample trades at unit size seed the window for the hold-out.
    in_sample = agent.evaluate(
        train_part, kelly=KellyParams(use_kelly=False, window_trades=1), baseline=False
    )
    result = agent.evaluate(test_part, kelly_history=in_sample.trades.ret)
    metrics = result.metrics()
    summary = agent.summary()
    equity = result.equity_series()
    baseline = result.baseline.equity_series() if result.baseline is not None else None
    plot_series = {"agent": equity.to_numpy()}
    if baseline is not None:
        plot_series["buy and hold"] = baseline.to_numpy()
    kelly_used = metrics.get("kelly_fraction", math.nan)
    yield Output(
        agent.to_bytes(),
        metadata={
            **md.profile_metadata(),
            "params_source": source,
            "params": MetadataValue.json(params.to_dict()),
            "params_not_applied": "; ".join(not_applied) or "none",
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
                x=equity.index if equity.index is not None else None,
            ),
            "backtest": metrics_markdown({"agent (out of sample)": finite_metadata(metrics)}),
            "kelly_fraction": kelly_used,
            **{
                f"test/{k}": v
                for k, v in finite_metadata(metrics).items()
                if isinstance(v, int | float | str)
            },
        },
    )


def active_overrides(
    context: AssetExecutionContext, state_store: StateStoreResource, market: Market
) -> tuple[dict, str]:
    """The market's promoted parameters, or none (config defaults). An unreachable state store means
    defaults, said plainly in the metadata and the log rather than failing the whole pipeline."""
    try:
        with state_store.open() as store:
            active = store.get_active_config(market.key)
    except TransientError as exc:
        context.log.warning(f"state store unavailable, training {market} with config defaults: {exc}")
        return {}, f"config defaults (state store unavailable: {type(exc).__name__})"
    if active is None:
        return {}, "config defaults (no active config yet)"
    return dict(active.params), f"active config v{active.version} from {active.source}"
