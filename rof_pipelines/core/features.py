"""The RL agent's state features, each described once.

A :class:`StateFeature` says everything the rest of the code needs to know about one feature: the
indicator-frame columns it reads, how its raw value is computed from them, how its bin edges are
chosen (:class:`FixedEdges`, :class:`SignedLevels`, :class:`QuantileBins`, each with the name and
default of its setting in :class:`~rof_pipelines.core.rl.env.BinSpec`), and, when the optimiser may
recompute it with another indicator window, how (:class:`Rewindow`, a key of
:class:`~rof_pipelines.core.ga.space.FeatureWindows` and the gene that sets it).

The registration order is the state order: a market state is the mixed-radix number of the enabled
features' bins in this order, so reordering the registrations renumbers every stored Q-table's rows.
The state space (``core.rl.env``), the optimiser's numpy twins and caches (``core.ga.fitness``), its
genome decoding (``core.ga.space``) and the settings objects built on :class:`FeatureSettings` all
read this registry; adding a feature is one :func:`register` call here (plus its column in
``core.indicators`` when it needs a new one).

Built-in features:

* ``rsi``: RSI zone, fixed edges (default 30 / 70 -> oversold, neutral, overbought);
* ``macd``: MACD histogram relative to the close, sign x strength: ``macd_levels`` bins per side,
  the strength edges being quantiles of ``|hist / close|`` on the training data;
* ``bb``: position in the Bollinger bands (``bb_pband``), fixed edges (default 0 / 0.5 / 1);
* ``vol``: volatility regime, ``vol_bins`` quantile bins of ``atr_pct`` on the training data;
* ``trend``: ``ema_fast / ema_slow - 1``, sign x strength like ``macd``.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from rof_pipelines.core.indicators import IndicatorWindows, _wilder_atr, rsi_values, true_range
from rof_pipelines.errors import DataValidationError

# --- how bin edges are chosen -------------------------------------------------------------------------


@dataclass(frozen=True)
class FixedEdges:
    """Edges given in the settings, e.g. ``rsi_edges = (30, 70)``; an empty tuple drops the feature."""

    setting: str
    default: tuple[float, ...]
    fitted: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "default", self.normalise(self.default))

    def normalise(self, value: Iterable[float]) -> tuple[float, ...]:
        edges = tuple(float(e) for e in value)
        if sorted(set(edges)) != list(edges):
            raise ValueError(f"{self.setting} must be strictly increasing, got {edges}")
        return edges

    def enabled(self, value: tuple[float, ...]) -> bool:
        return bool(value)

    def edges(self, value: tuple[float, ...], values: np.ndarray | None = None) -> tuple[float, ...]:
        return value

    def to_json(self, value: tuple[float, ...]) -> list[float]:
        return list(value)

    def from_json(self, data: Any) -> tuple[float, ...]:
        return tuple(data)


@dataclass(frozen=True)
class SignedLevels:
    """Sign x strength: 0 splits the sides, quantiles of ``|value|`` on the training data split each
    side into ``levels`` bins; 0 levels drops the feature."""

    setting: str
    default: int
    fitted: ClassVar[bool] = True

    def normalise(self, value: int) -> int:
        if value < 0:
            raise ValueError(f"{self.setting} must be >= 0")
        return value

    def enabled(self, value: int) -> bool:
        return value > 0

    def edges(self, value: int, values: np.ndarray) -> tuple[float, ...]:
        return signed_edges(values, value)

    def to_json(self, value: int) -> int:
        return value

    def from_json(self, data: Any) -> int:
        return int(data)


@dataclass(frozen=True)
class QuantileBins:
    """``bins`` equally populated bins of the training data (duplicate edges merged); 1 bin drops the
    feature."""

    setting: str
    default: int
    fitted: ClassVar[bool] = True

    def normalise(self, value: int) -> int:
        if value < 1:
            raise ValueError(f"{self.setting} must be >= 1")
        return value

    def enabled(self, value: int) -> bool:
        return value > 1

    def edges(self, value: int, values: np.ndarray) -> tuple[float, ...]:
        return quantile_edges(values, value)

    def to_json(self, value: int) -> int:
        return value

    def from_json(self, data: Any) -> int:
        return int(data)


Binning = FixedEdges | SignedLevels | QuantileBins


def quantile_edges(values: np.ndarray, n_bins: int) -> tuple[float, ...]:
    """Inner quantile edges of the finite values, duplicates merged."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise DataValidationError("cannot fit quantile bins: no finite values")
    edges = np.quantile(finite, np.arange(1, n_bins) / n_bins)
    return tuple(float(e) for e in np.unique(edges))


def signed_edges(values: np.ndarray, levels: int) -> tuple[float, ...]:
    """Sign x strength: 0 splits the sides; quantiles of |value| split each side into ``levels``."""
    if levels == 1:
        return (0.0,)
    magnitude = np.abs(values[np.isfinite(values) & (values != 0)])
    if magnitude.size == 0:
        return (0.0,)
    cuts = [float(c) for c in np.unique(np.quantile(magnitude, np.arange(1, levels) / levels)) if c > 0]
    return tuple([-c for c in reversed(cuts)] + [0.0] + cuts)


# --- the features -----------------------------------------------------------------------------------------


class PriceArrays(Protocol):
    """The bars a re-windowed feature is computed from (``core.ga.fitness.MarketSlice`` is one)."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray

    @property
    def n(self) -> int: ...


@dataclass(frozen=True)
class Rewindow:
    """How the optimiser recomputes a feature's raw value with another indicator window.

    ``key`` names the window in :class:`~rof_pipelines.core.ga.space.FeatureWindows` (and in a stored
    candidate's ``indicator_windows``), ``gene`` the search-space gene that sets it (its domain is in
    ``core.ga.space.GENE_DOMAINS``). ``compute(bars, window, indicator_windows)`` must equal the
    frame's raw value when ``window`` is the frame's own window (a test should hold them equal);
    non-finite results become NaN."""

    key: str
    gene: str
    compute: Callable[[PriceArrays, int, IndicatorWindows], np.ndarray]


@dataclass(frozen=True)
class StateFeature:
    """One state feature: what it reads, how its raw value is computed, how it is binned."""

    name: str
    columns: tuple[str, ...]  # indicator-frame columns the raw value reads
    binning: Binning
    raw: Callable[[pd.DataFrame], pd.Series] | None = None  # None: the single column itself
    window: Rewindow | None = None
    doc: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.raw is None and len(self.columns) != 1:
            raise ValueError(f"feature {self.name!r} reads {self.columns}: give it a raw function")

    def values(self, frame: pd.DataFrame) -> pd.Series:
        """The raw value on an indicator frame that has :attr:`columns`."""
        return frame[self.columns[0]] if self.raw is None else self.raw(frame)


_REGISTRY: dict[str, StateFeature] = {}
_DERIVED: dict[str, Any] = {}  # views of the registry, rebuilt after it changes (genome decoding reads them)


def _derived(name: str, build: Callable[[], Any]) -> Any:
    value = _DERIVED.get(name)
    if value is None:
        value = _DERIVED[name] = build()
    return value


def register(feature: StateFeature) -> StateFeature:
    """Add a feature after the registered ones (its place in the state order)."""
    if feature.name in _REGISTRY:
        raise ValueError(f"feature {feature.name!r} is already registered")
    settings = {f.binning.setting for f in _REGISTRY.values()}
    if feature.binning.setting in settings:
        raise ValueError(f"bin setting {feature.binning.setting!r} is already used")
    if feature.window is not None:
        taken = {(f.window.key, f.window.gene) for f in _REGISTRY.values() if f.window is not None}
        if any(feature.window.key == key or feature.window.gene == gene for key, gene in taken):
            raise ValueError(f"window {feature.window.key!r} / gene {feature.window.gene!r} is already used")
    _REGISTRY[feature.name] = feature
    _DERIVED.clear()
    return feature


def unregister(name: str) -> None:
    """Remove a feature (for a test's throw-away feature; built-ins are part of stored Q-tables)."""
    del _REGISTRY[name]
    _DERIVED.clear()


def state_features() -> tuple[StateFeature, ...]:
    """Every registered feature, in state order."""
    return _derived("features", lambda: tuple(_REGISTRY.values()))


def feature_names() -> tuple[str, ...]:
    return _derived("names", lambda: tuple(_REGISTRY))


def state_feature(name: str) -> StateFeature:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown feature {name!r}; known: {sorted(_REGISTRY)}") from None


def window_genes() -> dict[str, Rewindow]:
    """Window gene name -> how it re-windows its feature."""
    return _derived(
        "window_genes", lambda: {f.window.gene: f.window for f in _REGISTRY.values() if f.window is not None}
    )


# --- settings keyed by the registry ---------------------------------------------------------------------


def _rebuild(cls: type["FeatureSettings"], overrides: dict[str, Any]) -> "FeatureSettings":
    return cls(**overrides)


class FeatureSettings:
    """Immutable, hashable keyword settings whose names come from the registry (``BinSpec``,
    ``FeatureWindows``): a registered feature brings its setting with it, read as an attribute.

    Only values that differ from the default are held, so equality and hashing (the optimiser's cache
    keys) do not depend on features registered after an instance was made."""

    __slots__ = ("_hash", "_overrides")

    @classmethod
    def defaults(cls) -> dict[str, tuple[Any, Callable[[Any], Any]]]:
        """Setting name -> (default, normalise), in state order."""
        raise NotImplementedError

    def __init__(self, **settings: Any) -> None:
        known = self.defaults()
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown settings {unknown}; known: {list(known)}")
        overrides = []
        for name, (default, normalise) in known.items():
            if name in settings:
                value = normalise(settings[name])
                if value != default:
                    overrides.append((name, value))
        object.__setattr__(self, "_overrides", tuple(overrides))
        object.__setattr__(self, "_hash", hash((type(self).__name__, self._overrides)))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        known = self.defaults()
        if name not in known:
            raise AttributeError(f"{type(self).__name__} has no setting {name!r}; known: {list(known)}")
        for key, value in self._overrides:
            if key == name:
                return value
        return known[name][0]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; use replace()")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._overrides == other._overrides  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), dict(self._overrides)))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.values().items())
        return f"{type(self).__name__}({shown})"

    def values(self) -> dict[str, Any]:
        """Every setting, defaults included, in state order."""
        held = dict(self._overrides)
        return {name: held.get(name, default) for name, (default, _) in self.defaults().items()}

    def replace(self, **changes: Any) -> Any:
        return type(self)(**{**dict(self._overrides), **changes})


def _keep(value: Any) -> Any:
    return value


def window_defaults() -> dict[str, tuple[Any, Callable[[Any], Any]]]:
    """``FeatureWindows``' settings: one per re-windowable feature, None (the frame's own column)."""
    return _derived(
        "window_defaults", lambda: {f.window.key: (None, _keep) for f in _REGISTRY.values() if f.window}
    )


def bin_defaults() -> dict[str, tuple[Any, Callable[[Any], Any]]]:
    """``BinSpec``'s settings: one per feature, named by its binning rule."""
    return _derived(
        "bin_defaults",
        lambda: {f.binning.setting: (f.binning.default, f.binning.normalise) for f in _REGISTRY.values()},
    )


# --- built-in features ------------------------------------------------------------------------------------
# The re-windowed twins compute on a slice's arrays what ``core.indicators.build_indicator_frame`` puts
# in the column: Bollinger and ATR bit for bit, RSI compiled and within 1e-13 of ta's (tests hold all).


def _rsi_with_window(bars: PriceArrays, window: int, windows: IndicatorWindows) -> np.ndarray:
    return rsi_values(bars.close, window)


def _band_position_with_window(bars: PriceArrays, window: int, windows: IndicatorWindows) -> np.ndarray:
    """ta's BollingerBands band position: its rolling mean and std, minus its overhead."""
    rolling = pd.Series(bars.close).rolling(window, min_periods=window)
    mean = rolling.mean().to_numpy(dtype=np.float64)
    spread = windows.bollinger_dev * rolling.std(ddof=0).to_numpy(dtype=np.float64)
    high, low = mean + spread, mean - spread
    with np.errstate(invalid="ignore", divide="ignore"):
        return (bars.close - low) / np.where(high - low == 0.0, np.nan, high - low)


def _atr_pct_with_window(bars: PriceArrays, window: int, windows: IndicatorWindows) -> np.ndarray:
    """``core.indicators.atr / close``, with the true range in numpy."""
    if bars.n <= window:
        return np.full(bars.n, np.nan)
    average = _wilder_atr(true_range(bars.high, bars.low, bars.close), window)
    average[: window - 1] = np.nan
    return average / bars.close


register(
    StateFeature(
        "rsi",
        ("rsi",),
        FixedEdges("rsi_edges", (30.0, 70.0)),
        window=Rewindow("rsi", "rsi_window", _rsi_with_window),
        doc="RSI zone: oversold, neutral, overbought",
    )
)
register(
    StateFeature(
        "macd",
        ("macd_hist", "close"),
        SignedLevels("macd_levels", 2),
        raw=lambda frame: frame["macd_hist"] / frame["close"],
        doc="MACD histogram relative to the close, sign x strength",
    )
)
register(
    StateFeature(
        "bb",
        ("bb_pband",),
        FixedEdges("bb_edges", (0.0, 0.5, 1.0)),
        window=Rewindow("bb", "bb_window", _band_position_with_window),
        doc="position in the Bollinger bands",
    )
)
register(
    StateFeature(
        "vol",
        ("atr_pct",),
        QuantileBins("vol_bins", 3),
        window=Rewindow("atr", "atr_window", _atr_pct_with_window),
        doc="volatility regime: ATR relative to the close",
    )
)
register(
    StateFeature(
        "trend",
        ("trend",),
        SignedLevels("trend_levels", 1),
        doc="ema_fast / ema_slow - 1, sign x strength",
    )
)
