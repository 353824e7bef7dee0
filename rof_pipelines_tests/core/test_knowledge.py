"""Meta/transfer learning: market features, nearest tasks, source selection and population seeds."""

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from rof_pipelines.core.knowledge import (
    FEATURE_NAMES,
    FeatureScaler,
    TaskRecord,
    blend_q_tables,
    feature_distance,
    market_features,
    nearest_tasks,
    plan_seeds,
    retained,
    seed_genomes,
    split_pair,
    transfer_sources,
)
from rof_pipelines.settings import MetaLearningConfig, TransferLearningConfig

NOW = datetime(2024, 6, 30, tzinfo=UTC)
GENES = ("alpha", "gamma", "rsi_low")


def bars(log_returns: np.ndarray, freq: str = "1h", volume: float = 10.0) -> pd.DataFrame:
    n = log_returns.size + 1
    idx = pd.date_range("2024-01-01", periods=n, freq=freq, tz="UTC")
    close = 100.0 * np.exp(np.r_[0.0, np.cumsum(log_returns)])
    return pd.DataFrame({"close": close, "volume": np.full(n, volume)}, index=idx)


def task(
    task_id: str,
    market: str,
    days_ago: float,
    vol: float,
    trend: float = 0.0,
    params: dict | None = None,
    **extra: float,
) -> TaskRecord:
    features = {"log_volatility": vol, "trend": trend, **extra}
    best = params if params is not None else {"alpha": 0.1 + vol / 100, "gamma": 0.9, "rsi_low": 30}
    return TaskRecord(task_id, market, NOW - timedelta(days=days_ago), features, best, score=1.0)


# --- features ------------------------------------------------------------------------------------------


def test_features_measure_what_they_say() -> None:
    rng = np.random.default_rng(0)
    sigma = 0.01
    frame = bars(rng.normal(0, sigma, 5000))
    feats = market_features(frame)
    assert set(feats) == set(FEATURE_NAMES)
    assert feats["log_volatility"] == pytest.approx(math.log(sigma * math.sqrt(8766)), abs=0.03)
    assert abs(feats["autocorr"]) < 0.05
    assert abs(feats["trend"]) < 4  # a z-score: no drift
    assert feats["log_liquidity"] == pytest.approx(math.log(np.median(frame["close"] * 10.0) * 24), rel=1e-9)
    assert math.isnan(feats["spread"]) and math.isnan(feats["adx"])  # columns absent: skipped, not guessed


def test_features_see_autocorrelation_trend_and_spread() -> None:
    rng = np.random.default_rng(1)
    r = np.zeros(5000)
    noise = rng.normal(0, 0.01, 5000)
    for t in range(1, 5000):
        r[t] = 0.4 * r[t - 1] + noise[t]
    assert market_features(bars(r))["autocorr"] == pytest.approx(0.4, abs=0.04)

    straight = market_features(bars(np.full(100, 0.001) + rng.normal(0, 1e-6, 100)))
    assert straight["efficiency"] == pytest.approx(1.0)
    assert straight["trend"] > 50

    quotes = bars(rng.normal(0, 0.01, 50))
    quotes["bid"], quotes["ask"] = quotes["close"] * 0.999, quotes["close"] * 1.001
    quotes["adx"] = 25.0
    feats = market_features(quotes)
    assert feats["spread"] == pytest.approx(0.002, rel=1e-6)
    assert feats["adx"] == pytest.approx(0.25)


def test_features_are_comparable_across_bar_intervals() -> None:
    rng = np.random.default_rng(2)
    hourly = market_features(bars(rng.normal(0, 0.01, 4000), "1h"))
    minutely = market_features(bars(rng.normal(0, 0.01 / math.sqrt(60), 4000), "1min"))
    assert hourly["log_volatility"] == pytest.approx(minutely["log_volatility"], abs=0.05)


def test_features_need_some_returns() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        market_features(bars(np.array([0.01])))
    with pytest.raises(ValueError, match="close"):
        market_features(pd.DataFrame({"volume": [1.0, 2.0]}))


def test_scaler_and_distance() -> None:
    scaler = FeatureScaler.fit(
        [{"a": 1.0, "b": 5.0, "c": math.nan}, {"a": 3.0, "b": 5.0, "c": 2.0}], names=("a", "b", "c")
    )
    assert scaler.mean.tolist() == [2.0, 5.0, 2.0]
    assert scaler.scale.tolist() == [1.0, 1.0, 1.0]  # b and c are constant: scale 1
    z = scaler.transform({"a": 4.0, "b": 5.0})
    assert z[0] == 2.0 and z[1] == 0.0 and math.isnan(z[2])
    x, y = np.array([0.0, 1.0, np.nan]), np.array([3.0, np.nan, 7.0])
    assert feature_distance(x, y) == 3.0  # only the shared feature counts
    assert feature_distance(np.array([np.nan]), np.array([1.0])) == math.inf


# --- tasks and retention ---------------------------------------------------------------------------------


def test_task_record_round_trips_through_json() -> None:
    record = TaskRecord(
        "t1",
        "Binance:tonusdt",
        datetime(2024, 6, 1, 12),  # naive: UTC
        {"log_volatility": 1.0, "spread": math.nan},
        {"alpha": 0.2, "rsi_low": 30},
        score=math.nan,
        outcome={"sharpe": 1.5},
        generations=12,
        artifact="agents/t1",
    )
    assert record.market == "binance:TONUSDT"
    assert record.finished_at.tzinfo is not None
    data = json.loads(json.dumps(record.to_dict()))
    back = TaskRecord.from_dict(data)
    assert back.market == record.market and back.finished_at == record.finished_at
    assert back.best_params == record.best_params and back.generations == 12 and back.artifact == "agents/t1"
    assert math.isnan(back.score) and math.isnan(back.features["spread"])


def test_retention_drops_old_and_future_tasks() -> None:
    tasks = [task("old", "binance:TONUSDT", 40, 1.0), task("new", "binance:TONUSDT", 1, 1.0)]
    tasks.append(task("future", "binance:TONUSDT", -1, 1.0))  # finished after "now": hindsight
    assert [t.task_id for t in retained(tasks, NOW, 30)] == ["new"]


# --- meta-learning ----------------------------------------------------------------------------------------


def test_nearest_tasks_wait_for_min_tasks_and_rank_by_distance() -> None:
    tasks = [task(f"t{i}", "binance:TONUSDT", i + 1, vol=float(i)) for i in range(5)]
    kwargs = {"now": NOW, "retention_days": 30, "k": 3}
    assert nearest_tasks({"log_volatility": 1.1}, tasks, min_tasks=6, **kwargs) == []
    found = nearest_tasks({"log_volatility": 1.1}, tasks, min_tasks=5, **kwargs)
    assert [n.task.task_id for n in found] == ["t1", "t2", "t0"]
    assert found[0].distance < found[1].distance < found[2].distance
    assert all(n.relation == "meta" for n in found)
    excluded = nearest_tasks({"log_volatility": 1.1}, tasks, min_tasks=4, exclude_ids=["t1"], **kwargs)
    assert "t1" not in [n.task.task_id for n in excluded]
    # Retention counts towards min_tasks: with 3 days only t0..t2 remain, fewer than 5.
    short = {**kwargs, "retention_days": 3}
    assert nearest_tasks({"log_volatility": 1.1}, tasks, min_tasks=5, **short) == []


# --- transfer -------------------------------------------------------------------------------------------


def test_split_pair_reads_quote_currencies_without_guessing() -> None:
    assert split_pair("TONUSDT") == ("TON", "USDT")
    assert split_pair("ETHBTC") == ("ETH", "BTC")
    assert split_pair("BTCFDUSD") == ("BTC", "FDUSD")
    assert split_pair("TON-USDT") == ("TON", "USDT")
    assert split_pair("ton/usdc") == ("TON", "USDC")
    assert split_pair("XYZABC") is None
    assert split_pair("USDT") is None


def knowledge_base() -> list[TaskRecord]:
    return [
        task("own", "binance:TONUSDT", 1, vol=1.0),  # the target market itself: not a transfer source
        task("okx_far", "okx:TONUSDT", 2, vol=5.0),
        task("okx_near", "okx:TONUSDT", 3, vol=1.1),  # same market as okx_far, nearer: chosen
        task("bybit", "bybit:TONUSDT", 4, vol=3.0),
        task("sol", "binance:SOLUSDT", 5, vol=1.2),
        task("doge", "binance:DOGEUSDT", 6, vol=4.0),
        task("ethbtc", "binance:ETHBTC", 7, vol=1.0),  # other quote currency: not similar
        task("okx_sol", "okx:SOLUSDT", 8, vol=1.0),  # other exchange and other pair: neither
        task("stale", "kraken:TONUSDT", 90, vol=1.0),  # past retention
    ]


def test_transfer_sources_same_pair_first_then_similar_pairs() -> None:
    kwargs = {"now": NOW, "retention_days": 30}
    found = transfer_sources("binance:TONUSDT", {"log_volatility": 1.0}, knowledge_base(), **kwargs)
    assert [(n.task.task_id, n.relation) for n in found] == [
        ("okx_near", "same_pair"),
        ("bybit", "same_pair"),
        ("sol", "similar_pair"),
        ("doge", "similar_pair"),
    ]
    capped = transfer_sources(
        "binance:TONUSDT", {"log_volatility": 1.0}, knowledge_base(), max_source_tasks=3, **kwargs
    )
    assert [n.task.task_id for n in capped] == ["okx_near", "bybit", "sol"]


def test_transfer_flags_select_the_kinds_of_source() -> None:
    kwargs = {"now": NOW, "retention_days": 30}
    pairs_only = transfer_sources(
        "binance:TONUSDT", {"log_volatility": 1.0}, knowledge_base(), use_similar_exchanges=False, **kwargs
    )
    assert {n.relation for n in pairs_only} == {"similar_pair"}
    exchanges_only = transfer_sources(
        "binance:TONUSDT", {"log_volatility": 1.0}, knowledge_base(), use_similar_pairs=False, **kwargs
    )
    assert {n.relation for n in exchanges_only} == {"same_pair"}
    assert (
        transfer_sources(
            "binance:TONUSDT", {"log_volatility": 1.0}, knowledge_base(), max_source_tasks=0, **kwargs
        )
        == []
    )
    # A pair whose quote currency is unknown has no similar pairs.
    unknown = [task("a", "binance:XYZABC", 1, 1.0), task("b", "binance:QQQABC", 1, 1.0)]
    assert transfer_sources("binance:XYZABC", {"log_volatility": 1.0}, unknown, **kwargs) == []


# --- seeds ----------------------------------------------------------------------------------------------


def test_seed_genomes_keep_genes_drop_junk_and_duplicates() -> None:
    sources = [
        {"alpha": 0.2, "gamma": 0.9, "episodes": 50, "name": "x"},
        {"alpha": 0.2, "gamma": 0.9},  # the same genes as the first: duplicate
        {"allow_short": True, "note": "no genes"},
        {"alpha": float("nan"), "gamma": 0.8},
        {"alpha": 0.3, "rsi_low": 25},
    ]
    seeds = seed_genomes(sources, GENES)
    assert seeds == [{"alpha": 0.2, "gamma": 0.9}, {"gamma": 0.8}, {"alpha": 0.3, "rsi_low": 25}]
    assert seed_genomes(sources, GENES, max_seeds=2) == seeds[:2]
    assert seed_genomes(sources)[0] == {"alpha": 0.2, "gamma": 0.9, "episodes": 50}  # all numeric params


def settings(
    meta: bool, transfer: bool, min_tasks: int = 3
) -> tuple[MetaLearningConfig, TransferLearningConfig]:
    return (
        MetaLearningConfig(enabled=meta, knowledge_retention_days=30, min_tasks_for_learning=min_tasks),
        TransferLearningConfig(enabled=transfer, max_source_tasks=2),
    )


def distinct_params_base() -> list[TaskRecord]:
    return [
        TaskRecord(t.task_id, t.market, t.finished_at, t.features, {"alpha": 0.01 * (i + 1), "gamma": 0.9})
        for i, t in enumerate(knowledge_base())
    ]


def test_switched_off_means_no_seeds() -> None:
    meta, transfer = settings(meta=False, transfer=False)
    plan = plan_seeds(
        "binance:TONUSDT",
        {"log_volatility": 1.0},
        distinct_params_base(),
        meta,
        transfer,
        now=NOW,
        max_seeds=10,
    )
    assert plan.seeds == [] and plan.meta == [] and plan.transfer == []
    assert "meta-learning off" in plan.reason and "transfer learning off" in plan.reason


def test_meta_and_transfer_seed_the_population_when_on() -> None:
    base = distinct_params_base()
    features = {"log_volatility": 1.0}
    meta, transfer = settings(meta=True, transfer=False)
    only_meta = plan_seeds(
        "binance:TONUSDT", features, base, meta, transfer, now=NOW, max_seeds=4, gene_names=GENES
    )
    assert len(only_meta.seeds) == 4 and only_meta.transfer == []
    assert only_meta.meta[0].task.task_id in ("own", "ethbtc", "okx_sol")  # distance 0 in volatility

    meta, transfer = settings(meta=False, transfer=True)
    only_transfer = plan_seeds("binance:TONUSDT", features, base, meta, transfer, now=NOW, max_seeds=10)
    assert [n.task.task_id for n in only_transfer.transfer] == ["okx_near", "bybit"]  # max_source_tasks=2
    assert only_transfer.meta == [] and len(only_transfer.seeds) == 2

    meta, transfer = settings(meta=True, transfer=True, min_tasks=100)
    waiting = plan_seeds("binance:TONUSDT", features, base, meta, transfer, now=NOW, max_seeds=10)
    assert waiting.meta == [] and "waits" in waiting.reason and len(waiting.seeds) == 2

    meta, transfer = settings(meta=True, transfer=True)
    both = plan_seeds("binance:TONUSDT", features, base, meta, transfer, now=NOW, max_seeds=3)
    assert len(both.seeds) == 3
    first_meta, first_transfer = both.meta[0].task.best_params, both.transfer[0].task.best_params
    assert both.seeds[:2] == [dict(first_meta), dict(first_transfer)]  # interleaved, nearest first
    json.dumps(both.to_dict())


def test_q_table_sources_and_blending() -> None:
    base = [
        TaskRecord("a", "okx:TONUSDT", NOW - timedelta(days=1), {"log_volatility": 1.0}, {}, artifact="q/a"),
        TaskRecord("b", "bybit:TONUSDT", NOW - timedelta(days=1), {"log_volatility": 2.0}, {}),
    ]
    meta, transfer = settings(meta=False, transfer=True)
    plan = plan_seeds("binance:TONUSDT", {"log_volatility": 1.0}, base, meta, transfer, now=NOW, max_seeds=5)
    assert plan.q_table_sources == ["q/a"]
    tables = [np.ones((4, 3)), np.full((4, 3), 3.0), np.zeros((6, 3))]
    assert blend_q_tables(tables, (4, 3)) == pytest.approx(np.full((4, 3), 2.0))
    assert blend_q_tables(tables, (8, 3)) is None
