"""The optimiser's search space: which genes exist, their legal domains, and genome <-> parameters.

pygad evolves *unit genomes*: one float in [0, 1] per configured gene, in the configured order (one
gene type and one bound for every gene keeps pygad on its fast paths). :meth:`SearchSpace.from_unit`
maps a unit genome onto the gene ranges - floats rounded to :data:`FLOAT_DECIMALS` places, ints by
equal-width bins over ``low..high`` inclusive - giving the *genome*: a tuple of plain numbers that is
its own canonical form (equal parameters, equal tuples), which is what the fitness cache keys on.

Fees, slippage, episodes, shorting and the agent's seed are deliberately *not* genes: they are
assumptions about the market and the budget, and optimising them would only find a cheaper world.
"""

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from rof_pipelines.core.features import (
    FeatureSettings,
    StateFeature,
    bin_defaults,
    window_defaults,
    window_genes,
)

if TYPE_CHECKING:
    from rof_pipelines.core.rl.agent import RLParams

FLOAT_DECIMALS = 5
Genome = tuple[float | int, ...]
UnitGenome = tuple[float, ...]


@dataclass(frozen=True)
class GeneDomain:
    """What a gene may ever take (config ranges must lie inside) and what it sets."""

    kind: str  # "float" | "int"
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    group: str = "rl"  # rl | bins | windows | kelly | strategy
    doc: str = ""

    def admits(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        high = "inf" if self.high == float("inf") else f"{self.high:g}"
        return f"{left}{self.low:g}, {high}{right}"


INF = float("inf")
GENE_DOMAINS: dict[str, GeneDomain] = {
    "alpha": GeneDomain("float", 0, 1, low_open=True, doc="learning rate"),
    "gamma": GeneDomain("float", 0, 1, high_open=True, doc="discount"),
    "epsilon": GeneDomain("float", 0, 1, doc="exploration at the first episode"),
    "epsilon_decay": GeneDomain("float", 0, 1, low_open=True, doc="epsilon *= this per episode"),
    "epsilon_min": GeneDomain("float", 0, 1, doc="exploration floor (clamped to epsilon)"),
    "alpha_decay": GeneDomain("float", 0, INF, high_open=True, doc="alpha / (1 + this * visits)"),
    "risk_aversion": GeneDomain("float", 0, INF, high_open=True, doc="reward penalty on squared return"),
    "rsi_low": GeneDomain("int", 1, 49, group="bins", doc="lower RSI bin edge"),
    "rsi_high": GeneDomain("int", 51, 99, group="bins", doc="upper RSI bin edge"),
    "macd_levels": GeneDomain("int", 0, 8, group="bins", doc="MACD strength levels per side (0 drops)"),
    "vol_bins": GeneDomain("int", 1, 10, group="bins", doc="volatility quantile bins (1 drops)"),
    "trend_levels": GeneDomain("int", 0, 8, group="bins", doc="trend strength levels per side (0 drops)"),
    "rsi_window": GeneDomain("int", 2, 500, group="windows", doc="RSI window in bars"),
    "bb_window": GeneDomain("int", 2, 500, group="windows", doc="Bollinger window in bars"),
    "atr_window": GeneDomain("int", 2, 500, group="windows", doc="ATR window in bars (volatility feature)"),
    "kelly_max_fraction": GeneDomain("float", 0, 1, low_open=True, group="kelly", doc="Kelly cap"),
    "stop_loss": GeneDomain("float", 0, 1, high_open=True, group="strategy", doc="0 = off"),
    "take_profit": GeneDomain("float", 0, INF, high_open=True, group="strategy", doc="0 = off"),
}


def validate_gene(name: str, kind: str, low: float, high: float) -> None:
    """Raise ValueError unless ``low..high`` is a usable range of gene ``name``."""
    domain = GENE_DOMAINS.get(name)
    if domain is None:
        raise ValueError(f"unknown gene {name!r}; known: {', '.join(sorted(GENE_DOMAINS))}")
    if kind != domain.kind:
        raise ValueError(f"{name}: type must be {domain.kind!r}, got {kind!r}")
    if not low < high:
        raise ValueError(f"{name}: low ({low:g}) must be below high ({high:g})")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ValueError(f"{name}: an int gene needs whole-number bounds, got {low:g}..{high:g}")
    for label, value in (("low", low), ("high", high)):
        shown = round(value, FLOAT_DECIMALS) if kind == "float" else value
        if not domain.admits(shown):
            raise ValueError(f"{name}: {label} {value:g} is outside the gene's domain {domain.describe()}")


def derive_seed(base: int, *parts: object) -> int:
    """A 32-bit seed that depends only on ``base`` and ``parts`` (what makes a generation replayable)."""
    text = "|".join([str(int(base)), *(str(p) for p in parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


@dataclass(frozen=True)
class GeneSpec:
    name: str
    kind: str
    low: float
    high: float

    def __post_init__(self) -> None:
        validate_gene(self.name, self.kind, self.low, self.high)

    def from_unit(self, u: float) -> float | int:
        """[0, 1] -> a value of the range (ints: equal-width bins, so each value is equally likely)."""
        u = min(max(float(u), 0.0), 1.0)
        if self.kind == "int":
            span = int(self.high) - int(self.low) + 1
            return int(min(int(self.low) + math.floor(u * span), int(self.high)))
        return self.canonical(self.low + u * (self.high - self.low))

    def to_unit(self, value: float) -> float:
        """A unit value that decodes to ``value`` (the middle of an int's bin)."""
        if self.kind == "int":
            span = int(self.high) - int(self.low) + 1
            return (int(value) - int(self.low) + 0.5) / span
        return (float(value) - self.low) / (self.high - self.low)

    def canonical(self, value: Any) -> float | int:
        if self.kind == "int":
            return int(min(max(round(float(value)), int(self.low)), int(self.high)))
        return float(min(max(round(float(value), FLOAT_DECIMALS), self.low), self.high))


class FeatureWindows(FeatureSettings):
    """Indicator windows a genome overrides, one keyword per re-windowable feature of
    ``core.features`` (its ``window.key``: ``rsi``, ``bb``, ``atr``); None keeps the indicator frame's
    own column."""

    __slots__ = ()

    @classmethod
    def defaults(cls) -> dict[str, tuple[Any, Any]]:
        return window_defaults()

    def of(self, feature: StateFeature) -> int | None:
        """The window this genome gives ``feature``; None: the frame's own column."""
        return None if feature.window is None else getattr(self, feature.window.key)

    def to_dict(self) -> dict[str, int]:
        """The windows that are set, in state order."""
        return {key: value for key, value in self.values().items() if value is not None}


@dataclass(frozen=True)
class Candidate:
    """A decoded genome: the agent's parameters plus what the strategy wraps around it."""

    params: "RLParams"
    windows: FeatureWindows
    stop_loss: float = 0.0
    take_profit: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rl": self.params.to_dict(),
            "indicator_windows": self.windows.to_dict(),
            "strategy": {"stop_loss": self.stop_loss, "take_profit": self.take_profit},
        }


@dataclass(frozen=True)
class SearchSpace:
    genes: tuple[GeneSpec, ...]

    def __post_init__(self) -> None:
        if not self.genes:
            raise ValueError("the search space needs at least one gene")
        names = [g.name for g in self.genes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate genes in the search space: {names}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> "SearchSpace":
        """``{name: {type, low, high}}`` (dicts or objects with those attributes), in mapping order."""
        genes = []
        for name, spec in mapping.items():
            get = spec.get if isinstance(spec, Mapping) else lambda key, s=spec: getattr(s, key)
            genes.append(GeneSpec(name, str(get("type")), float(get("low")), float(get("high"))))
        return cls(tuple(genes))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {g.name: {"type": g.kind, "low": g.low, "high": g.high} for g in self.genes}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.genes)

    def __len__(self) -> int:
        return len(self.genes)

    def canonical(self, values: Sequence[Any]) -> Genome:
        if len(values) != len(self.genes):
            raise ValueError(f"genome has {len(values)} genes, the space {len(self.genes)}")
        return tuple(g.canonical(v) for g, v in zip(self.genes, values, strict=True))

    def random_units(self, rng: np.random.Generator, n: int) -> list[UnitGenome]:
        """``n`` uniform unit genomes."""
        return [tuple(float(x) for x in row) for row in rng.random((n, len(self.genes)))]

    def from_unit(self, units: Sequence[float]) -> Genome:
        """``GeneSpec.from_unit`` of every gene, inlined: the optimiser decodes every genome it meets
        to key its fitness cache, in the parent process, while the workers wait for the batch."""
        if len(units) != len(self.genes):
            raise ValueError(f"unit genome has {len(units)} genes, the space {len(self.genes)}")
        out: list[float | int] = []
        for (is_int, low, high, span), u in zip(self._decoding, units, strict=True):
            u = min(max(float(u), 0.0), 1.0)
            if is_int:
                out.append(min(low + math.floor(u * span), high))
            else:
                out.append(float(min(max(round(low + u * span, FLOAT_DECIMALS), low), high)))
        return tuple(out)

    @cached_property
    def _decoding(self) -> tuple[tuple[bool, Any, Any, Any], ...]:
        """Per gene (int?, low, high, span) in the types ``GeneSpec.from_unit`` computes with."""
        plan = []
        for g in self.genes:
            if g.kind == "int":
                plan.append((True, int(g.low), int(g.high), int(g.high) - int(g.low) + 1))
            else:
                plan.append((False, g.low, g.high, g.high - g.low))
        return tuple(plan)

    def to_unit(self, genome: Sequence[float]) -> UnitGenome:
        return tuple(g.to_unit(v) for g, v in zip(self.genes, genome, strict=True))

    @staticmethod
    def diversity(units: Sequence[UnitGenome]) -> float:
        """Mean per-gene standard deviation of unit genomes: ~0.29 uniform, 0 converged."""
        if len(units) < 2:
            return 0.0
        return float(np.asarray(units, dtype=np.float64).std(axis=0).mean())

    def decode(self, genome: Genome, base: "RLParams") -> Candidate:
        """Genes over ``base`` (the config's agent); whatever is not a gene keeps the base's value."""
        values = dict(zip(self.names, genome, strict=True))
        rl = {
            k: float(values[k])
            for k in ("alpha", "gamma", "epsilon", "epsilon_decay", "alpha_decay", "risk_aversion")
            if k in values
        }
        epsilon = rl.get("epsilon", base.epsilon)
        epsilon_min = float(values.get("epsilon_min", base.epsilon_min))
        rl["epsilon_min"] = min(epsilon_min, epsilon)
        edges = base.bins.rsi_edges if len(base.bins.rsi_edges) >= 2 else (30.0, 70.0)
        if "rsi_low" in values or "rsi_high" in values:
            rsi_edges: tuple[float, ...] = (
                float(values.get("rsi_low", edges[0])),
                float(values.get("rsi_high", edges[-1])),
            )
        else:
            rsi_edges = base.bins.rsi_edges
        # A gene named like a feature's bin setting (macd_levels, vol_bins, ...) sets it.
        bin_settings = bin_defaults()
        settings = {name: int(value) for name, value in values.items() if name in bin_settings}
        bins = base.bins.replace(**settings, rsi_edges=rsi_edges)
        kelly = base.kelly
        if "kelly_max_fraction" in values:
            cap = float(values["kelly_max_fraction"])
            kelly = replace(kelly, max_fraction=cap, warmup_fraction=min(kelly.warmup_fraction, cap))
        params = base.replace(**rl, bins=bins, kelly=kelly)
        windows = FeatureWindows(
            **{window.key: int(values[gene]) for gene, window in window_genes().items() if gene in values}
        )
        return Candidate(
            params=params,
            windows=windows,
            stop_loss=float(values.get("stop_loss", 0.0)),
            take_profit=float(values.get("take_profit", 0.0)),
        )
