"""``q_table``: the market's production agent, trained with its active parameters on the window."""

import hashlib
import math

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, Failure, MetadataValue, Output, asset

from rof_pipelines.adapters.experiments import active_rl_params
from rof_pipelines.adapters.resources import RofSettings, StateStoreResource
from rof_pipelines.core.kelly import KellyParams
from rof_pipelines.core.market import Market
from rof_pipelines.core.rl import RLParams, train
from rof_pipelines.core.windows import split_train_test
from rof_pipelines.defs.reporting import finite_metadata, line_plot_markdown, metrics_markdown
from rof_pipelines.errors import TransientError
from rof_pipelines.partitions import day_bounds, market_and_day, market_day_partitions, trailing_days

# The longest `ab_tests.data_period` a window may span; the mapping reads at most this many days.
MAX_WINDOW_DAYS = 7


def partition_seed(market: Market, day_key: str) -> int:
    """A stable seed per market and day: the same partition always trains the same agent."""
    return int.from_bytes(hashlib.sha256(f"{market.key}|{day_key}".encode()).digest()[:4], "little")


def window_frame(frames: pd.DataFrame, end: pd.Timestamp, period: pd.Timedelta) -> pd.DataFrame:
    return frames.loc[(frames.index >= end - period) & (frames.index < end)].sort_index()


@asset(
    partitions_def=market_day_partitions,
    group_name="rl",
    io_manager_key="frame_io_manager",
    kinds={"numba"},
    ins={"indicator_frame": AssetIn(partition_mapping=trailing_days(MAX_WINDOW_DAYS))},
)
def q_table(
    context: AssetExecutionContext,
    settings: RofSettings,
    state_store: StateStoreResource,
    indicator_frame: pd.DataFrame,
):
    """Tabular Q-learning agent for the market, trained on the first 70 % of the `ab_tests.data_period`
    window ending with this day, backtested greedily with Kelly sizing on the remaining 30 %. Uses the
    market's active parameters from the state store (the config's `ai_config` until the optimiser
    promotes others). The stored value is the serialised agent: Q-table, state space and parameters."""
    config = settings.load()
    market, day = market_and_day(context.partition_key)
    period = pd.Timedelta(config.ab_tests.data_period)
    if period > pd.Timedelta(days=MAX_WINDOW_DAYS):
        raise Failure(
            description=f"ab_tests.data_period {period} is longer than the {MAX_WINDOW_DAYS} days q_table reads",
            allow_retries=False,
        )
    _, end = day_bounds(day)
    frame = window_frame(indicator_frame, pd.Timestamp(end), period)
    split = split_train_test(frame, config.ab_tests.train_fraction)
    if len(split.train) < 100 or len(split.test) < 30:
        raise Failure(description=f"only {len(frame)} bars in the window for {market}; need at least 150")
    train_part, test_part = split.train, split.test

    overrides, source = active_overrides(context, state_store, market)
    params = RLParams.from_settings(config.ai_config, seed=partition_seed(market, day.isoformat()))
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
            "market": market.key,
            "date": day.isoformat(),
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
