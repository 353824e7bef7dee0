"""Fitness: one genome -> (total return, Sharpe, -max drawdown), a pure function of genome and data.

The data is the window's training part only (``core.windows.split_train_test(...).train``); the
optimiser never sees the held-out part. It is cut once more, chronologically, into a *fit* part the
agent trains on and a *validation* part the trained agent is scored on greedily with Kelly sizing,
so a genome is judged on bars it did not learn from (the same protocol as the ``q_table`` asset:
unit-size in-sample trades seed the Kelly window). The agent's seed is fixed by the base parameters,
so the same genome on the same data always scores the same, in any process.

Speed: evaluation runs thousands of times, so the state space is fitted with numpy here instead of
:func:`rof_pipelines.core.rl.prepare` (pandas); tests hold the two equal. Indicator columns a genome
re-windows are recomputed per (slice, indicator, window) and cached. Environments are assembled from
cached per-feature pieces (warm-up end, quantile edges, bin codes, step returns) that genomes with
other windows or bin counts share, and cached whole per (slice, bins, windows). Every cache is a
bounded LRU, and each worker process keeps its own.

Stop-loss / take-profit apply in the evaluation walk only (training is unchanged), through the RL
evaluation kernel's exit levels; both off reproduces :meth:`TrainedAgent.evaluate` exactly.
"""

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from rof_pipelines.core.backtest import max_drawdown, sharpe_ratio
from rof_pipelines.core.features import StateFeature, state_feature, state_features
from rof_pipelines.core.ga.space import Candidate, FeatureWindows, Genome, SearchSpace
from rof_pipelines.core.indicators import IndicatorWindows
from rof_pipelines.core.kelly import KellyParams
from rof_pipelines.core.rl.agent import RLParams, train
from rof_pipelines.core.rl.env import BinSpec, EnvArrays, FeatureBins, StateSpace
from rof_pipelines.core.rl.kernel import evaluate_kernel
from rof_pipelines.errors import DataValidationError

FULL, SAMPLE = "full", "sample"
MIN_PART_BARS = 50
_FEATURE_CACHE_SIZE = 256
_ENV_CACHE_SIZE = 512
_PIECE_CACHE_SIZE = 4096  # starts, edges, int16 bin codes (2 bytes a bar): < 60 MB at 7,000 bars
_PRICE_CACHE_SIZE = 256  # step returns per start row (8 bytes a bar): < 15 MB at 7,000 bars


@dataclass(frozen=True, eq=False)
class MarketSlice:
    """A contiguous stretch of bars: prices, the frame's raw features, and where validation starts."""

    name: str
    times: np.ndarray  # int64 ns
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    features: dict[str, np.ndarray]  # raw feature values as the state space reads them; inf -> nan
    fit_rows: int
    fingerprint: str
    bars_per_year: float | None = None  # from the market's calendar (frame.attrs); None: bar spacing

    @property
    def n(self) -> int:
        return int(self.close.shape[0])


def _raw_frame_features(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The raw value of every registered feature whose columns the frame has (the values the state
    space reads, ``core.features``), as float64 arrays."""
    out: dict[str, np.ndarray] = {}
    for feature in state_features():
        if not set(feature.columns) <= set(frame.columns):
            continue
        values = feature.values(frame).to_numpy(dtype=np.float64)
        out[feature.name] = np.where(np.isfinite(values), values, np.nan)
    return out


def _fingerprint(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(frame.index.as_unit("ns").asi8).tobytes())
    for column in sorted(frame.columns):
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values):
            digest.update(column.encode())
            digest.update(np.ascontiguousarray(values.to_numpy(dtype=np.float64)).tobytes())
    return digest.hexdigest()


def make_slice(name: str, frame: pd.DataFrame, validation_fraction: float) -> MarketSlice:
    """Freeze ``frame`` (indicator-frame columns, DatetimeIndex) into arrays; the last
    ``validation_fraction`` of its bars validate."""
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise DataValidationError("the optimiser needs a frame indexed by bar time")
    for column in ("open", "high", "low", "close"):
        if column not in frame.columns:
            raise DataValidationError(f"the optimiser's frame lacks column {column!r}")
    annual = frame.attrs.get("bars_per_year")
    frame = frame.sort_index()
    n = len(frame)
    fit_rows = round(n * (1.0 - validation_fraction))
    if fit_rows < MIN_PART_BARS or n - fit_rows < MIN_PART_BARS:
        raise DataValidationError(
            f"{name} slice: {n} bars give {fit_rows} to fit and {n - fit_rows} to validate; "
            f"need {MIN_PART_BARS} each"
        )
    return MarketSlice(
        name=name,
        times=frame.index.as_unit("ns").asi8.astype(np.int64),
        open=frame["open"].to_numpy(dtype=np.float64),
        high=frame["high"].to_numpy(dtype=np.float64),
        low=frame["low"].to_numpy(dtype=np.float64),
        close=frame["close"].to_numpy(dtype=np.float64),
        features=_raw_frame_features(frame),
        fit_rows=fit_rows,
        fingerprint=_fingerprint(frame)
        + f"|v{validation_fraction!r}"
        + (f"|y{float(annual)!r}" if annual else ""),
        bars_per_year=float(annual) if annual else None,
    )


class FitnessData:
    """Everything a worker needs to score genomes: the slices, the base agent and the space.

    Pickled once per worker process (caches are dropped on the way and rebuilt there)."""

    def __init__(
        self,
        slices: dict[str, MarketSlice],
        base: RLParams,
        space: SearchSpace,
        windows: IndicatorWindows | None = None,
    ) -> None:
        self.slices = slices
        self.base = base
        self.space = space
        self.windows = windows or IndicatorWindows()
        self._features: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._envs: OrderedDict[tuple, tuple[EnvArrays, EnvArrays]] = OrderedDict()
        self._pieces: OrderedDict[tuple, Any] = OrderedDict()
        self._price_cache: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_features"] = OrderedDict()
        state["_envs"] = OrderedDict()
        state["_pieces"] = OrderedDict()
        state["_price_cache"] = OrderedDict()
        return state

    def fingerprint(self, slice_name: str) -> str:
        """What a cached fitness on this slice depends on besides the genome."""
        s = self.slices[slice_name]
        base = hashlib.sha256(repr(sorted(self.base.to_dict().items())).encode()).hexdigest()[:16]
        return f"{s.fingerprint}|{base}"

    # -- features ----------------------------------------------------------------------------------

    def feature(self, slice_name: str, name: str, window: int | None) -> np.ndarray:
        s = self.slices[slice_name]
        if window is None:
            if name not in s.features:
                raise DataValidationError(f"the frame has no column for feature {name!r}")
            return s.features[name]
        key = (slice_name, name, window)
        cached = _recall(self._features, key)
        if cached is not None:
            return cached
        values = _windowed_feature(s, name, window, self.windows)
        _remember(self._features, key, values, _FEATURE_CACHE_SIZE)
        return values

    def envs(self, slice_name: str, bins: BinSpec, windows: FeatureWindows, allow_short: bool):
        """(fit env with its fitted state space, validation env in that space), cached.

        Equal to :func:`fit_state_space` + :func:`env_arrays` on the two parts (a test holds them
        equal), but assembled from per-feature pieces that genomes share: most genomes differ in some
        window or bin count, so whole environments rarely repeat while their features' edges, bin
        codes and the price arrays do, and building an environment becomes a few integer additions."""
        key = (slice_name, bins, windows, allow_short)
        cached = _recall(self._envs, key)
        if cached is not None:
            return cached
        s = self.slices[slice_name]
        enabled = bins.enabled()
        columns = tuple((f.name, windows.of(f)) for f in enabled)
        cut = s.fit_rows
        fit_start = self._first_valid(slice_name, columns, 0, cut)
        features = tuple(
            FeatureBins(
                f.name,
                self._edges(slice_name, f, window, bins.of(f), fit_start)
                if f.binning.fitted
                else f.binning.edges(bins.of(f)),
            )
            for f, (_, window) in zip(enabled, columns, strict=True)
        )
        space = StateSpace(features, allow_short=allow_short)
        fit_env = self._env(slice_name, columns, space, 0, cut, fit_start)
        val_start = self._first_valid(slice_name, columns, cut, s.n)
        val_env = self._env(slice_name, columns, space, cut, s.n, val_start)
        pair = (fit_env, val_env)
        _remember(self._envs, key, pair, _ENV_CACHE_SIZE)
        return pair

    def bars_per_year(self, env: EnvArrays) -> float:
        """``env.bars_per_year()`` (a median over every bar) once per time axis: environments' axes
        are suffixes of their slice's, so length and ends tell them apart."""
        key = (env.times.shape[0], int(env.times[0]), int(env.times[-1]), env.calendar_bars_per_year)
        value = _recall(self._pieces, ("bars_per_year", key))
        if value is None:
            value = env.bars_per_year()
            _remember(self._pieces, ("bars_per_year", key), value, _PIECE_CACHE_SIZE)
        return value

    # -- the pieces environments are assembled from (rows lo..hi of a slice) ---------------------------

    def _first_valid(self, slice_name: str, columns: tuple, lo: int, hi: int) -> int:
        """:func:`_first_valid` on rows lo..hi of these feature columns (relative to lo)."""
        key = ("start", slice_name, columns, lo, hi)
        start = _recall(self._pieces, key)
        if start is None:
            s = self.slices[slice_name]
            raw = {name: self.feature(slice_name, name, window)[lo:hi] for name, window in columns}
            start = _first_valid(raw, s.open[lo:hi], s.close[lo:hi])
            _remember(self._pieces, key, start, _PIECE_CACHE_SIZE)
        return start

    def _edges(
        self, slice_name: str, feature: StateFeature, window: int | None, setting: Any, start: int
    ) -> tuple:
        """Edges of one fitted feature on the fit rows from ``start`` (see fit_state_space)."""
        key = ("edges", slice_name, feature.name, window, setting, start)
        edges = _recall(self._pieces, key)
        if edges is None:
            s = self.slices[slice_name]
            filled = _ffill(self.feature(slice_name, feature.name, window)[start : s.fit_rows])
            edges = feature.binning.edges(setting, filled)
            _remember(self._pieces, key, edges, _PIECE_CACHE_SIZE)
        return edges

    def _codes(self, slice_name: str, name: str, window: int | None, edges: tuple, lo: int, hi: int):
        """(first defined row f0, bin of every row from f0 on, forward-filled), rows lo..hi. The codes
        of an environment starting at row s >= f0 are ``codes[s - f0:]``: s is itself defined, so a
        forward fill from f0 and one from s agree from s on."""
        key = ("codes", slice_name, name, window, edges, lo, hi)
        found = _recall(self._pieces, key)
        if found is None:
            values = self.feature(slice_name, name, window)[lo:hi]
            found = _bin_codes(values, np.asarray(edges, dtype=np.float64))
            _remember(self._pieces, key, found, _PIECE_CACHE_SIZE)
        return found

    def _prices(self, slice_name: str, lo: int, hi: int, start: int) -> tuple[np.ndarray, np.ndarray]:
        """(fill-to-fill step returns, bar times) of rows lo + start..hi (see env_arrays)."""
        key = (slice_name, lo, hi, start)
        found = _recall(self._price_cache, key)
        if found is None:
            s = self.slices[slice_name]
            found = _step_returns(s.open[lo:hi], s.close[lo:hi], s.times[lo:hi], start)
            _remember(self._price_cache, key, found, _PRICE_CACHE_SIZE)
        return found

    def _env(
        self, slice_name: str, columns: tuple, space: StateSpace, lo: int, hi: int, start: int
    ) -> EnvArrays:
        states = np.zeros(hi - lo - start, dtype=np.int32)
        for (name, window), feature, stride in zip(columns, space.features, space._strides, strict=True):
            f0, codes = self._codes(slice_name, name, window, feature.edges, lo, hi)
            states += codes[start - f0 :] * np.int32(stride)
        step_ret, times = self._prices(slice_name, lo, hi, start)
        annual = self.slices[slice_name].bars_per_year
        return EnvArrays(states, step_ret, times, space, calendar_bars_per_year=annual)


def _recall(cache: OrderedDict, key: Any) -> Any:
    """The cached value or None; a hit becomes the most recently used."""
    value = cache.get(key)
    if value is not None:
        cache.move_to_end(key)
    return value


@njit(cache=True)
def _bin_codes(values: np.ndarray, edges: np.ndarray) -> tuple[int, np.ndarray]:  # pragma: no cover
    """(first non-NaN row f0, ``searchsorted(edges, ffill(values[f0:]), side="right")`` as int16) in one
    pass: the bin of a value is the number of edges at or below it."""
    n = values.shape[0]
    f0 = 0
    while f0 < n and np.isnan(values[f0]):
        f0 += 1
    codes = np.empty(n - f0, np.int16)
    current = 0.0
    for i in range(f0, n):
        if not np.isnan(values[i]):
            current = values[i]
        code = 0
        while code < edges.shape[0] and edges[code] <= current:
            code += 1
        codes[i - f0] = code
    return f0, codes


def _remember(cache: OrderedDict, key: Any, value: Any, size: int) -> None:
    cache[key] = value
    if len(cache) > size:
        cache.popitem(last=False)


def build_fitness_data(
    frame: pd.DataFrame,
    base: RLParams,
    space: SearchSpace,
    *,
    validation_fraction: float = 0.3,
    sample_fraction: float = 1.0,
    windows: IndicatorWindows | None = None,
) -> FitnessData:
    """``frame`` is the training part of the window. The sample slice is its most recent
    ``sample_fraction`` (contiguous: an RL agent learns from sequences)."""
    slices = {FULL: make_slice(FULL, frame, validation_fraction)}
    if sample_fraction < 1.0:
        ordered = frame.sort_index()
        rows = round(len(ordered) * sample_fraction)
        slices[SAMPLE] = make_slice(SAMPLE, ordered.iloc[len(ordered) - rows :], validation_fraction)
    return FitnessData(slices, base, space, windows)


def _windowed_feature(s: MarketSlice, name: str, window: int, windows: IndicatorWindows) -> np.ndarray:
    """The raw value of feature ``name`` with another indicator window (its ``Rewindow`` in
    ``core.features``), computed on the slice alone as ``core.indicators.build_indicator_frame``
    does (its first bars are warm-up); non-finite values become NaN."""
    feature = state_feature(name)
    if feature.window is None:
        raise ValueError(f"feature {name!r} has no window gene")
    values = feature.window.compute(s, window, windows)
    return np.where(np.isfinite(values), values, np.nan)


# --- state space and environment, numpy twins of core.rl.env ---------------------------------------


def _enabled(bins: BinSpec) -> tuple[str, ...]:
    """Names of the features ``bins`` keeps, in state order."""
    return tuple(f.name for f in bins.enabled())


def _first_valid(raw: dict[str, np.ndarray], opens: np.ndarray, closes: np.ndarray) -> int:
    ok = ~np.isnan(opens) & ~np.isnan(closes)
    for values in raw.values():
        ok &= ~np.isnan(values)
    hits = np.flatnonzero(ok)
    if hits.size == 0:
        raise DataValidationError("no row of the indicator frame has every feature defined")
    return int(hits[0])


def _ffill(values: np.ndarray) -> np.ndarray:
    """Forward fill; the first element is defined (it is the first valid row)."""
    index = np.where(np.isnan(values), 0, np.arange(values.shape[0]))
    np.maximum.accumulate(index, out=index)
    return values[index]


def fit_state_space(
    raw: dict[str, np.ndarray], opens: np.ndarray, closes: np.ndarray, bins: BinSpec, allow_short: bool
) -> StateSpace:
    """``StateSpace.fit`` on arrays (same warm-up cut, forward fill and quantile edges)."""
    start = _first_valid(raw, opens, closes)
    filled = {k: _ffill(v[start:]) for k, v in raw.items()}
    features = tuple(
        FeatureBins(f.name, f.binning.edges(bins.of(f), filled[f.name] if f.binning.fitted else None))
        for f in bins.enabled()
    )
    return StateSpace(features, allow_short=allow_short)


def env_arrays(
    raw: dict[str, np.ndarray],
    opens: np.ndarray,
    closes: np.ndarray,
    times: np.ndarray,
    space: StateSpace,
) -> EnvArrays:
    """``core.rl.env.build_env`` on arrays: states, fill-to-fill returns and times of usable bars."""
    names = [f.name for f in space.features]
    used = {name: raw[name] for name in names}
    start = _first_valid(used, opens, closes)
    states = np.zeros(opens.shape[0] - start, dtype=np.int32)
    for feature, stride in zip(space.features, space._strides, strict=True):
        values = _ffill(used[feature.name][start:])
        edges = np.asarray(feature.edges, dtype=np.float64)
        states += (np.searchsorted(edges, values, side="right") * stride).astype(np.int32)
    step_ret, bar_times = _step_returns(opens, closes, times, start)
    return EnvArrays(states, step_ret, bar_times, space)


def _step_returns(
    opens: np.ndarray, closes: np.ndarray, times: np.ndarray, start: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fill-to-fill returns and times of the bars from ``start`` (``core.rl.env.build_env``)."""
    o, c = opens[start:], closes[start:]
    for label, values in (("open", o), ("close", c)):
        bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)))
        if bad.size:
            raise DataValidationError(f"column {label!r} must be finite and > 0; row {start + bad[0]}")
    fill = np.empty(o.shape[0], dtype=np.float64)
    fill[:-1] = o[1:]
    fill[-1] = c[-1]
    step_ret = fill[1:] / fill[:-1] - 1.0
    return step_ret, np.ascontiguousarray(times[start:], dtype=np.int64)


# --- evaluation with exits -------------------------------------------------------------------------


def walk(
    q: np.ndarray,
    env: EnvArrays,
    params: RLParams,
    kelly: KellyParams,
    stop_loss: float,
    take_profit: float,
    kelly_history: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(equity, unit-size net return per trade, trades closed by a level): the agent's greedy,
    Kelly-sized walk with the strategy's exit levels (``core.rl.kernel.evaluate_kernel``)."""
    space = env.state_space
    hist = np.ascontiguousarray(kelly_history if kelly_history is not None else np.empty(0), np.float64)
    hist_t = np.full(hist.shape[0], env.times[0], dtype=np.int64)
    out = evaluate_kernel(
        q,
        env.mstate,
        env.step_ret,
        env.times,
        space.n_positions,
        space.transitions(),
        space.exposures(),
        params.cost,
        kelly.use_kelly,
        kelly.window_trades or 0,
        round(kelly.window_seconds * 1e9) if kelly.window_seconds else 0,
        kelly.min_trades,
        kelly.max_fraction,
        kelly.warmup_fraction,
        hist,
        hist_t,
        float(stop_loss),
        float(take_profit),
    )
    equity, trade_returns, forced = out[2], out[7], out[10]
    return equity, trade_returns, forced


_UNIT = KellyParams(use_kelly=False, window_trades=1)


def score_candidate(
    candidate: Candidate, fit_env: EnvArrays, val_env: EnvArrays, bars_per_year: float | None = None
) -> tuple[tuple[float, float, float], dict[str, float]]:
    """Train on ``fit_env``, walk ``val_env``; ((return, Sharpe, -drawdown), facts). ``bars_per_year``
    defaults to ``val_env``'s own."""
    params = candidate.params
    agent = train(fit_env, params)
    _, in_sample, _ = walk(agent.q, fit_env, params, _UNIT, candidate.stop_loss, candidate.take_profit)
    equity, trades, forced = walk(
        agent.q, val_env, params, params.kelly, candidate.stop_loss, candidate.take_profit, in_sample
    )
    total = float(equity[-1] - 1.0)
    sharpe = sharpe_ratio(equity[1:] / equity[:-1] - 1.0, bars_per_year or val_env.bars_per_year())
    drawdown = max_drawdown(equity)
    objectives = tuple(float(np.nan_to_num(x, nan=0.0, posinf=1e6, neginf=-1e6)) for x in (total, sharpe))
    facts = {"n_trades": float(trades.shape[0]), "forced_exits": float(forced)}
    return (objectives[0], objectives[1], -float(drawdown)), facts


def evaluate_genome(data: FitnessData, slice_name: str, genome: Genome) -> tuple[float, float, float]:
    """The fitness the optimiser maximises: (total return, Sharpe, -max drawdown) on validation."""
    candidate = data.space.decode(genome, data.base)
    fit_env, val_env = data.envs(slice_name, candidate.params.bins, candidate.windows, data.base.allow_short)
    objectives, _ = score_candidate(candidate, fit_env, val_env, data.bars_per_year(val_env))
    return objectives
