"""The Q-learning trader's public face: parameters in, arrays in, a trained agent and backtests out.

Designed for the optimiser, which calls :func:`train` and :meth:`TrainedAgent.evaluate` thousands of
times: :class:`RLParams` is a small frozen dataclass, nothing is global, and a seed fixes every result.
Prepare a frame once with :func:`prepare` and pass the :class:`EnvArrays` to skip re-discretising.
"""

import base64
import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rof_pipelines.core.backtest import BacktestResult, Trades, buy_and_hold
from rof_pipelines.core.defaults import RL
from rof_pipelines.core.kelly import KellyParams
from rof_pipelines.core.rl.env import BinSpec, EnvArrays, StateSpace, build_env
from rof_pipelines.core.rl.kernel import evaluate_kernel, greedy_action, train_kernel

if TYPE_CHECKING:
    from rof_pipelines.settings import AIConfig

AGENT_FORMAT = "rof.qlearn"
AGENT_VERSION = 1
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class RLParams:
    """Everything that decides a training run and its backtest."""

    alpha: float = RL["alpha"].default
    gamma: float = RL["gamma"].default
    epsilon: float = RL["epsilon"].default
    epsilon_decay: float = RL["epsilon_decay"].default  # epsilon *= epsilon_decay after every episode ...
    epsilon_min: float = RL["epsilon_min"].default  # ... but never below this floor
    alpha_decay: float = RL["alpha_decay"].default  # alpha = alpha0 / (1 + alpha_decay * visits(s, a))
    episodes: int = RL["episodes"].default
    fee: float = RL["fee"].default  # fraction of the traded notional
    slippage: float = RL["slippage"].default  # fraction of the traded notional, on top of the fee
    allow_short: bool = RL["allow_short"].default
    risk_aversion: float = RL["risk_aversion"].default  # reward -= risk_aversion * (exposure * return) ** 2
    bins: BinSpec = field(default_factory=BinSpec)
    kelly: KellyParams = field(default_factory=KellyParams)
    seed: int = RL["seed"].default

    def __post_init__(self) -> None:
        checks = (
            (0 < self.alpha <= 1, "alpha must be in (0, 1]"),
            (0 <= self.gamma < 1, "gamma must be in [0, 1)"),
            (0 <= self.epsilon <= 1, "epsilon must be in [0, 1]"),
            (0 < self.epsilon_decay <= 1, "epsilon_decay must be in (0, 1]"),
            (0 <= self.epsilon_min <= self.epsilon, "epsilon_min must be in [0, epsilon]"),
            (self.alpha_decay >= 0, "alpha_decay must be >= 0"),
            (self.episodes >= 1, "episodes must be >= 1"),
            (0 <= self.fee < 1 and 0 <= self.slippage < 1, "fee and slippage must be in [0, 1)"),
            (self.fee + self.slippage < 1, "fee + slippage must be < 1"),
            (self.risk_aversion >= 0, "risk_aversion must be >= 0"),
            (self.seed >= 0, "seed must be >= 0"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(f"RLParams: {message}")

    @property
    def cost(self) -> float:
        """Charged per unit of exposure changed."""
        return self.fee + self.slippage

    @classmethod
    def from_settings(cls, ai_config: "AIConfig", **overrides: Any) -> "RLParams":
        """Start from ``ai_config.rl`` and ``ai_config.kelly``; ``overrides`` win (the optimiser's genes)."""
        rl = ai_config.rl
        base = cls()
        values: dict[str, Any] = {
            name: getattr(rl, name, getattr(base, name))
            for name in (
                "alpha",
                "gamma",
                "epsilon",
                "epsilon_decay",
                "epsilon_min",
                "alpha_decay",
                "episodes",
                "fee",
                "slippage",
                "allow_short",
                "risk_aversion",
                "seed",
            )
        }
        values["bins"] = BinSpec.from_config(rl, base.bins)
        values["kelly"] = KellyParams.from_settings(ai_config.kelly)
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> "RLParams":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            name: getattr(self, name)
            for name in (
                "alpha",
                "gamma",
                "epsilon",
                "epsilon_decay",
                "epsilon_min",
                "alpha_decay",
                "episodes",
                "fee",
                "slippage",
                "allow_short",
                "risk_aversion",
                "seed",
            )
        }
        out["bins"] = self.bins.to_dict()
        out["kelly"] = self.kelly.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RLParams":
        values = dict(data)
        values["bins"] = BinSpec.from_dict(values["bins"])
        values["kelly"] = KellyParams.from_dict(values["kelly"])
        return cls(**values)


def seed_state(seed: int) -> np.uint64:
    """splitmix64 of the seed: a well-mixed, never-zero xorshift64 state (zero would stick at zero)."""
    z = (int(seed) + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return np.uint64(z or 0x9E3779B97F4A7C15)


def prepare(frame: pd.DataFrame, params: RLParams) -> EnvArrays:
    """Fit the state space on ``frame`` (training data) and discretise it."""
    return build_env(frame, StateSpace.fit(frame, params.bins, params.allow_short))


@dataclass(frozen=True, eq=False)
class TrainedAgent:
    """A Q-table with the state space and parameters that give it meaning."""

    q: np.ndarray  # (n_states, 3) float64; row = market_state * n_positions + position index
    visits: np.ndarray  # (n_states, 3) uint32
    state_space: StateSpace
    params: RLParams
    episode_rewards: np.ndarray  # total reward per episode
    episode_equity: np.ndarray  # final equity per episode (exploring policy, unit size)
    episode_trades: np.ndarray  # position changes per episode
    actions: np.ndarray | None = None  # (episodes, steps) when train(record_actions=True)

    @property
    def state_coverage(self) -> float:
        """Fraction of (market state, position) pairs visited at least once."""
        return float(np.mean(self.visits.sum(axis=1) > 0))

    # --- decisions ----------------------------------------------------------------------------------

    def decide(self, market_state: int, position: int = 0) -> int:
        """Greedy action (0 hold, 1 buy, 2 sell) for a market state and a position of -1 / 0 / +1."""
        if not 0 <= market_state < self.state_space.n_market_states:
            raise ValueError(f"market state {market_state} out of range")
        row = market_state * self.state_space.n_positions + self.state_space.position_index(position)
        return int(greedy_action(self.q, row))

    def act(self, frame: pd.DataFrame, position: int = 0) -> int:
        """The action for the last bar of ``frame`` (a signal; filling it is the caller's business)."""
        states, _ = self.state_space.market_states(frame)
        return self.decide(int(states[-1]), position)

    def evaluate(
        self,
        data: pd.DataFrame | EnvArrays,
        *,
        kelly: KellyParams | None = None,
        kelly_history: np.ndarray | None = None,
        kelly_history_times: np.ndarray | None = None,
        bars_per_year: float | None = None,
        baseline: bool = True,
    ) -> BacktestResult:
        """Greedy backtest with this agent's frozen state space (no refitting: out-of-sample safe).

        ``kelly`` defaults to ``params.kelly``. ``kelly_history`` are unit-size returns of trades closed
        before ``data`` (e.g. a validation period), oldest first; their times (int64 ns) default to the
        first bar's. ``bars_per_year`` defaults to the one implied by the bar spacing.
        """
        env = data if isinstance(data, EnvArrays) else build_env(data, self.state_space)
        if env.state_space != self.state_space:
            raise ValueError("these arrays were prepared with a different state space")
        kelly = kelly or self.params.kelly
        hist = np.ascontiguousarray(
            kelly_history if kelly_history is not None else np.empty(0), dtype=np.float64
        )
        if kelly_history_times is None:
            hist_t = np.full(hist.shape[0], env.times[0], dtype=np.int64)
        else:
            hist_t = np.ascontiguousarray(kelly_history_times, dtype=np.int64)
            if hist_t.shape != hist.shape:
                raise ValueError("kelly_history_times must match kelly_history")
        window_trades = kelly.window_trades or 0
        window_ns = round(kelly.window_seconds * 1e9) if kelly.window_seconds else 0
        (actions, held, equity, entry, exit_, direction, size, ret, _n, next_fraction, _) = evaluate_kernel(
            self.q,
            env.mstate,
            env.step_ret,
            env.times,
            self.state_space.n_positions,
            self.state_space.transitions(),
            self.state_space.exposures(),
            self.params.cost,
            kelly.use_kelly,
            window_trades,
            window_ns,
            kelly.min_trades,
            kelly.max_fraction,
            kelly.warmup_fraction,
            hist,
            hist_t,
        )
        bpy = bars_per_year if bars_per_year is not None else env.bars_per_year()
        base = buy_and_hold(env.step_ret, self.params.cost, bpy, env.index) if baseline else None
        return BacktestResult(
            equity=equity,
            exposure=held,
            trades=Trades(entry=entry, exit=exit_, direction=direction, size=size, ret=ret),
            bars_per_year=bpy,
            actions=actions,
            kelly_fraction_next=float(next_fraction),
            index=env.index,
            baseline=base,
        )

    # --- reporting ----------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """JSON-able training facts for metadata: episodes, reward curve, coverage."""
        return {
            "episodes": int(self.params.episodes),
            "episode_rewards": [float(x) for x in self.episode_rewards],
            "episode_equity": [float(x) for x in self.episode_equity],
            "episode_trades": [int(x) for x in self.episode_trades],
            "state_coverage": self.state_coverage,
            "n_states": int(self.state_space.n_states),
            "n_market_states": int(self.state_space.n_market_states),
        }

    # --- serialisation ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; arrays travel as base64 of their little-endian bytes, so they load bit for bit."""
        return {
            "format": AGENT_FORMAT,
            "version": AGENT_VERSION,
            "params": self.params.to_dict(),
            "state_space": self.state_space.to_dict(),
            "q": _encode(self.q, "<f8"),
            "visits": _encode(self.visits, "<u4"),
            "episode_rewards": _encode(self.episode_rewards, "<f8"),
            "episode_equity": _encode(self.episode_equity, "<f8"),
            "episode_trades": _encode(self.episode_trades, "<i8"),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainedAgent":
        if data.get("format") != AGENT_FORMAT or data.get("version") != AGENT_VERSION:
            raise ValueError(f"not a {AGENT_FORMAT} v{AGENT_VERSION} agent: {data.get('format')!r}")
        params = RLParams.from_dict(data["params"])
        space = StateSpace.from_dict(data["state_space"])
        q = _decode(data["q"], np.float64)
        visits = _decode(data["visits"], np.uint32)
        if q.shape != (space.n_states, 3) or visits.shape != q.shape:
            raise ValueError(f"Q-table shape {q.shape} does not fit the state space ({space.n_states}, 3)")
        if params.allow_short != space.allow_short:
            raise ValueError("params.allow_short disagrees with the state space")
        return cls(
            q=q,
            visits=visits,
            state_space=space,
            params=params,
            episode_rewards=_decode(data["episode_rewards"], np.float64),
            episode_equity=_decode(data["episode_equity"], np.float64),
            episode_trades=_decode(data["episode_trades"], np.int64),
        )

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, blob: bytes) -> "TrainedAgent":
        return cls.from_dict(json.loads(blob.decode("utf-8")))


def train(
    data: pd.DataFrame | EnvArrays,
    params: RLParams,
    *,
    init_q: np.ndarray | None = None,
    record_actions: bool = False,
) -> TrainedAgent:
    """Train on a frame (the state space is fitted on it) or on prepared arrays.

    ``init_q`` warm-starts from another table of the same shape (transfer learning); visit counts start
    at zero either way. ``record_actions`` keeps every action of every episode (tests, diagnostics).
    """
    env = data if isinstance(data, EnvArrays) else prepare(data, params)
    space = env.state_space
    if space.allow_short != params.allow_short:
        raise ValueError("params.allow_short disagrees with the prepared state space")
    shape = (space.n_states, 3)
    if init_q is None:
        q = np.zeros(shape, dtype=np.float64)
    else:
        if init_q.shape != shape:
            raise ValueError(f"init_q has shape {init_q.shape}, the state space needs {shape}")
        q = np.array(init_q, dtype=np.float64, copy=True)
    visits = np.zeros(shape, dtype=np.uint32)
    steps = env.n_bars - 1
    actions_out = np.zeros((params.episodes, steps) if record_actions else (0, 0), dtype=np.int8)
    rewards, equity, trades, _ = train_kernel(
        q,
        visits,
        env.mstate,
        env.step_ret,
        space.n_positions,
        space.transitions(),
        space.exposures(),
        float(params.alpha),
        float(params.alpha_decay),
        float(params.gamma),
        float(params.epsilon),
        float(params.epsilon_decay),
        float(params.epsilon_min),
        float(params.cost),
        float(params.risk_aversion),
        int(params.episodes),
        seed_state(params.seed),
        actions_out,
    )
    return TrainedAgent(
        q=q,
        visits=visits,
        state_space=space,
        params=params,
        episode_rewards=rewards,
        episode_equity=equity,
        episode_trades=trades,
        actions=actions_out if record_actions else None,
    )


def _encode(array: np.ndarray, dtype: str) -> dict[str, Any]:
    arr = np.ascontiguousarray(array, dtype=dtype)
    return {"dtype": dtype, "shape": list(arr.shape), "data": base64.b64encode(arr.tobytes()).decode("ascii")}


def _decode(blob: dict[str, Any], dtype: type) -> np.ndarray:
    raw = base64.b64decode(blob["data"])
    arr = np.frombuffer(raw, dtype=np.dtype(blob["dtype"])).reshape(blob["shape"])
    return arr.astype(dtype, copy=True)
