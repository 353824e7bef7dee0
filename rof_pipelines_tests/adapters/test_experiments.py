"""A/B experiments against a real PostgreSQL: experiments recorded and listed with their arms, the
knowledge base with retention, and promotion under concurrency (two experiments finishing at once for
one market: one active config, one recorded conflict, no lost update). The evaluation itself, without
a store, is tested in core/test_experiment.py."""

import threading
from datetime import UTC, datetime, timedelta

import pytest

from rof_pipelines.adapters.experiments import arm_records, finish_experiment
from rof_pipelines.adapters.state_store import ExperimentRecord, StateStore
from rof_pipelines.core.abtest import DecisionRule
from rof_pipelines.core.experiment import ACTIVE, BASELINE, decide_arms, evaluate_arms
from rof_pipelines.core.ga.space import Candidate, FeatureWindows, SearchSpace
from rof_pipelines.core.knowledge import TaskRecord
from rof_pipelines.core.rl.agent import RLParams
from rof_pipelines_tests.core.test_experiment import frame

MARKET = "binance:TONUSDT"
NOW = datetime(2026, 11, 20, tzinfo=UTC)
SPACE = SearchSpace.from_mapping(
    {
        "alpha": {"type": "float", "low": 0.05, "high": 0.5},
        "rsi_low": {"type": "int", "low": 20, "high": 49},
        "rsi_high": {"type": "int", "low": 51, "high": 80},
        "rsi_window": {"type": "int", "low": 7, "high": 28},
        "stop_loss": {"type": "float", "low": 0.0, "high": 0.05},
    }
)
BASE = RLParams(episodes=3, seed=1)


@pytest.fixture
def store(make_settings, pg_database):
    settings = make_settings(
        {
            "state_storage": {
                "db_host": pg_database["db_host"],
                "db_user": pg_database["db_user"],
                "db_name": pg_database["db_name"],
                "db_password": "",
                "schema": "rof_state",
            }
        }
    )
    with StateStore(settings.state_storage) as s:
        s.upgrade("head")
        yield s


def record(experiment_id: str, active_version: int | None, winner: str | None = "ga_champion"):
    return ExperimentRecord(
        experiment_id=experiment_id,
        market=MARKET,
        label="test_experiment",
        window_start=NOW - timedelta(days=1),
        window_end=NOW,
        decision={"winner": winner, "reason": "test", "inf": float("inf")},
        winner=winner,
        promoted=False,
        active_version=active_version,
        promoted_version=None,
        conflict=None,
        details={},
    )


def test_experiments_are_recorded_and_listed_with_their_arms(store):
    data = frame(600)
    evaluation = evaluate_arms(data, {ACTIVE: ("active", Candidate(BASE, FeatureWindows()))}, BASE, SPACE)
    decision = decide_arms(evaluation, DecisionRule(n_boot=200))
    base = record("exp-1", None, winner=None)
    rec = ExperimentRecord(**{**vars(base), "arms": arm_records(evaluation, decision)})
    final, promotion = finish_experiment(store, rec, None)
    assert not promotion.promoted and final.conflict is None
    listed = store.experiments.recent(MARKET)
    assert [e.experiment_id for e in listed] == ["exp-1"]
    assert {a.arm for a in listed[0].arms} == {ACTIVE, BASELINE}
    assert listed[0].decision["inf"] is None  # non-finite floats stored as null
    assert store.configs.get_active(MARKET) is None


def test_concurrent_promotions_leave_one_active_config_and_a_recorded_conflict(store):
    store.configs.set_active(MARKET, {"rl": {"alpha": 0.2}}, "default")
    read = store.configs.get_active(MARKET)
    assert read is not None and read.version == 1
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def experiment(name: str, alpha: float) -> None:
        barrier.wait()  # both read version 1 and finish at once
        outcomes[name] = finish_experiment(store, record(name, read.version), {"rl": {"alpha": alpha}})

    threads = [threading.Thread(target=experiment, args=(f"exp-{i}", 0.3 + i / 10)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    promoted = [name for name, (_, p) in outcomes.items() if p.promoted]
    conflicted = [name for name, (_, p) in outcomes.items() if p.conflict]
    assert len(promoted) == 1 and len(conflicted) == 1, outcomes
    active = store.configs.get_active(MARKET)
    assert active is not None and active.version == 2 and active.experiment_id == promoted[0]
    rows = {e.experiment_id: e for e in store.experiments.recent(MARKET)}
    assert rows[promoted[0]].promoted and rows[promoted[0]].promoted_version == 2
    assert not rows[conflicted[0]].promoted and "optimistic-lock conflict" in rows[conflicted[0]].conflict


def test_first_promotion_creates_and_a_second_creator_conflicts(store):
    _, p1 = finish_experiment(store, record("a", None), {"rl": {"alpha": 0.3}})
    _, p2 = finish_experiment(store, record("b", None), {"rl": {"alpha": 0.4}})
    assert p1.promoted and p1.version == 1 and not p2.promoted and p2.conflict
    assert store.configs.get_active(MARKET).params == {"rl": {"alpha": 0.3}}


def test_knowledge_tasks_round_trip_with_retention(store):
    for days, task_id in ((40, "old"), (3, "recent"), (-1, "future")):
        store.knowledge.add(
            TaskRecord(
                task_id=task_id,
                market=MARKET,
                finished_at=NOW - timedelta(days=days),
                features={"log_volatility": 1.5, "trend": float("nan")},
                best_params={"alpha": 0.3, "rsi_low": 40},
                score=1.2,
                generations=7,
            )
        )
    store.knowledge.add(  # the same task again replaces its record
        TaskRecord("recent", MARKET, NOW - timedelta(days=3), {"log_volatility": 2.0}, {"alpha": 0.4})
    )
    kept = store.knowledge.tasks(now=NOW, retention_days=30)
    assert [t.task_id for t in kept] == ["recent"]
    assert kept[0].best_params == {"alpha": 0.4} and kept[0].features["log_volatility"] == 2.0
    assert len(store.knowledge.tasks()) == 3
    assert store.knowledge.prune(30, now=NOW) == 1
    assert {t.task_id for t in store.knowledge.tasks()} == {"recent", "future"}


def test_an_experiment_is_found_by_id_and_from_the_config_it_promoted(store):
    assert store.experiments.get("exp-1") is None
    assert store.experiments.promoting(MARKET) == (None, None)
    _, promotion = finish_experiment(store, record("exp-1", None), {"rl": {"alpha": 0.3}})
    assert promotion.promoted
    found = store.experiments.get("exp-1")
    assert found is not None and found.promoted_version == 1 and found.details["promotion"]
    config, promoting = store.experiments.promoting(MARKET)
    assert config is not None and config.source == "ab_test" and promoting == found
    # A manual replacement names no experiment: the config in force was not promoted by one.
    store.configs.set_active(MARKET, {"rl": {"alpha": 0.1}}, "manual", expected_version=1)
    config, promoting = store.experiments.promoting(MARKET)
    assert config.version == 2 and config.experiment_id is None and promoting is None


def test_partition_date_is_the_day_the_window_ended_not_the_day_after():
    ended = record("exp-1", None)  # window_end NOW = 2026-11-20 00:00 UTC: the 2026-11-19 partition
    assert ended.partition_date.isoformat() == "2026-11-19"
    recorded = ExperimentRecord(**{**vars(ended), "details": {"partition_date": "2026-11-18"}})
    assert recorded.partition_date.isoformat() == "2026-11-18" and recorded.run_id is None
    with_run = ExperimentRecord(**{**vars(ended), "details": {"run_id": "abc-123"}})
    assert with_run.run_id == "abc-123"


def test_checkpoint_generations_are_the_task_s_tail(store):
    key = {
        "task_id": "ga:task",
        "market": MARKET,
        "experiment_id": "exp",
        "window_start": NOW - timedelta(days=1),
        "window_end": NOW,
        "data_fingerprint": "d",
        "config_fingerprint": "c",
    }
    assert store.checkpoints.generations("ga:task") == []
    for generation in range(4):
        store.checkpoints.save(key, generation, b"x", final=generation == 3)
    assert store.checkpoints.generations("ga:task") == [(2, False), (3, True)]  # older ones pruned
