"""One set of repository tests, run against the PostgreSQL state store and the in-memory one, so the
fake that fast Dagster tests use cannot drift from the real thing: same results, same ordering, same
errors (class and message) for the same calls."""

import dataclasses
import inspect
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rof_pipelines.adapters.state_store import (
    ActiveConfig,
    ArmRecord,
    ExperimentRecord,
    InMemoryStateStore,
    StateRepositories,
    StateStore,
)
from rof_pipelines.adapters.state_store.alerts import CLIP_CHARS, SqlAlerts
from rof_pipelines.adapters.state_store.checkpoints import SqlCheckpoints
from rof_pipelines.adapters.state_store.configs import SqlActiveConfigs
from rof_pipelines.adapters.state_store.experiments import SqlExperiments
from rof_pipelines.adapters.state_store.islands import SqlIslands
from rof_pipelines.adapters.state_store.knowledge import SqlKnowledge
from rof_pipelines.adapters.state_store.progress import SqlProgress
from rof_pipelines.adapters.state_store.quote_gaps import SqlQuoteGaps
from rof_pipelines.adapters.state_store.trials import SqlTrials
from rof_pipelines.core.alerts.model import AlertState, Delivery, Notice, delivery_id, fingerprint, notice_id
from rof_pipelines.core.knowledge import TaskRecord
from rof_pipelines.errors import ConflictError, DataValidationError, PermanentError, StoreUnavailableError

MARKET = "binance:TONUSDT"
OTHER = "okx:BTCUSDT"
NOW = datetime(2026, 11, 20, tzinfo=UTC)
REPOSITORIES = (
    "progress",
    "configs",
    "checkpoints",
    "experiments",
    "trials",
    "knowledge",
    "alerts",
    "islands",
    "quote_gaps",
)


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "memory"])
def store(request: pytest.FixtureRequest) -> Iterator[StateRepositories]:
    """A migrated PostgreSQL store in a fresh database, or a fresh in-memory one."""
    if request.param == "memory":
        yield InMemoryStateStore()
        return
    settings = request.getfixturevalue("pg_settings")
    with StateStore(settings.state_storage, settings.system_setup.circuit_breaker) as real:
        real.upgrade()
        yield real


def task_key(**changes: Any) -> dict[str, Any]:
    return {
        "task_id": "ga:task",
        "market": MARKET,
        "experiment_id": "exp",
        "window_start": NOW - timedelta(days=1),
        "window_end": NOW,
        "data_fingerprint": "d",
        "config_fingerprint": "c",
        **changes,
    }


def experiment(experiment_id: str, market: str = MARKET, **changes: Any) -> ExperimentRecord:
    values: dict[str, Any] = {
        "experiment_id": experiment_id,
        "market": market,
        "label": "rl_vs_ga",
        "window_start": NOW - timedelta(days=1),
        "window_end": NOW,
        "decision": {"winner": "ga_champion", "sortino": float("inf"), "when": NOW},
        "winner": "ga_champion",
        "promoted": False,
        "active_version": None,
        "promoted_version": None,
        "conflict": None,
        "details": {"run_id": "run-1"},
        "arms": (
            ArmRecord("rl_baseline", "baseline", {"alpha": 0.1}, {"sharpe": 0.2}, {}),
            ArmRecord("ga_champion", "challenger", {"alpha": 0.3}, {"sharpe": 1.1}, {"p": 0.01}),
        ),
    }
    return ExperimentRecord(**{**values, **changes})


def knowledge(task_id: str, days_ago: float, market: str = MARKET, **changes: Any) -> TaskRecord:
    values: dict[str, Any] = {
        "task_id": task_id,
        "market": market,
        "finished_at": NOW - timedelta(days=days_ago),
        "features": {"log_volatility": 1.5, "trend": float("nan")},
        "best_params": {"alpha": 0.3},
        "score": 1.2,
        "generations": 7,
    }
    return TaskRecord(**{**values, **changes})


# --- the two implementations offer the same API -----------------------------------------------------


def test_repositories_have_the_same_methods_and_signatures():
    fake = InMemoryStateStore()
    sql_classes = {
        "progress": SqlProgress,
        "configs": SqlActiveConfigs,
        "checkpoints": SqlCheckpoints,
        "experiments": SqlExperiments,
        "trials": SqlTrials,
        "knowledge": SqlKnowledge,
        "alerts": SqlAlerts,
        "islands": SqlIslands,
        "quote_gaps": SqlQuoteGaps,
    }
    assert set(sql_classes) == set(REPOSITORIES)
    for name, sql_class in sql_classes.items():
        memory_class = type(getattr(fake, name))
        public = {m for m in dir(sql_class) if not m.startswith("_")}
        assert public == {m for m in dir(memory_class) if not m.startswith("_")}, name
        for method in public:
            sql_signature = inspect.signature(getattr(sql_class, method))
            assert sql_signature == inspect.signature(getattr(memory_class, method)), f"{name}.{method}"


# --- worker progress ------------------------------------------------------------------------------


def test_progress_is_recorded_read_and_found_newest_first(store):
    assert store.progress.get("a") is None
    assert (
        store.progress.record("a", "Binance:tonusdt", 3, 20, 1.25, 120.0, "running", {"n": 1}, worker_id="w1")
        == 1
    )
    assert store.progress.record("b", OTHER, 0, 20, None, None, "pending") == 1
    got = store.progress.get("a")
    assert (got.market, got.generation, got.total_generations, got.status, got.worker_id) == (
        MARKET,
        3,
        20,
        "running",
        "w1",
    )
    assert got.details == {"n": 1} and got.version == 1 and got.started_at <= got.updated_at
    got.details["n"] = 99
    assert store.progress.get("a").details == {"n": 1}, "a record is a copy, not the stored row"

    # A heartbeat without expected_version overwrites; identity fields left None are kept.
    assert store.progress.record("a", MARKET, 4, 20, 1.5, 90.0, "running", None) == 2
    again = store.progress.get("a")
    assert (again.generation, again.details, again.worker_id, again.version) == (4, {}, "w1", 2)
    assert again.started_at == got.started_at and again.updated_at > got.updated_at

    assert [p.task_id for p in store.progress.find()] == ["a", "b"], "newest first"
    assert [p.task_id for p in store.progress.find(market=OTHER)] == ["b"]
    assert [p.task_id for p in store.progress.find(market=MARKET, status="running")] == ["a"]
    assert store.progress.find(status="completed") == []


def test_progress_expected_version(store):
    with pytest.raises(ConflictError, match="absent"):
        store.progress.record("t", MARKET, 0, 10, None, None, "pending", {}, expected_version=1)
    assert store.progress.record("t", MARKET, 0, 10, None, None, "pending", {}, expected_version=0) == 1
    with pytest.raises(ConflictError) as claimed_twice:
        store.progress.record("t", MARKET, 0, 10, None, None, "running", {}, expected_version=0)
    assert str(claimed_twice.value) == (
        "state_store: optimistic-lock conflict on rof_state.worker_progress task_id='t': "
        "expected absent (create), found version 1; re-read and retry"
    )
    assert store.progress.record("t", MARKET, 1, 10, 0.1, 5.0, "running", {}, expected_version=1) == 2
    with pytest.raises(ConflictError, match=r"expected version 1, found version 2"):
        store.progress.record("t", MARKET, 9, 10, 0.9, 0.0, "failed", {"who": "stale"}, expected_version=1)
    got = store.progress.get("t")
    assert (got.generation, got.status, got.version) == (1, "running", 2)


def test_progress_input_is_refused_the_same_way(store):
    with pytest.raises(DataValidationError, match="status must be one of"):
        store.progress.record("t", MARKET, 0, 10, None, None, "bogus", {})
    with pytest.raises(DataValidationError, match="market"):
        store.progress.record("t", "TONUSDT", 0, 10, None, None, "running", {})
    with pytest.raises(DataValidationError, match="details must be a mapping"):
        store.progress.record("t", MARKET, 0, 10, None, None, "running", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(DataValidationError, match="expected_version"):
        store.progress.record("t", MARKET, 0, 10, None, None, "running", {}, expected_version=-1)
    with pytest.raises(DataValidationError, match="status"):
        store.progress.find(status="bogus")
    with pytest.raises(PermanentError) as nan:  # jsonb has no NaN
        store.progress.record("t", MARKET, 0, 10, None, None, "running", {"x": float("nan")})
    assert (nan.value.service, nan.value.operation) == ("state_store", "write")
    with pytest.raises(PermanentError, match="ck_worker_progress_generations"):
        store.progress.record("t", MARKET, -1, 10, None, None, "running", {})
    with pytest.raises(PermanentError, match="ck_worker_progress_window"):
        store.progress.record("t", MARKET, 0, 10, None, None, "running", window_start=NOW, window_end=NOW)
    assert store.progress.get("t") is None, "nothing refused was stored"


# --- active configs -------------------------------------------------------------------------------


def test_active_config_create_read_replace(store):
    assert store.configs.get_active(MARKET) is None
    created = store.configs.set_active("binance:tonusdt", {"rsi": 14}, "default", updated_by="test")
    assert isinstance(created, ActiveConfig)
    assert (created.market, created.params, created.source, created.version, created.updated_by) == (
        MARKET,
        {"rsi": 14},
        "default",
        1,
        "test",
    )
    assert store.configs.get_active(MARKET) == created
    created.params["rsi"] = 1
    assert store.configs.get_active(MARKET).params == {"rsi": 14}, "a record is a copy"

    with pytest.raises(ConflictError) as blind:
        store.configs.set_active(MARKET, {"rsi": 7}, "ga")
    assert str(blind.value) == (
        "state_store: optimistic-lock conflict on rof_state.active_strategy_configs "
        "market='binance:TONUSDT': expected absent (create), found version 1; re-read and retry"
    )
    replaced = store.configs.set_active(MARKET, {"rsi": 21}, "ab_test", "exp-1", expected_version=1)
    assert (replaced.params, replaced.source, replaced.experiment_id, replaced.version) == (
        {"rsi": 21},
        "ab_test",
        "exp-1",
        2,
    )
    assert replaced.updated_at > created.updated_at
    whole = store.configs.set_active(MARKET, {"rsi": 22}, "manual", expected_version=2)
    assert whole.experiment_id is None and whole.updated_by == "rof_pipelines", "a replacement is whole"
    with pytest.raises(ConflictError, match="expected version 2, found version 3"):
        store.configs.set_active(MARKET, {"rsi": 30}, "ga", expected_version=2)
    with pytest.raises(ConflictError, match="expected version 3, found absent"):
        store.configs.set_active("binance:ETHUSDT", {"rsi": 1}, "ga", expected_version=3)

    store.configs.set_active("binance:BTCUSDT", {"rsi": 10}, "ga")
    assert [c.market for c in store.configs.list_active()] == ["binance:BTCUSDT", MARKET]
    with pytest.raises(DataValidationError, match="source"):
        store.configs.set_active(MARKET, {"rsi": 1}, "guess", expected_version=3)
    with pytest.raises(DataValidationError, match="params"):
        store.configs.set_active(MARKET, "rsi=1", "ga", expected_version=3)  # type: ignore[arg-type]
    with pytest.raises(PermanentError):
        store.configs.set_active(MARKET, {"rsi": float("nan")}, "ga", expected_version=3)
    assert store.configs.get_active(MARKET).version == 3


def _race(*writers: Callable[[], Any]) -> list[Any]:
    """Run the writers in threads released together; each one's result or exception, in order."""
    barrier = threading.Barrier(len(writers))
    outcome: list[Any] = [None] * len(writers)

    def run(index: int, write: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            outcome[index] = write()
        except ConflictError as exc:
            outcome[index] = exc

    threads = [threading.Thread(target=run, args=item) for item in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcome


def test_two_writers_in_threads_exactly_one_wins(store):
    store.configs.set_active(MARKET, {"writer": "first"}, "default")
    for _ in range(3):
        seen = store.configs.get_active(MARKET).version

        def writer(name: str, version: int = seen) -> Callable[[], ActiveConfig]:
            return lambda: store.configs.set_active(MARKET, {"w": name}, "ga", name, expected_version=version)

        outcome = _race(writer("a"), writer("b"))
        winners = [result.experiment_id for result in outcome if isinstance(result, ActiveConfig)]
        assert len(winners) == 1 and sum(isinstance(r, ConflictError) for r in outcome) == 1, outcome
        final = store.configs.get_active(MARKET)
        assert final.version == seen + 1 and final.experiment_id == winners[0]


# --- checkpoints ----------------------------------------------------------------------------------


def test_checkpoints_keep_the_newest_and_resume_from_the_latest(store):
    key = task_key()
    assert store.checkpoints.latest(key) is None and store.checkpoints.generations("ga:task") == []
    for generation in range(4):
        store.checkpoints.save(key, generation, bytes([generation]), final=generation == 3, best_fitness=0.5)
    assert store.checkpoints.generations("ga:task") == [(2, False), (3, True)], "older ones pruned"
    latest = store.checkpoints.latest(key)
    assert (latest.generation, latest.payload, latest.final, latest.best_fitness) == (3, b"\x03", True, 0.5)
    assert {f.name for f in dataclasses.fields(latest)} >= {"created_at", "task_id", "config_fingerprint"}

    store.checkpoints.save(key, 3, b"replayed", final=False)  # a resumed run replays a generation
    assert store.checkpoints.latest(key).payload == b"replayed" and not store.checkpoints.latest(key).final
    store.checkpoints.save(key, 9, b"many", keep=3)
    assert [g for g, _ in store.checkpoints.generations("ga:task")] == [2, 3, 9]

    assert store.checkpoints.latest(task_key(config_fingerprint="other")) is None
    store.checkpoints.save(task_key(task_id="ga:other", data_fingerprint="e"), 0, b"o")
    assert store.checkpoints.generations("ga:other") == [(0, False)]
    assert store.checkpoints.prune(7) == 0
    assert store.checkpoints.prune(7, now=datetime.now(UTC) + timedelta(days=8)) == 4
    assert store.checkpoints.latest(key) is None


def test_checkpoint_input_is_refused_the_same_way(store):
    with pytest.raises(DataValidationError, match="generation must be >= 0"):
        store.checkpoints.save(task_key(), -1, b"x")
    with pytest.raises(DataValidationError, match="keep >= 1"):
        store.checkpoints.save(task_key(), 0, b"x", keep=0)
    with pytest.raises(DataValidationError, match="retention_days must be >= 1, got 0"):
        store.checkpoints.prune(0)
    with pytest.raises(PermanentError, match="ck_ga_checkpoints_window"):
        store.checkpoints.save(task_key(window_end=NOW - timedelta(days=2)), 0, b"x")


# --- quote gaps ------------------------------------------------------------------------------------


def _minutes(n: int) -> datetime:
    return NOW + timedelta(minutes=n)


def test_quote_gaps_are_what_the_last_answer_for_a_range_said(store):
    """A download's answer for a range replaces what was recorded for it: a trailing stretch not served
    yet stops being a gap when candles come, a gap that narrows is recorded narrower, other markets'
    and intervals' rows stay."""
    assert store.quote_gaps.find() == []
    trailing = [(_minutes(50), _minutes(60))]
    assert (
        store.quote_gaps.record(
            MARKET, "1m", _minutes(0), _minutes(60), [(_minutes(10), _minutes(20)), *trailing], "download"
        )
        == 0
    )
    store.quote_gaps.record(OTHER, "1m", _minutes(0), _minutes(60), [(_minutes(10), _minutes(20))], "ingest")
    store.quote_gaps.record(
        MARKET, "1h", _minutes(0), _minutes(120), [(_minutes(0), _minutes(60))], "download"
    )
    found = store.quote_gaps.find(MARKET, "1m")
    assert [(g.gap_from, g.gap_to, g.source) for g in found] == [
        (_minutes(10), _minutes(20), "download"),
        (_minutes(50), _minutes(60), "download"),
    ]
    assert all(g.market == MARKET and g.interval == "1m" and g.recorded_at.tzinfo for g in found)

    # The next fetch, from the newest stored candle on: candles from 55 on, so [50, 55) is what is left.
    assert (
        store.quote_gaps.record(
            MARKET, "1m", _minutes(50), _minutes(90), [(_minutes(50), _minutes(55))], "ingest"
        )
        == 1
    )
    assert [(g.gap_from, g.gap_to, g.source) for g in store.quote_gaps.find(MARKET, "1m")] == [
        (_minutes(10), _minutes(20), "download"),
        (_minutes(50), _minutes(55), "ingest"),
    ]
    # Candles found where a gap was recorded (the exchange had lagged): the gap goes.
    assert store.quote_gaps.record(MARKET, "1m", _minutes(0), _minutes(30), [], "download") == 1
    assert [g.gap_from for g in store.quote_gaps.find(MARKET, "1m")] == [_minutes(50)]
    # A range only touching a gap's ends leaves it alone (half-open ranges).
    assert store.quote_gaps.record(MARKET, "1m", _minutes(55), _minutes(70), [], "download") == 0
    assert store.quote_gaps.record(MARKET, "1m", _minutes(40), _minutes(50), [], "download") == 0
    assert len(store.quote_gaps.find(MARKET, "1m")) == 1

    # find: by overlap with a range, by market in any spelling, everything in order.
    assert [g.gap_from for g in store.quote_gaps.find(MARKET, start=_minutes(54), end=_minutes(200))] == [
        _minutes(0),
        _minutes(50),
    ]
    assert store.quote_gaps.find(MARKET, "1m", start=_minutes(55)) == []
    assert [g.market for g in store.quote_gaps.find("BINANCE:tonusdt", "1m")] == [MARKET]
    assert [(g.market, g.interval) for g in store.quote_gaps.find()] == [
        (MARKET, "1h"),
        (MARKET, "1m"),
        (OTHER, "1m"),
    ]


def test_quote_gaps_refuse_a_gap_outside_its_range_and_an_empty_range(store):
    with pytest.raises(DataValidationError, match="not inside the range asked"):
        store.quote_gaps.record(
            MARKET, "1m", _minutes(0), _minutes(10), [(_minutes(5), _minutes(15))], "download"
        )
    with pytest.raises(DataValidationError, match="is empty"):
        store.quote_gaps.record(MARKET, "1m", _minutes(10), _minutes(10), [], "download")
    with pytest.raises(DataValidationError, match="market"):
        store.quote_gaps.record("not a market", "1m", _minutes(0), _minutes(10), [], "download")
    assert store.quote_gaps.find() == [], "nothing half written"


# --- island GA epochs -----------------------------------------------------------------------------


def test_island_epochs_are_written_once_and_read_by_epoch(store):
    assert store.islands.get("ga:task", 0, 1) is None and store.islands.epoch("ga:task", 1) == []
    assert store.islands.save("ga:task", 1, 1, b"island 1")
    assert store.islands.save("ga:task", 0, 1, b"island 0")
    assert store.islands.save("ga:task", 0, 0, b"start")
    assert not store.islands.save("ga:task", 0, 1, b"again"), "the first write wins"
    assert store.islands.get("ga:task", 0, 1).payload == b"island 0"
    found = store.islands.epoch("ga:task", 1)
    assert [(r.island, r.epoch, r.payload) for r in found] == [(0, 1, b"island 0"), (1, 1, b"island 1")]
    assert found[0].task_id == "ga:task" and found[0].created_at.tzinfo is not None
    assert store.islands.epoch("ga:other", 1) == []
    with pytest.raises(DataValidationError, match="island >= 0 and epoch >= 0"):
        store.islands.save("ga:task", -1, 0, b"x")
    assert store.islands.prune(7) == 0
    assert store.islands.prune(7, now=datetime.now(UTC) + timedelta(days=8)) == 3
    assert store.islands.get("ga:task", 0, 0) is None


# --- experiments ----------------------------------------------------------------------------------


def test_experiments_are_recorded_with_their_arms_and_listed_newest_first(store):
    assert store.experiments.get("exp-1") is None and store.experiments.recent() == []
    store.experiments.record(experiment("exp-1"))
    store.experiments.record(experiment("exp-2", OTHER, arms=()))
    store.experiments.record(experiment("exp-3"))
    found = store.experiments.get("exp-1")
    assert [a.arm for a in found.arms] == ["ga_champion", "rl_baseline"], "arms by name"
    assert found.arms[0] == ArmRecord(
        "ga_champion", "challenger", {"alpha": 0.3}, {"sharpe": 1.1}, {"p": 0.01}
    )
    assert found.decision == {"winner": "ga_champion", "sortino": None, "when": NOW.isoformat()}
    assert found.run_id == "run-1" and found.partition_date.isoformat() == "2026-11-19"
    assert found.created_at is not None and found.window_end == NOW

    assert [e.experiment_id for e in store.experiments.recent()] == ["exp-3", "exp-2", "exp-1"]
    assert [e.experiment_id for e in store.experiments.recent(MARKET)] == ["exp-3", "exp-1"]
    assert [e.experiment_id for e in store.experiments.recent(limit=1)] == ["exp-3"]
    assert store.experiments.recent(OTHER)[0].arms == ()

    with pytest.raises(PermanentError):  # ids are unique per run: a duplicate is a bug
        store.experiments.record(experiment("exp-1"))
    with pytest.raises(DataValidationError, match="role must be one of"):
        store.experiments.record(experiment("exp-4", arms=(ArmRecord("x", "referee", {}, {}, {}),)))
    assert store.experiments.get("exp-4") is None
    assert len(store.experiments.recent()) == 3


def test_the_experiment_that_promoted_the_active_config(store):
    assert store.experiments.promoting(MARKET) == (None, None)
    store.configs.set_active(MARKET, {"rsi": 14}, "default")
    config, promoting = store.experiments.promoting(MARKET)
    assert config.source == "default" and promoting is None
    store.experiments.record(experiment("exp-1", promoted=True, promoted_version=2))
    store.configs.set_active(MARKET, {"alpha": 0.3}, "ab_test", "exp-1", expected_version=1)
    config, promoting = store.experiments.promoting(MARKET)
    assert config.version == 2 and promoting == store.experiments.get("exp-1")
    store.configs.set_active(MARKET, {"alpha": 0.4}, "ab_test", "exp-missing", expected_version=2)
    config, promoting = store.experiments.promoting(MARKET)
    assert config.experiment_id == "exp-missing" and promoting is None


# --- trial ledger ---------------------------------------------------------------------------------


def test_trials_keep_their_first_score_and_count_distinct_configurations(store):
    assert store.trials.stats("task") == (0, None)
    store.trials.record("task", {})
    store.trials.record("task", {"a": 1.0})
    assert store.trials.stats("task") == (1, None), "no variance below two trials"
    store.trials.record("task", {"a": 5.0, "b": 2.0, "c": 3.0, "nan": float("nan")})
    count, variance = store.trials.stats("task")
    assert count == 3 and variance == pytest.approx(1.0)
    store.trials.record("other", {"a": 1.0})
    assert store.trials.stats("task")[0] == 3 and store.trials.stats("other") == (1, None)


# --- knowledge ------------------------------------------------------------------------------------


def test_knowledge_tasks_with_retention_and_no_future(store):
    for task_id, days in (("old", 40), ("recent", 3), ("future", -1), ("mid", 10)):
        store.knowledge.add(knowledge(task_id, days))
    store.knowledge.add(knowledge("elsewhere", 5, OTHER))
    store.knowledge.add(knowledge("recent", 3, best_params={"alpha": 0.4}, score=float("nan")))
    kept = store.knowledge.tasks(now=NOW, retention_days=30)
    assert [t.task_id for t in kept] == ["mid", "elsewhere", "recent"], "oldest first"
    recent = kept[-1]
    assert recent.best_params == {"alpha": 0.4} and recent.score != recent.score, "replaced; NaN kept"
    assert recent.features["log_volatility"] == 1.5 and recent.features["trend"] != recent.features["trend"]
    assert recent.finished_at == NOW - timedelta(days=3) and recent.generations == 7
    assert [t.task_id for t in store.knowledge.tasks(now=NOW, market=OTHER)] == ["elsewhere"]
    assert [t.task_id for t in store.knowledge.tasks(now=NOW)] == ["old", "mid", "elsewhere", "recent"]
    assert len(store.knowledge.tasks()) == 5
    assert store.knowledge.prune(30, now=NOW) == 1
    assert {t.task_id for t in store.knowledge.tasks()} == {"mid", "elsewhere", "recent", "future"}
    with pytest.raises(DataValidationError, match="retention_days"):
        store.knowledge.prune(0)


# --- alerts: states and the outbox -----------------------------------------------------------------


def alert(rule: str = "ga_stalled", market: str = MARKET, **changes: Any) -> AlertState:
    labels = {"market": market}
    values: dict[str, Any] = {
        "rule": rule,
        "fingerprint": fingerprint(rule, labels),
        "labels": labels,
        "severity": "warning",
        "status": "firing",
        "active_since": NOW - timedelta(minutes=10),
        "fired_at": NOW - timedelta(minutes=5),
        "summary": f"{market}: stalled",
        "values": {"ga_best_fitness": 0.5, "ratio": float("inf"), "seen": NOW},
    }
    return AlertState(**{**values, **changes})


def delivery(
    state: AlertState, channel: str = "webhook", *, event: str = "firing", minutes: float = 0, **changes: Any
) -> Delivery:
    """A pending delivery of ``state``'s notice to ``channel``, created ``minutes`` after NOW and due then."""
    at = NOW + timedelta(minutes=minutes)
    nid = notice_id(state.fingerprint, event, state.fired_at or NOW)
    notice = Notice(
        nid, event, state.rule, state.fingerprint, state.labels, state.severity, state.summary, at
    )
    values: dict[str, Any] = {
        "delivery_id": delivery_id(nid, channel),
        "notice": notice,
        "channel": channel,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": at,
        "created_at": at,
    }
    return Delivery(**{**values, **changes})


def test_alert_states_are_created_and_replaced_at_the_version_read(store):
    assert store.alerts.states() == []
    first, other = alert(), alert("pool_dry", OTHER, status="pending", fired_at=None)
    out = delivery(first)
    assert store.alerts.apply([first, other], [out]) == 1
    stored = store.alerts.states()
    assert [s.rule for s in stored] == ["ga_stalled", "pool_dry"], "by rule, then fingerprint"
    got = stored[0]
    assert got == replace(
        first, values={"ga_best_fitness": 0.5, "ratio": None, "seen": NOW.isoformat()}, version=1
    ), "JSON-safe values, version 1"
    assert got.fired_at.tzinfo is not None and got.fired_at.utcoffset() == timedelta(0)
    assert stored[1].fired_at is None and stored[1].version == 1

    resolved = replace(got, status="resolved", resolved_at=NOW, notified=True, last_notified_at=NOW)
    assert store.alerts.apply([resolved], []) == 0
    assert store.alerts.states()[0] == replace(resolved, version=2)

    # A stale writer (read version 1) loses, and writes nothing: not its state, not its delivery.
    late = delivery(first, "email")
    with pytest.raises(ConflictError) as stale:
        store.alerts.apply([replace(got, summary="stale")], [late])
    assert str(stale.value) == (
        f"state_store: optimistic-lock conflict on rof_state.alert_states fingerprint='{first.fingerprint}': "
        "expected version 1, found version 2; re-read and retry"
    )
    with pytest.raises(ConflictError, match=r"expected absent \(create\), found version 2"):
        store.alerts.apply([alert()], [late])
    # One conflict among several states rolls back the others too.
    fresh = alert("job_failed")
    with pytest.raises(ConflictError, match="expected version 5, found absent"):
        store.alerts.apply([fresh, replace(alert("nowhere"), version=5)], [late])
    assert [s.rule for s in store.alerts.states()] == ["ga_stalled", "pool_dry"]
    assert store.alerts.states()[0].summary == first.summary
    assert [d.delivery_id for d in store.alerts.deliveries()] == [out.delivery_id], "no delivery written"


def test_alert_input_is_refused_the_same_way(store):
    with pytest.raises(DataValidationError, match="severity must be one of info, warning, critical"):
        store.alerts.apply([alert(severity="fatal")], [])
    with pytest.raises(DataValidationError, match="status must be one of pending, firing, resolved"):
        store.alerts.apply([alert(status="gone")], [])
    with pytest.raises(DataValidationError, match="labels must be a mapping"):
        store.alerts.apply([alert(labels=["market"])], [])
    with pytest.raises(DataValidationError, match="expected_version"):
        store.alerts.apply([alert(version=-1)], [])
    with pytest.raises(DataValidationError, match="the same alert twice"):
        store.alerts.apply([alert(), alert()], [])
    base = delivery(alert())
    with pytest.raises(DataValidationError, match="event must be one of firing, resolved, test"):
        store.alerts.apply([], [replace(base, notice=replace(base.notice, event="exploded"))])
    with pytest.raises(DataValidationError, match="status must be one of pending, sent, dead"):
        store.alerts.apply([], [replace(base, status="lost")])
    with pytest.raises(DataValidationError, match="attempts must be an integer >= 0"):
        store.alerts.apply([], [replace(base, attempts=-1)])
    with pytest.raises(DataValidationError, match="status must be one of"):
        store.alerts.deliveries(status="lost")
    with pytest.raises(DataValidationError, match="lease_s must be > 0"):
        store.alerts.claim_due(NOW, 0)
    with pytest.raises(DataValidationError, match="limit must be >= 1"):
        store.alerts.claim_due(NOW, 30, limit=0)
    with pytest.raises(DataValidationError, match="retention_days must be >= 1, got 0"):
        store.alerts.prune(0)
    with pytest.raises(PermanentError) as valid:  # not JSON at all (NaN/inf are made None, see above)
        store.alerts.apply([], [replace(base, notice=replace(base.notice, values={"x": object()}))])
    assert (valid.value.service, valid.value.operation) == ("state_store", "write")
    assert store.alerts.states() == [] and store.alerts.deliveries() == []


def test_a_delivery_is_inserted_once(store):
    state = alert()
    out = delivery(state)
    assert store.alerts.apply([state], [out, out]) == 1, "the same delivery twice in one call"
    assert store.alerts.apply([], [out]) == 0, "a retried evaluation"
    assert store.alerts.apply([], [out, delivery(state, "email")]) == 1
    assert sorted(d.channel for d in store.alerts.deliveries()) == ["email", "webhook"]
    got = store.alerts.deliveries(fingerprint=state.fingerprint, status="pending")
    assert {d.delivery_id for d in got} == {out.delivery_id, delivery(state, "email").delivery_id}
    assert next(d for d in got if d.channel == "webhook") == out, "a delivery round-trips whole"
    with pytest.raises(PermanentError, match="uq_alert_deliveries_notice_channel"):
        store.alerts.apply([], [replace(out, delivery_id="another-id")])
    assert len(store.alerts.deliveries()) == 2


def test_claim_due_takes_due_unleased_rows_oldest_first(store):
    a, b = alert("a_rule"), alert("b_rule")
    early, later = delivery(a, minutes=-3), delivery(b, minutes=-2)
    future = delivery(a, "email", minutes=-1, next_attempt_at=NOW + timedelta(minutes=10))
    store.alerts.apply([a, b], [later, future, early])

    claimed = store.alerts.claim_due(NOW, 60)
    assert [d.delivery_id for d in claimed] == [early.delivery_id, later.delivery_id], (
        "due only, oldest first"
    )
    assert all(d.attempts == 1 and d.lease_until == NOW + timedelta(seconds=60) for d in claimed)
    assert claimed[0] == replace(early, attempts=1, lease_until=NOW + timedelta(seconds=60))
    assert store.alerts.claim_due(NOW + timedelta(seconds=30), 60) == [], "leased rows are left alone"

    # The lease passed (the sender died): the rows are claimed again, another attempt counted.
    again = store.alerts.claim_due(NOW + timedelta(seconds=60), 60, limit=1)
    assert [(d.delivery_id, d.attempts) for d in again] == [(early.delivery_id, 2)]
    assert store.alerts.claim_due(NOW + timedelta(seconds=61), 60, channels=["email"]) == []
    assert store.alerts.claim_due(NOW + timedelta(seconds=61), 60, channels=[]) == []
    rest = store.alerts.claim_due(NOW + timedelta(minutes=11), 60, channels={"email", "webhook"})
    assert [(d.delivery_id, d.attempts) for d in rest] == [
        (early.delivery_id, 3),
        (later.delivery_id, 2),
        (future.delivery_id, 1),
    ]
    naive = store.alerts.claim_due((NOW + timedelta(hours=1)).replace(tzinfo=None), 5)
    assert len(naive) == 3 and naive[0].lease_until == NOW + timedelta(hours=1, seconds=5), "naive is UTC"


def test_sent_failed_and_dead_deliveries(store):
    state = alert()
    hook, mail, chat = delivery(state), delivery(state, "email"), delivery(state, "telegram")
    store.alerts.apply([state], [hook, mail, chat])
    assert len(store.alerts.claim_due(NOW, 60)) == 3

    retry = NOW + timedelta(minutes=5)
    assert store.alerts.mark_failed(hook.delivery_id, "HTTP 503 " + "x" * 2000, NOW, retry)
    failed = store.alerts.deliveries(fingerprint=state.fingerprint)
    failed = next(d for d in failed if d.channel == "webhook")
    assert (failed.status, failed.attempts, failed.lease_until, failed.next_attempt_at) == (
        "pending",
        1,
        None,
        retry,
    )
    assert failed.last_error.startswith("HTTP 503 x") and len(failed.last_error) == CLIP_CHARS
    assert store.alerts.mark_failed(mail.delivery_id, "550 refused", NOW, None)
    assert not store.alerts.mark_sent(mail.delivery_id, "late 250", NOW), "a dead row stays dead"
    assert store.alerts.mark_sent(chat.delivery_id, "ok", NOW)
    assert not store.alerts.mark_sent("no-such-delivery", "ok", NOW)

    assert store.alerts.claim_due(retry - timedelta(seconds=1), 60) == [], "not before its retry time"
    assert [d.delivery_id for d in store.alerts.claim_due(retry, 60)] == [hook.delivery_id]
    assert store.alerts.mark_sent(hook.delivery_id, "200 OK " + "y" * 900, retry)
    assert not store.alerts.mark_failed(hook.delivery_id, "late timeout", retry, None), "already sent"

    sent = store.alerts.deliveries(status="sent")
    assert sorted(d.channel for d in sent) == ["telegram", "webhook"]
    hook_sent = next(d for d in sent if d.channel == "webhook")
    assert (hook_sent.sent_at, hook_sent.lease_until, hook_sent.attempts) == (retry, None, 2)
    assert hook_sent.answer.startswith("200 OK y") and len(hook_sent.answer) == CLIP_CHARS
    assert hook_sent.last_error.startswith("HTTP 503"), "the last error is kept after a success"
    dead = store.alerts.deliveries(status="dead")
    assert [(d.channel, d.last_error, d.answer, d.lease_until) for d in dead] == [
        ("email", "550 refused", None, None)
    ]
    assert store.alerts.deliveries(status="pending") == []
    assert store.alerts.claim_due(NOW + timedelta(days=1), 60) == [], "nothing left to send"
    assert store.alerts.delivery_counts() == [
        ("ga_stalled", "email", "firing", "dead", 1, 1),
        ("ga_stalled", "telegram", "firing", "sent", 1, 0),
        ("ga_stalled", "webhook", "firing", "sent", 1, 1),
    ]


def test_deliveries_newest_first_and_counts(store):
    a, b = alert("a_rule"), alert("b_rule", OTHER)
    rows = [
        delivery(a, minutes=1),
        delivery(a, "email", minutes=2),
        delivery(b, minutes=3),
        delivery(a, event="resolved", minutes=4),
    ]
    assert store.alerts.apply([a, b], rows) == 4
    assert [d.created_at for d in store.alerts.deliveries()] == [r.created_at for r in reversed(rows)]
    assert store.alerts.deliveries(limit=2) == list(reversed(rows))[:2]
    assert [d.notice.event for d in store.alerts.deliveries(fingerprint=a.fingerprint)] == [
        "resolved",
        "firing",
        "firing",
    ]
    assert store.alerts.deliveries(fingerprint="nope") == []
    store.alerts.claim_due(NOW + timedelta(minutes=2), 60)  # claims the first two
    store.alerts.mark_failed(rows[0].delivery_id, "boom", NOW, NOW + timedelta(minutes=9))
    store.alerts.mark_failed(rows[1].delivery_id, "boom", NOW, None)
    assert store.alerts.delivery_counts() == [
        ("a_rule", "email", "firing", "dead", 1, 1),
        ("a_rule", "webhook", "firing", "pending", 1, 1),
        ("a_rule", "webhook", "resolved", "pending", 1, 0),
        ("b_rule", "webhook", "firing", "pending", 1, 0),
    ]


def test_prune_removes_finished_rows_and_keeps_pending(store):
    old_fire = alert("old", resolved_at=NOW - timedelta(days=20), status="resolved")
    new_fire = alert("new", resolved_at=NOW - timedelta(days=2), status="resolved")
    firing = alert("firing", fired_at=NOW - timedelta(days=30))
    old = [delivery(old_fire, c, minutes=-30 * 24 * 60) for c in ("webhook", "email", "telegram")]
    recent = delivery(new_fire, minutes=-24 * 60)
    store.alerts.apply([old_fire, new_fire, firing], [*old, recent])
    store.alerts.claim_due(NOW, 60)
    store.alerts.mark_sent(old[0].delivery_id, "ok", NOW)
    store.alerts.mark_failed(old[1].delivery_id, "gone", NOW, None)
    store.alerts.mark_failed(old[2].delivery_id, "later", NOW, NOW + timedelta(hours=1))  # still pending
    store.alerts.mark_sent(recent.delivery_id, "ok", NOW)

    assert store.alerts.prune(7, now=NOW) == 3, "old sent + old dead deliveries, the long-resolved alert"
    assert [s.rule for s in store.alerts.states()] == ["firing", "new"]
    assert {d.delivery_id for d in store.alerts.deliveries()} == {old[2].delivery_id, recent.delivery_id}
    assert store.alerts.prune(7, now=NOW) == 0
    assert store.alerts.prune(1, now=NOW + timedelta(days=400)) == 2, "pending is never pruned"
    assert [d.delivery_id for d in store.alerts.deliveries()] == [old[2].delivery_id]


def test_an_alert_evaluation_cycle_survives_a_sender_that_died(store):
    """What the engine does: fire (state + outbox in one step), a sender claims and dies, the next one
    sends after the lease; the state's version follows every write."""
    state = alert(status="pending", fired_at=None)
    assert store.alerts.apply([state], []) == 0
    seen = store.alerts.states()[0]
    fired = replace(seen, status="firing", fired_at=NOW, notified=True, last_notified_at=NOW)
    assert store.alerts.apply([fired], [delivery(fired)]) == 1
    assert store.alerts.states()[0].version == 2
    first = store.alerts.claim_due(NOW, 30)
    second = store.alerts.claim_due(NOW + timedelta(seconds=31), 30)
    assert [d.delivery_id for d in first] == [d.delivery_id for d in second] and second[0].attempts == 2
    assert store.alerts.mark_sent(second[0].delivery_id, "204", NOW + timedelta(seconds=32))
    assert not store.alerts.mark_sent(first[0].delivery_id, "204 late", NOW + timedelta(seconds=40))
    assert store.alerts.deliveries()[0].answer == "204"


# --- the store itself -----------------------------------------------------------------------------


def test_the_store_describes_itself_pings_and_closes(store):
    assert "rof_state" in store.describe()
    store.ping()
    with store as same:
        assert same is store
    store.dispose()


def test_the_fake_can_be_down():
    """For tests of "state store down" degradation: every call fails as a lost database would."""
    store = InMemoryStateStore()
    store.configs.set_active(MARKET, {"rsi": 14}, "default")
    store.unavailable = "connection refused"
    calls: list[Callable[[], Any]] = [
        store.ping,
        lambda: store.configs.get_active(MARKET),
        lambda: store.progress.record("t", MARKET, 0, 1, None, None, "running"),
        lambda: store.knowledge.tasks(),
        lambda: store.alerts.claim_due(NOW, 30),
        lambda: store.islands.epoch("ga:task", 1),
        lambda: store.quote_gaps.find(MARKET),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailableError, match="connection refused") as info:
            call()
        assert info.value.service == "state_store" and info.value.retryable
    store.unavailable = None
    assert store.configs.get_active(MARKET).params == {"rsi": 14}


@pytest.mark.postgres
def test_migrations_0009_and_0010_match_the_tables_and_go_down_alone(pg_settings):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from rof_pipelines.adapters.state_store import build_metadata

    with StateStore(pg_settings.state_storage, pg_settings.system_setup.circuit_breaker) as real:
        real.upgrade()
        with real.engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "include_schemas": True,
                    "include_name": lambda name, type_, _: name == real.schema if type_ == "schema" else True,
                    "version_table_schema": real.schema,
                    "compare_type": True,
                },
            )
            assert compare_metadata(context, build_metadata(real.schema)) == []
        real.islands.save("ga:task", 0, 0, b"x")
        real.quote_gaps.record(
            MARKET, "1m", NOW, NOW + timedelta(hours=1), [(NOW, NOW + timedelta(minutes=5))], "download"
        )
        assert real.downgrade("0009") == "0009"
        assert real.islands.get("ga:task", 0, 0) is not None, "0010 goes down alone"
        assert real.downgrade("0008") == "0008"
        assert real.alerts.states() == [], "the tables before 0009 stay"
        assert real.upgrade() == "0010" and real.islands.epoch("ga:task", 0) == []
        assert real.quote_gaps.find() == [], "re-created empty"
