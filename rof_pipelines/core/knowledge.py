"""What finished optimisation tasks teach the next one: meta-learning across tasks and transfer learning
across markets, both as seeds for the optimiser's initial population (and optionally a Q-table).

* A task is summarised by a market feature vector (:func:`market_features`), its best parameters and
  its outcome (:class:`TaskRecord`). The knowledge base keeps tasks ``knowledge_retention_days``; a task
  that finished after "now" never counts (no hindsight when the pipeline is replayed).
* Meta-learning (``meta_learning.enabled``): once the knowledge base holds ``min_tasks_for_learning``
  tasks, the ``k`` tasks nearest in standardised feature space seed the population, whatever market.
* Transfer learning (``transfer_learning.enabled``): source tasks are (a) the same pair on other
  exchanges (``use_similar_exchanges``) and (b) *similar pairs* on the same exchange
  (``use_similar_pairs``): the same quote currency (so prices, volumes and fees are in one unit) and
  then the nearest features; a pair whose quote currency cannot be read is never called similar. At
  most ``max_source_tasks`` sources, one task per source market (the nearest), same pair first.
* Disabled features give no seeds at all; the genome encoding belongs to the GA, so seeds are plain
  ``{gene name: value}`` dicts restricted to the genes the optimiser searches.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from rof_pipelines.core.market import Market

FEATURE_NAMES: tuple[str, ...] = (
    "log_volatility",  # log of the annualised std of log returns
    "trend",  # net log move / (std * sqrt(n)): the drift's z-score, signed
    "efficiency",  # |net log move| / sum |log moves| (Kaufman): 1 straight line, ~0 chop
    "autocorr",  # lag-1 autocorrelation of log returns
    "log_liquidity",  # log of the median quote-currency volume per day
    "spread",  # median relative bid-ask spread
    "adx",  # mean ADX / 100 (trend strength)
)

# Quote currencies recognised at the end of a pair without a separator, longest first when matching.
KNOWN_QUOTES: tuple[str, ...] = (
    "FDUSD",
    "USDT",
    "USDC",
    "BUSD",
    "TUSD",
    "USDP",
    "DAI",
    "USD",
    "EUR",
    "GBP",
    "TRY",
    "BRL",
    "JPY",
    "BTC",
    "ETH",
    "BNB",
)


# --- features ------------------------------------------------------------------------------------------


def market_features(frame: pd.DataFrame, bars_per_year: float | None = None) -> dict[str, float]:
    """The feature vector of one window of bars (an indicator frame or plain OHLCV).

    Uses ``log_return`` (or log closes), ``volume`` x ``close``, ``bid``/``ask`` or ``spread`` and
    ``adx`` when present; a missing input gives NaN for its feature, which distances skip.
    ``bars_per_year`` defaults to ``frame.attrs["bars_per_year"]`` (the market calendar's figure),
    then to the median bar spacing of a DatetimeIndex taken as round-the-clock trading; without any,
    volatility and liquidity stay per bar (only comparable between tasks with equal bars).
    """
    if "log_return" in frame:
        r = frame["log_return"].to_numpy(dtype=np.float64)
    elif "close" in frame:
        r = np.diff(np.log(frame["close"].to_numpy(dtype=np.float64)))
    else:
        raise ValueError("market_features needs a 'log_return' or 'close' column")
    r = r[np.isfinite(r)]
    if r.shape[0] < 3:
        raise ValueError(f"market_features needs at least 3 returns, got {r.shape[0]}")
    if bars_per_year is None and frame.attrs.get("bars_per_year") is not None:
        bars_per_year = float(frame.attrs["bars_per_year"])
    if bars_per_year is None and isinstance(frame.index, pd.DatetimeIndex) and len(frame.index) > 1:
        spacing = float(np.median(np.diff(frame.index.as_unit("ns").asi8)))
        bars_per_year = 365.25 * 86400e9 / spacing if spacing > 0 else None
    per_year = bars_per_year or 1.0
    per_day = per_year / 365.25 if bars_per_year else 1.0

    sd = float(r.std(ddof=1))
    total_abs = float(np.abs(r).sum())
    out = dict.fromkeys(FEATURE_NAMES, math.nan)
    out["log_volatility"] = math.log(sd * math.sqrt(per_year)) if sd > 0 else math.nan
    out["trend"] = float(r.sum() / (sd * math.sqrt(r.shape[0]))) if sd > 0 else 0.0
    out["efficiency"] = abs(float(r.sum())) / total_abs if total_abs > 0 else 0.0
    lagged, current = r[:-1], r[1:]
    if lagged.std() > 0 and current.std() > 0:
        out["autocorr"] = float(np.corrcoef(lagged, current)[0, 1])
    if "volume" in frame and "close" in frame:
        turnover = (frame["volume"] * frame["close"]).to_numpy(dtype=np.float64)
        turnover = turnover[np.isfinite(turnover)]
        median = float(np.median(turnover)) if turnover.size else 0.0
        if median > 0:
            out["log_liquidity"] = math.log(median * per_day)
    out["spread"] = _median_spread(frame)
    if "adx" in frame:
        adx = frame["adx"].to_numpy(dtype=np.float64)
        adx = adx[np.isfinite(adx)]
        if adx.size:
            out["adx"] = float(adx.mean() / 100.0)
    return out


def _median_spread(frame: pd.DataFrame) -> float:
    if "bid" in frame and "ask" in frame:
        bid = frame["bid"].to_numpy(dtype=np.float64)
        ask = frame["ask"].to_numpy(dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = (ask - bid) / ((ask + bid) / 2.0)
    elif "spread" in frame:
        rel = frame["spread"].to_numpy(dtype=np.float64)
    else:
        return math.nan
    rel = rel[np.isfinite(rel) & (rel >= 0)]
    return float(np.median(rel)) if rel.size else math.nan


@dataclass(frozen=True)
class FeatureScaler:
    """z-scores per feature, fitted on the knowledge base (NaN-aware; a constant feature scales by 1)."""

    names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(
        cls, vectors: Sequence[Mapping[str, float]], names: Sequence[str] = FEATURE_NAMES
    ) -> "FeatureScaler":
        names = tuple(names)
        data = np.array([[_as_float(v.get(name)) for name in names] for v in vectors], dtype=np.float64)
        data = data.reshape(len(vectors), len(names))
        mean = np.zeros(len(names))
        scale = np.ones(len(names))
        for j in range(len(names)):
            column = data[:, j][np.isfinite(data[:, j])]
            if column.size:
                mean[j] = column.mean()
                sd = column.std()
                scale[j] = sd if sd > 0 else 1.0
        return cls(names, mean, scale)

    def transform(self, features: Mapping[str, float]) -> np.ndarray:
        raw = np.array([_as_float(features.get(name)) for name in self.names], dtype=np.float64)
        return (raw - self.mean) / self.scale


def feature_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Root-mean-square difference over the features both vectors have (inf if none): a missing
    feature neither helps nor hurts, and distances stay comparable across different coverage."""
    both = np.isfinite(x) & np.isfinite(y)
    if not both.any():
        return math.inf
    return float(np.sqrt(np.mean((x[both] - y[both]) ** 2)))


def _as_float(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


# --- tasks ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRecord:
    """A finished optimisation task: where, when, what the market looked like, what won, how well.

    ``score`` is the held-out outcome of ``best_params`` (higher is better, e.g. the A/B Sharpe);
    ``generations`` how many the optimiser needed (to measure whether seeding saves some);
    ``artifact`` where its trained agent lives, for Q-table transfer."""

    task_id: str
    market: str
    finished_at: datetime
    features: Mapping[str, float]
    best_params: Mapping[str, Any]
    score: float = math.nan
    outcome: Mapping[str, float] = field(default_factory=dict)
    generations: int | None = None
    artifact: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "market", Market.parse(self.market).key)
        moment = self.finished_at
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        object.__setattr__(self, "finished_at", moment.astimezone(UTC))

    @property
    def market_key(self) -> Market:
        return Market.parse(self.market)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "market": self.market,
            "finished_at": self.finished_at.isoformat(),
            "features": {k: _json_float(v) for k, v in self.features.items()},
            "best_params": dict(self.best_params),
            "score": _json_float(self.score),
            "outcome": {k: _json_float(v) for k, v in self.outcome.items()},
            "generations": self.generations,
            "artifact": self.artifact,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TaskRecord":
        def num(value: Any) -> float:
            return math.nan if value is None else float(value)

        return cls(
            task_id=str(data["task_id"]),
            market=str(data["market"]),
            finished_at=datetime.fromisoformat(str(data["finished_at"])),
            features={k: num(v) for k, v in dict(data.get("features") or {}).items()},
            best_params=dict(data.get("best_params") or {}),
            score=num(data.get("score")),
            outcome={k: num(v) for k, v in dict(data.get("outcome") or {}).items()},
            generations=None if data.get("generations") is None else int(data["generations"]),
            artifact=data.get("artifact"),
        )


def _json_float(value: Any) -> float | None:
    out = _as_float(value)
    return None if math.isnan(out) else out


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def retained(tasks: Sequence[TaskRecord], now: datetime, retention_days: int) -> list[TaskRecord]:
    """Tasks finished within ``retention_days`` before ``now`` (later ones are in the future: excluded)."""
    now = _utc(now)
    oldest = now - timedelta(days=retention_days)
    return [t for t in tasks if oldest <= t.finished_at <= now]


@dataclass(frozen=True)
class Neighbour:
    task: TaskRecord
    distance: float
    relation: Literal["meta", "same_pair", "similar_pair"] = "meta"


def nearest_tasks(
    features: Mapping[str, float],
    tasks: Sequence[TaskRecord],
    *,
    now: datetime,
    retention_days: int,
    min_tasks: int,
    k: int,
    exclude_ids: Sequence[str] = (),
) -> list[Neighbour]:
    """The ``k`` retained tasks nearest to ``features`` (standardised on the retained tasks), nearest
    first, ties to the more recent; none until ``min_tasks`` tasks are retained."""
    excluded = set(exclude_ids)
    pool = [t for t in retained(tasks, now, retention_days) if t.task_id not in excluded]
    if len(pool) < min_tasks or k <= 0:
        return []
    ranked = _rank(features, pool, pool)
    return [Neighbour(task, dist, "meta") for task, dist in ranked[:k] if math.isfinite(dist)]


def _rank(
    features: Mapping[str, float], candidates: Sequence[TaskRecord], fit_on: Sequence[TaskRecord]
) -> list[tuple[TaskRecord, float]]:
    scaler = FeatureScaler.fit([t.features for t in fit_on])
    target = scaler.transform(features)
    scored = [(t, feature_distance(target, scaler.transform(t.features))) for t in candidates]
    return sorted(scored, key=lambda item: (item[1], -item[0].finished_at.timestamp(), item[0].task_id))


def split_pair(pair: str) -> tuple[str, str] | None:
    """``"TONUSDT"`` / ``"TON-USDT"`` / ``"TON/USDT"`` / ``"TON_USDT"`` -> ``("TON", "USDT")``; None when
    the quote currency is not a known one (no guessing)."""
    pair = pair.upper()
    for sep in ("/", "-", "_"):
        if sep in pair:
            base, _, quote = pair.partition(sep)
            return (base, quote) if base and quote else None
    for quote in sorted(KNOWN_QUOTES, key=len, reverse=True):
        if pair.endswith(quote) and len(pair) > len(quote):
            return pair[: -len(quote)], quote
    return None


def transfer_sources(
    target: Market | str,
    features: Mapping[str, float],
    tasks: Sequence[TaskRecord],
    *,
    now: datetime,
    retention_days: int,
    use_similar_exchanges: bool = True,
    use_similar_pairs: bool = True,
    max_source_tasks: int = 10,
    exclude_ids: Sequence[str] = (),
) -> list[Neighbour]:
    """Source tasks from other markets (see the module docstring), at most ``max_source_tasks``: the same
    pair on other exchanges first, then same-exchange pairs with the same quote currency, each group
    nearest first, one task (the nearest) per source market."""
    target = target if isinstance(target, Market) else Market.parse(target)
    if max_source_tasks <= 0:
        return []
    excluded = set(exclude_ids)
    pool = [t for t in retained(tasks, now, retention_days) if t.task_id not in excluded]
    if not pool:
        return []
    target_split = split_pair(target.pair)

    def relation(task: TaskRecord) -> Literal["same_pair", "similar_pair"] | None:
        source = task.market_key
        if source == target:
            return None  # the market's own history is meta-learning, not transfer
        if source.pair == target.pair:
            return "same_pair" if use_similar_exchanges else None
        if use_similar_pairs and source.exchange == target.exchange and target_split is not None:
            source_split = split_pair(source.pair)
            if source_split is not None and source_split[1] == target_split[1]:
                return "similar_pair"
        return None

    ranked = _rank(features, [t for t in pool if relation(t) is not None], pool)
    out: list[Neighbour] = []
    seen: set[str] = set()
    for group in ("same_pair", "similar_pair"):
        for task, dist in ranked:
            if relation(task) == group and task.market not in seen and math.isfinite(dist):
                seen.add(task.market)
                out.append(Neighbour(task, dist, group))
    return out[:max_source_tasks]


# --- seeds ----------------------------------------------------------------------------------------------


def seed_genomes(
    sources: Sequence[TaskRecord | Neighbour | Mapping[str, Any]],
    gene_names: Sequence[str] | None = None,
    max_seeds: int | None = None,
) -> list[dict[str, Any]]:
    """Best parameters of the sources, in order, as ``{gene: value}`` dicts for the GA to encode.

    Keeps only ``gene_names`` (all finite numeric parameters when None), drops sources without any,
    and drops duplicates. A seed may lack genes the source did not search; the GA fills those (e.g.
    with random values) and clamps everything into the current ranges."""
    wanted = None if gene_names is None else set(gene_names)
    out: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    for source in sources:
        if isinstance(source, Neighbour):
            params: Mapping[str, Any] = source.task.best_params
        elif isinstance(source, TaskRecord):
            params = source.best_params
        else:
            params = source
        seed = {
            name: value
            for name, value in params.items()
            if (wanted is None or name in wanted)
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
        }
        key = tuple(sorted(seed.items()))
        if not seed or key in seen:
            continue
        seen.add(key)
        out.append(seed)
        if max_seeds is not None and len(out) >= max_seeds:
            break
    return out


class MetaLearningSettings(Protocol):
    """The fields of ``settings.MetaLearningConfig`` used here."""

    enabled: bool
    knowledge_retention_days: int
    min_tasks_for_learning: int


class TransferLearningSettings(Protocol):
    """The fields of ``settings.TransferLearningConfig`` used here."""

    enabled: bool
    use_similar_exchanges: bool
    use_similar_pairs: bool
    max_source_tasks: int


@dataclass(frozen=True)
class SeedPlan:
    """Seeds for the optimiser's initial population and where they came from (for metadata)."""

    seeds: list[dict[str, Any]]
    meta: list[Neighbour]
    transfer: list[Neighbour]
    reason: str

    @property
    def q_table_sources(self) -> list[str]:
        """Artifacts of the transfer sources' agents, nearest first (for an optional Q-table seed)."""
        return [n.task.artifact for n in self.transfer if n.task.artifact]

    def to_dict(self) -> dict[str, Any]:
        def rows(items: list[Neighbour]) -> list[dict[str, Any]]:
            return [
                {
                    "task_id": n.task.task_id,
                    "market": n.task.market,
                    "distance": n.distance,
                    "relation": n.relation,
                }
                for n in items
            ]

        return {
            "seeds": self.seeds,
            "meta": rows(self.meta),
            "transfer": rows(self.transfer),
            "reason": self.reason,
        }


def plan_seeds(
    target: Market | str,
    features: Mapping[str, float],
    tasks: Sequence[TaskRecord],
    meta: MetaLearningSettings,
    transfer: TransferLearningSettings,
    *,
    now: datetime,
    max_seeds: int,
    gene_names: Sequence[str] | None = None,
    exclude_ids: Sequence[str] = (),
) -> SeedPlan:
    """Meta-learning and transfer seeds for one optimisation run, interleaved (nearest of each first)
    and capped at ``max_seeds`` (say, a fraction of the population). Both switched off: no seeds.
    The knowledge base's retention (``meta.knowledge_retention_days``) applies to both."""
    target = target if isinstance(target, Market) else Market.parse(target)
    days = meta.knowledge_retention_days
    notes = []
    meta_n: list[Neighbour] = []
    if meta.enabled:
        meta_n = nearest_tasks(
            features,
            tasks,
            now=now,
            retention_days=days,
            min_tasks=meta.min_tasks_for_learning,
            k=max_seeds,
            exclude_ids=exclude_ids,
        )
        if not meta_n:
            held = len(retained(tasks, now, days))
            notes.append(f"meta-learning waits: {held} of {meta.min_tasks_for_learning} tasks retained")
        else:
            notes.append(f"meta-learning: {len(meta_n)} nearest tasks")
    else:
        notes.append("meta-learning off")
    transfer_n: list[Neighbour] = []
    if transfer.enabled:
        transfer_n = transfer_sources(
            target,
            features,
            tasks,
            now=now,
            retention_days=days,
            use_similar_exchanges=transfer.use_similar_exchanges,
            use_similar_pairs=transfer.use_similar_pairs,
            max_source_tasks=transfer.max_source_tasks,
            exclude_ids=exclude_ids,
        )
        notes.append(f"transfer: {len(transfer_n)} source tasks")
    else:
        notes.append("transfer learning off")
    interleaved: list[Neighbour] = []
    for i in range(max(len(meta_n), len(transfer_n))):
        interleaved.extend(group[i] for group in (meta_n, transfer_n) if i < len(group))
    seeds = seed_genomes(interleaved, gene_names, max_seeds) if max_seeds > 0 else []
    return SeedPlan(seeds, meta_n, transfer_n, "; ".join(notes) + f"; {len(seeds)} seeds")


def blend_q_tables(tables: Sequence[np.ndarray], shape: tuple[int, ...]) -> np.ndarray | None:
    """Mean of the source Q-tables that have ``shape`` (None if none has): a warm start for
    ``rl.train(init_q=...)``. Only meaningful when the state spaces have the same features and bin
    counts; the rows then mean the same regimes (e.g. "top volatility tercile") in every market."""
    usable = [np.asarray(t, dtype=np.float64) for t in tables if np.shape(t) == tuple(shape)]
    if not usable:
        return None
    return np.mean(usable, axis=0)
