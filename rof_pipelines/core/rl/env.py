"""The trading environment: indicator frame -> discrete market states, step returns and positions.

Timing (no look-ahead): the decision at bar t sees only features of bars <= t (they are computed from
closes up to t; interior gaps are forward-filled, which is causal). It fills at the **open of bar
t + 1**, the first price after the bar that produced the features. The exposure chosen at t earns
``step_ret[t] = fill[t + 1] / fill[t] - 1`` with ``fill[t] = open[t + 1]`` and the final mark
``fill[n - 1] = close[n - 1]``; so n bars give n - 1 decisions, like the C reference.

Features: the ones registered in :mod:`rof_pipelines.core.features`, in its order (each optional:
its :class:`BinSpec` setting can drop it; the fitted bin edges are stored in the :class:`StateSpace`).

Positions: 0 flat, 1 long, and 2 short when ``allow_short``. Actions: 0 hold, 1 buy, 2 sell. Buy and
sell step the position one unit: buy covers a short or goes long; sell closes a long, or (flat, with
``allow_short``) goes short. A position is therefore always closed before the other side is opened.
"""

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rof_pipelines.core.features import (
    FeatureSettings,
    StateFeature,
    bin_defaults,
    feature_names,
    state_feature,
    state_features,
)
from rof_pipelines.errors import DataValidationError

STATE_SPACE_VERSION = 1


class BinSpec(FeatureSettings):
    """How finely each state feature is cut: one keyword setting per registered feature, named and
    defaulted by its binning rule in ``core.features`` (``rsi_edges=(30.0, 70.0)``, ``macd_levels=2``,
    ``bb_edges``, ``vol_bins``, ``trend_levels``); an empty tuple or 0 levels / 1 bin drops it."""

    __slots__ = ()

    @classmethod
    def defaults(cls) -> dict[str, tuple[Any, Any]]:
        return bin_defaults()

    def of(self, feature: StateFeature) -> Any:
        """This spec's setting for ``feature``."""
        return getattr(self, feature.binning.setting)

    def enabled(self) -> tuple[StateFeature, ...]:
        """The features this spec keeps, in state order."""
        return tuple(f for f in state_features() if f.binning.enabled(self.of(f)))

    def to_dict(self) -> dict[str, Any]:
        return {f.binning.setting: f.binning.to_json(self.of(f)) for f in state_features()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BinSpec":
        """A stored spec; a feature it does not mention keeps its default."""
        return cls(
            **{
                f.binning.setting: f.binning.from_json(data[f.binning.setting])
                for f in state_features()
                if f.binning.setting in data
            }
        )

    @classmethod
    def from_config(cls, config: Any, base: "BinSpec | None" = None) -> "BinSpec":
        """The settings ``config`` (e.g. ``settings.RLConfig``) has an attribute for, over ``base``."""
        base = base or cls()
        return cls(
            **{f.binning.setting: getattr(config, f.binning.setting, base.of(f)) for f in state_features()}
        )


@dataclass(frozen=True)
class FeatureBins:
    """One feature and its bin edges: ``bin = searchsorted(edges, value, side="right")``."""

    name: str
    edges: tuple[float, ...]

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1


@dataclass(frozen=True)
class StateSpace:
    """Everything needed to turn a frame into table rows; stored with the Q-table so a loaded agent
    sees exactly the states it was trained on (quantile edges come from the training data only)."""

    features: tuple[FeatureBins, ...]
    allow_short: bool = False
    version: int = STATE_SPACE_VERSION
    _strides: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        known = feature_names()
        for feature in self.features:
            if feature.name not in known:
                raise ValueError(f"unknown feature {feature.name!r}; known: {sorted(known)}")
        strides = []
        stride = 1
        for feature in reversed(self.features):
            strides.append(stride)
            stride *= feature.n_bins
        object.__setattr__(self, "_strides", tuple(reversed(strides)))

    # --- shape --------------------------------------------------------------------------------------

    @property
    def n_market_states(self) -> int:
        total = 1
        for feature in self.features:
            total *= feature.n_bins
        return total

    @property
    def n_positions(self) -> int:
        return 3 if self.allow_short else 2

    @property
    def n_states(self) -> int:
        """Rows of the Q-table: (market state, position) pairs."""
        return self.n_market_states * self.n_positions

    def transitions(self) -> np.ndarray:
        """``trans[position, action]`` -> next position (see the module docstring)."""
        if self.allow_short:  # 0 flat, 1 long, 2 short
            return np.array([[0, 1, 2], [1, 1, 0], [2, 0, 2]], dtype=np.int64)
        return np.array([[0, 1, 0], [1, 1, 0]], dtype=np.int64)

    def exposures(self) -> np.ndarray:
        return np.array([0.0, 1.0, -1.0][: self.n_positions], dtype=np.float64)

    def position_index(self, exposure: int) -> int:
        """-1 / 0 / +1 -> the position index used in the table."""
        if exposure == 0:
            return 0
        if exposure == 1:
            return 1
        if exposure == -1 and self.allow_short:
            return 2
        raise ValueError(f"position {exposure} is not valid here (allow_short={self.allow_short})")

    # --- fitting and transforming -------------------------------------------------------------------

    @classmethod
    def fit(cls, frame: pd.DataFrame, bins: BinSpec | None = None, allow_short: bool = False) -> "StateSpace":
        """Fix the edges; the quantile-based ones from ``frame`` (the training data) only."""
        bins = bins or BinSpec()
        enabled = bins.enabled()
        raw = _raw_features(frame, tuple(f.name for f in enabled))
        start = _first_valid(raw, frame)
        raw = raw.iloc[start:].ffill()
        features = tuple(
            FeatureBins(
                f.name,
                f.binning.edges(bins.of(f), raw[f.name].to_numpy() if f.binning.fitted else None),
            )
            for f in enabled
        )
        return cls(features, allow_short=allow_short)

    def market_states(self, frame: pd.DataFrame) -> tuple[np.ndarray, int]:
        """(state per usable bar, index of the first usable bar). Leading warm-up rows where a feature
        or a price is not yet defined are skipped; later gaps are forward-filled."""
        names = tuple(f.name for f in self.features)
        raw = _raw_features(frame, names)
        start = _first_valid(raw, frame)
        raw = raw.iloc[start:].ffill()
        states = np.zeros(len(raw), dtype=np.int32)
        for feature, stride in zip(self.features, self._strides, strict=True):
            values = raw[feature.name].to_numpy(dtype=np.float64)
            edges = np.asarray(feature.edges, dtype=np.float64)
            states += (np.searchsorted(edges, values, side="right") * stride).astype(np.int32)
        return states, start

    # --- serialisation ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "allow_short": self.allow_short,
            "features": [{"name": f.name, "edges": [float(e) for e in f.edges]} for f in self.features],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StateSpace":
        if data.get("version") != STATE_SPACE_VERSION:
            raise ValueError(f"unsupported state-space version {data.get('version')!r}")
        features = tuple(
            FeatureBins(f["name"], tuple(float(e) for e in f["edges"])) for f in data["features"]
        )
        return cls(features, allow_short=bool(data["allow_short"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "StateSpace":
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class EnvArrays:
    """A frame prepared once for many train / evaluate calls (the optimiser reuses it)."""

    mstate: np.ndarray  # int32, n bars
    step_ret: np.ndarray  # float64, n - 1 steps
    times: np.ndarray  # int64 ns (bar open time), n bars
    state_space: StateSpace
    index: pd.DatetimeIndex | None = None
    # From the market's calendar and bar interval (``frame.attrs["bars_per_year"]``); None: 24/7 rule.
    calendar_bars_per_year: float | None = None

    def __post_init__(self) -> None:
        n = self.mstate.shape[0]
        if n < 2:
            raise DataValidationError(f"need at least 2 usable bars, got {n}")
        if self.step_ret.shape != (n - 1,) or self.times.shape != (n,):
            raise DataValidationError(
                f"shapes disagree: mstate {self.mstate.shape}, step_ret {self.step_ret.shape} (want n-1), "
                f"times {self.times.shape}"
            )
        if self.mstate.min() < 0 or self.mstate.max() >= self.state_space.n_market_states:
            raise DataValidationError("market states out of range for this state space")
        if not np.isfinite(self.step_ret).all():
            raise DataValidationError("step returns must be finite")
        per_year = self.calendar_bars_per_year
        if per_year is not None and not (np.isfinite(per_year) and per_year > 0):
            raise DataValidationError(f"calendar_bars_per_year must be finite and > 0, got {per_year}")

    @property
    def n_bars(self) -> int:
        return int(self.mstate.shape[0])

    @classmethod
    def from_arrays(
        cls,
        mstate: np.ndarray,
        step_ret: np.ndarray,
        state_space: StateSpace,
        times: np.ndarray | None = None,
    ) -> "EnvArrays":
        """For synthetic data and benchmarks; ``times`` default to one bar per minute from 0."""
        mstate = np.ascontiguousarray(mstate, dtype=np.int32)
        if times is None:
            times = np.arange(mstate.shape[0], dtype=np.int64) * 60_000_000_000
        return cls(
            mstate,
            np.ascontiguousarray(step_ret, dtype=np.float64),
            np.ascontiguousarray(times, dtype=np.int64),
            state_space,
        )

    def bars_per_year(self) -> float:
        """The calendar's figure when the frame carried one; else from the median bar spacing, as if
        the market traded around the clock (365.25 days), which overstates it for exchanges."""
        if self.calendar_bars_per_year is not None:
            return self.calendar_bars_per_year
        if self.times.shape[0] < 2:
            raise ValueError("need two bars to infer the bar interval")
        spacing = float(np.median(np.diff(self.times)))
        if spacing <= 0:
            raise ValueError("bar times must increase")
        return 365.25 * 86400e9 / spacing


def build_env(frame: pd.DataFrame, state_space: StateSpace) -> EnvArrays:
    """States, fill-to-fill returns and times of the usable bars of an indicator frame.

    ``frame.attrs["bars_per_year"]``, set by whoever knows the market's calendar and bar interval,
    becomes the environment's annualisation factor.
    """
    for column in ("open", "close"):
        if column not in frame.columns:
            raise DataValidationError(f"indicator frame lacks column {column!r}")
    mstate, start = state_space.market_states(frame)
    part = frame.iloc[start:]
    opens = part["open"].to_numpy(dtype=np.float64)
    closes = part["close"].to_numpy(dtype=np.float64)
    for name, values in (("open", opens), ("close", closes)):
        bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)))
        if bad.size:
            raise DataValidationError(
                f"column {name!r} must be finite and > 0; row {part.index[bad[0]]} holds {values[bad[0]]}"
            )
    fill = np.empty(len(part), dtype=np.float64)
    fill[:-1] = opens[1:]
    fill[-1] = closes[-1]
    step_ret = fill[1:] / fill[:-1] - 1.0
    index = part.index if isinstance(part.index, pd.DatetimeIndex) else None
    if index is not None:
        times = index.as_unit("ns").asi8.astype(np.int64)
    else:
        times = np.arange(len(part), dtype=np.int64) * 60_000_000_000
    per_year = frame.attrs.get("bars_per_year")
    return EnvArrays(
        mstate, step_ret, times, state_space, index, None if per_year is None else float(per_year)
    )


# --- helpers ----------------------------------------------------------------------------------------


def _raw_features(frame: pd.DataFrame, names: tuple[str, ...]) -> pd.DataFrame:
    features = [state_feature(name) for name in names]
    needed = {c for feature in features for c in feature.columns}
    missing = sorted(needed - set(frame.columns))
    if missing:
        raise DataValidationError(f"indicator frame lacks columns {missing}")
    data = {feature.name: feature.values(frame).astype(np.float64) for feature in features}
    raw = pd.DataFrame(data, index=frame.index, columns=list(names))
    return raw.replace([np.inf, -np.inf], np.nan)


def _first_valid(raw: pd.DataFrame, frame: pd.DataFrame) -> int:
    """First row where every feature and both fill prices are defined: the end of the warm-up."""
    ok = raw.notna().all(axis=1).to_numpy()
    for column in ("open", "close"):
        if column in frame.columns:
            ok = ok & frame[column].notna().to_numpy()
    hits = np.flatnonzero(ok)
    if hits.size == 0:
        raise DataValidationError("no row of the indicator frame has every feature defined")
    return int(hits[0])
