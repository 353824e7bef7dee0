"""The snapshot alert rules read, built from a real Dagster instance and a real state store: job
outcomes with their root-cause error, sensor ticks, promotions in the window, config refusal, this
process's breakers, figure types as documented, markets with their calendar, and the kinds that
become unknown when a source does not answer - then the ready-made run_failed rule on it."""

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    In,
    Nothing,
    OpExecutionContext,
    instance_for_test,
    job,
    op,
)
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteRepositoryOrigin
from dagster._core.scheduler.instigation import (
    TickStatus,
)

from rof_pipelines.adapters.alerts.snapshot import SnapshotSource
from rof_pipelines.adapters.breakers import breaker_for
from rof_pipelines.adapters.state_store import StateStore
from rof_pipelines.adapters.state_store.memory import InMemoryStateStore
from rof_pipelines.adapters.state_store.records import ArmRecord, ExperimentRecord
from rof_pipelines.core.alerts.builtin import builtin_spec
from rof_pipelines.core.alerts.engine import evaluate, transition
from rof_pipelines.core.alerts.expressions import compile_rule
from rof_pipelines.core.alerts.figures import FIGURES
from rof_pipelines.core.alerts.model import Snapshot
from rof_pipelines.core.market import Market
from rof_pipelines.partitions import market_day_key, market_day_partitions, markets_partitions
from rof_pipelines_tests.ops.instance_facts import sensor_state, tick

POOLS = ["task_worker", "ab_optimizer"]
TON, EUR = Market.parse("binance:TONUSDT"), Market.parse("oanda:EURUSD")
DAY = "2026-11-20"
REPOSITORY = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("rof"), "__repository__")


# --- tiny real jobs -------------------------------------------------------------------------------------


@op(config_schema={"fail": bool})
def maybe_fail(context: OpExecutionContext) -> None:
    if context.op_config["fail"]:
        raise RuntimeError("planted failure")


@op(ins={"start": In(Nothing)})
def after() -> None:
    """A second step, so the failure is a step's inside a multi-step run."""


@job(partitions_def=market_day_partitions, tags={"rof/pool": "task_worker"})
def market_job() -> None:
    after(start=maybe_fail())


@op
def fine() -> int:
    return 1


@job
def plain_job() -> None:
    fine()


def run_market_job(instance: DagsterInstance, market: Market, fail: bool) -> bool:
    result = market_job.execute_in_process(
        instance=instance,
        partition_key=str(market_day_key(market, DAY)),
        run_config={"ops": {"maybe_fail": {"config": {"fail": fail}}}},
        raise_on_error=False,
    )
    return result.success


# --- helpers ----------------------------------------------------------------------------------------


@pytest.fixture
def source(make_settings) -> SnapshotSource:
    settings = make_settings()
    return SnapshotSource(pools=lambda: POOLS, calendar_of=lambda m: settings.market_profile(m).calendar)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as planted:
        planted.add_dynamic_partitions(markets_partitions.name, [TON.key, EUR.key])
        yield planted


def _sensor(instance: DagsterInstance, name: str, status: TickStatus, failures: int = 0) -> float:
    return tick(instance, sensor_state(instance, name), status, time.time() - 5.0, failures)


def _experiment(store: Any, experiment_id: str, market: Market, promoted: bool) -> None:
    store.experiments.record(
        ExperimentRecord(
            experiment_id=experiment_id,
            market=market.key,
            label="rl_vs_ga",
            window_start=datetime(2026, 11, 19, tzinfo=UTC),
            window_end=datetime(2026, 11, 20, tzinfo=UTC),
            decision={"winner": "ga_champion"},
            winner="ga_champion",
            promoted=promoted,
            active_version=None,
            promoted_version=None,
            conflict=None,
            details={},
            arms=(ArmRecord("ga_champion", "challenger", {}, {"sharpe": 1.0}, {}),),
        )
    )
    time.sleep(0.02)  # created_at orders them


def _check_types(snapshot: Snapshot) -> None:
    """Every figure is documented for its kind and has its documented CEL type (ints are ints)."""
    python = {"int": int, "double": float, "bool": bool, "string": str}

    def check(kind: str, name: str, figure: Any) -> None:
        assert name in FIGURES[kind], (kind, name)
        cel_type = FIGURES[kind][name][0]
        assert type(figure) is python[cel_type], (kind, name, figure, cel_type)

    for name, figure in snapshot.globals.items():
        check("global", name, figure)
    for kind, entities in snapshot.entities.items():
        for figures in entities.values():
            for name, figure in figures.items():
                check(kind, name, figure)


class BrokenInstance:
    """An instance whose storage does not answer (a DAGSTER_HOME on a dead database)."""

    def __getattr__(self, name: str) -> Any:
        def fail(*_args: Any, **_kwargs: Any) -> Any:
            raise ConnectionError("run storage unreachable")

        return fail


# --- job outcomes and sensor ticks ----------------------------------------------------------------------


def test_job_outcomes_newest_run_per_job_and_market_with_the_root_cause(source, instance):
    assert run_market_job(instance, TON, fail=False)
    assert not run_market_job(instance, TON, fail=True)
    assert not run_market_job(instance, TON, fail=True)
    assert not run_market_job(instance, EUR, fail=True)
    assert run_market_job(instance, EUR, fail=False)  # the newest run of EUR succeeded
    assert plain_job.execute_in_process(instance=instance).success

    snapshot = source.snapshot(instance, InMemoryStateStore())
    jobs = snapshot.entities["job"]
    assert set(jobs) == {f"market_job|{TON.key}", f"market_job|{EUR.key}", "plain_job"}
    ton = jobs[f"market_job|{TON.key}"]
    assert ton["last_status"] == "FAILURE"
    assert ton["failures_in_a_row"] == 2
    assert ton["market"] == TON.key and ton["pool"] == "task_worker" and ton["job"] == "market_job"
    assert ton["last_error"] == "RuntimeError: planted failure"  # the root cause, not Dagster's wrapper
    newest_ton = instance.get_runs(limit=10)
    failed_ton = next(r for r in newest_ton if r.tags.get("dagster/partition", "").endswith(TON.key))
    assert ton["last_run_id"] == failed_ton.run_id
    assert ton["last_finished_seconds"] <= time.time()
    eur = jobs[f"market_job|{EUR.key}"]
    assert (eur["last_status"], eur["failures_in_a_row"], eur["last_error"]) == ("SUCCESS", 0, "")
    plain = jobs["plain_job"]
    assert (plain["market"], plain["pool"], plain["last_status"]) == ("", "none", "SUCCESS")
    assert snapshot.labels["job"][f"market_job|{TON.key}"] == {
        "job": "market_job",
        "pool": "task_worker",
        "market": TON.key,
    }
    assert snapshot.labels["job"]["plain_job"] == {"job": "plain_job", "pool": "none"}
    assert not snapshot.unknown
    _check_types(snapshot)


def test_sensor_ticks_status_error_and_failures_in_a_row(source, instance):
    at = _sensor(instance, "broken_sensor", TickStatus.FAILURE, failures=3)
    _sensor(instance, "good_sensor", TickStatus.SKIPPED)
    snapshot = source.snapshot(instance, InMemoryStateStore())
    sensors = snapshot.entities["sensor"]
    broken = sensors["broken_sensor"]
    assert broken["last_tick_status"] == "FAILURE"
    assert broken["last_error"] == "ConnectionError: planted sensor failure"
    assert broken["workerpool_sensor_consecutive_failures"] == 3
    assert broken["last_tick_seconds"] == pytest.approx(at)
    good = sensors["good_sensor"]
    assert (good["last_tick_status"], good["last_error"], good["workerpool_sensor_consecutive_failures"]) == (
        "SKIPPED",
        "",
        0,
    )
    assert snapshot.labels["sensor"]["broken_sensor"] == {"sensor": "broken_sensor"}
    _check_types(snapshot)


# --- the state store's kinds ------------------------------------------------------------------------


def test_promotions_within_the_window_only(source, instance):
    store = InMemoryStateStore()
    _experiment(store, "old", TON, promoted=True)
    _experiment(store, "new", EUR, promoted=True)
    _experiment(store, "not-promoted", TON, promoted=False)
    created = {r.experiment_id: r.created_at for r in store.experiments.recent()}
    now = datetime.now(UTC)
    window = now - (created["old"] + (created["new"] - created["old"]) / 2)

    snapshot = source.snapshot(instance, store, promotion_window=window, now=now)
    promotions = snapshot.entities["promotion"]
    assert set(promotions) == {"new"}
    new = promotions["new"]
    assert (new["market"], new["winner"], new["experiment_id"]) == (EUR.key, "ga_champion", "new")
    assert new["promoted_seconds"] == pytest.approx(created["new"].timestamp())
    assert new["age_seconds"] == pytest.approx((now - created["new"]).total_seconds())
    assert snapshot.labels["promotion"]["new"] == {"market": EUR.key, "experiment_id": "new"}

    wide = source.snapshot(instance, store, promotion_window=timedelta(days=1))
    assert set(wide.entities["promotion"]) == {"old", "new"}
    _check_types(wide)


@pytest.mark.postgres
def test_config_refusal_from_config_versions(source, instance, pg_settings):
    from rof_pipelines.adapters.config_versions import ReloadOutcome, record_version

    with StateStore(pg_settings.state_storage, pg_settings.system_setup.circuit_breaker) as store:
        store.upgrade()
        assert source.snapshot(instance, store).globals["config_refused"] is False  # no version yet

        record_version(store, ReloadOutcome("a" * 64, "applied", ["alerting"]), Path("config.yaml"))
        error = "alerting.custom.x.expr: unknown figure nope (line 1, column 1)"
        record_version(store, ReloadOutcome("b" * 64, "refused", [], error), Path("config.yaml"))
        refused = source.snapshot(instance, store)
        assert refused.globals["config_refused"] is True
        assert refused.globals["config_refused_error"] == error
        assert refused.globals["state_store_up"] == 1.0
        _check_types(refused)

        record_version(store, ReloadOutcome("c" * 64, "applied", ["alerting"]), Path("config.yaml"))
        fixed = source.snapshot(instance, store)
        assert (fixed.globals["config_refused"], fixed.globals["config_refused_error"]) == (False, "")


def test_the_in_memory_store_has_no_config_versions(source, instance):
    snapshot = source.snapshot(instance, InMemoryStateStore())
    assert (snapshot.globals["config_refused"], snapshot.globals["config_refused_error"]) == (False, "")


def test_markets_carry_their_calendar_and_both_sources_figures(source, instance):
    stale = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    for market in (TON, EUR):
        instance.report_runless_asset_event(
            AssetMaterialization(
                asset_key="quote_snapshots",
                partition=str(market_day_key(market, DAY)),
                metadata={"dagster/row_count": 1440, "last_ts": stale},
            )
        )
    store = InMemoryStateStore()
    store.progress.record("ga:ton", TON.key, 4, 10, 1.25, 30.0, "running", details={"best_sharpe": 1.25})

    snapshot = source.snapshot(instance, store)
    markets = snapshot.entities["market"]
    assert set(markets) == {TON.key, EUR.key}
    ton, eur = markets[TON.key], markets[EUR.key]
    assert (ton["calendar"], ton["exchange"], ton["market"]) == ("24/7", "binance", TON.key)
    assert (eur["calendar"], eur["exchange"]) == ("FX", "oanda")
    assert ton["ga_best_fitness"] == 1.25  # from the state store
    assert 7100 < ton["data_manager_freshness_seconds"] < 7400  # from the instance
    assert ton["data_manager_stale_open_seconds"] == pytest.approx(
        ton["data_manager_freshness_seconds"], abs=1
    )
    assert "ga_best_fitness" not in eur
    assert ton["last_quote_timestamp_seconds"] == pytest.approx(datetime.fromisoformat(stale).timestamp())
    assert snapshot.labels["market"][TON.key] == {"market": TON.key}
    _check_types(snapshot)


def test_markets_known_counts_the_markets_partitions(source, instance):
    instance.add_dynamic_partitions(markets_partitions.name, ["binance:BTCUSDT"])  # nothing materialised
    snapshot = source.snapshot(instance, InMemoryStateStore())
    assert snapshot.entities["market"] == {}
    assert snapshot.globals["markets_known"] == 3
    assert "markets_known" not in source.snapshot(BrokenInstance(), InMemoryStateStore()).globals


def test_a_snapshot_taken_at_a_moment_measures_ages_then(source, instance):
    """The weekend case through the snapshot: an FX market quiet since Friday's close is not stale on
    Sunday by its calendar, a crypto market is."""
    friday_close = datetime(2026, 7, 10, 21, tzinfo=UTC)  # 17:00 New York (EDT)
    sunday_noon = datetime(2026, 7, 12, 12, tzinfo=UTC)
    for market in (TON, EUR):
        instance.report_runless_asset_event(
            AssetMaterialization(
                asset_key="quote_snapshots",
                partition=str(market_day_key(market, "2026-07-10")),
                metadata={"last_ts": friday_close.isoformat()},
            )
        )
    snapshot = source.snapshot(instance, InMemoryStateStore(), now=sunday_noon)
    weekend = (sunday_noon - friday_close).total_seconds()
    eur, ton = snapshot.entities["market"][EUR.key], snapshot.entities["market"][TON.key]
    assert eur["data_manager_freshness_seconds"] == pytest.approx(weekend)
    assert eur["data_manager_stale_open_seconds"] == pytest.approx(0.0, abs=1.0)
    assert ton["data_manager_stale_open_seconds"] == pytest.approx(weekend)
    assert eur["last_quote_timestamp_seconds"] == pytest.approx(friday_close.timestamp())
    assert snapshot.globals["now"] == sunday_noon.timestamp()

    rule = compile_rule(builtin_spec("stale_data", {"after_s": 7200.0}))
    active = {o.labels["market"]: o.active for o in evaluate([rule], snapshot).observations}
    assert active == {EUR.key: False, TON.key: True}


def test_pools_and_daemons_from_the_instance(make_settings, instance):
    from dagster._daemon.types import DaemonHeartbeat

    settings = make_settings()
    source = SnapshotSource(
        pools=lambda: POOLS,
        calendar_of=lambda m: settings.market_profile(m).calendar,
        max_workers=lambda pool: getattr(settings.system_setup.worker_pool, pool).max_workers,
    )
    instance.add_daemon_heartbeat(DaemonHeartbeat(time.time() - 30.0, "SENSOR", "d-1", None))
    assert not run_market_job(instance, TON, fail=True)
    assert not run_market_job(instance, EUR, fail=True)
    assert plain_job.execute_in_process(instance=instance).success
    snapshot = source.snapshot(instance, InMemoryStateStore())
    pools = snapshot.entities["pool"]
    assert set(pools) == {*POOLS, "none"}
    task_worker = pools["task_worker"]
    assert task_worker["workerpool_oldest_queued_seconds"] == 0.0
    assert task_worker["pool"] == "task_worker"
    assert task_worker["max_workers"] == settings.system_setup.worker_pool.task_worker.max_workers
    assert task_worker["runs_failed_recent"] == 2.0  # both failures, whatever their market
    assert (pools["none"]["max_workers"], pools["none"]["runs_failed_recent"]) == (0.0, 0.0)
    assert pools["ab_optimizer"]["runs_failed_recent"] == 0.0
    message = evaluate(
        [compile_rule(builtin_spec("run_queue_waiting", {"longer_than_s": -1.0}))], snapshot
    ).observations
    assert all("max_workers ?" not in o.summary for o in message), [o.summary for o in message]
    assert 29 < snapshot.entities["daemon"]["SENSOR"]["workerpool_daemon_heartbeat_age_seconds"] < 60
    assert snapshot.labels["daemon"]["SENSOR"] == {"daemon": "SENSOR"}
    _check_types(snapshot)


# --- this process's breakers ------------------------------------------------------------------------


def test_this_process_breakers(source, instance):
    breaker_for("rabbitmq").open()
    breaker_for("clickhouse")  # known, closed
    snapshot = source.snapshot(instance, InMemoryStateStore())
    services = snapshot.entities["service"]
    rabbit = services["rabbitmq@sensor"]
    assert (rabbit["state"], rabbit["service"], rabbit["process"]) == ("open", "rabbitmq", "sensor")
    assert rabbit["open_seconds"] >= 0.0
    assert services["clickhouse@sensor"]["state"] == "closed"
    assert services["clickhouse@sensor"]["open_seconds"] == 0.0
    assert snapshot.labels["service"]["rabbitmq@sensor"] == {"service": "rabbitmq", "process": "sensor"}
    _check_types(snapshot)


# --- sources that do not answer -------------------------------------------------------------------------


def test_a_store_that_is_down_makes_its_kinds_unknown(source, instance):
    assert not run_market_job(instance, TON, fail=True)
    store = InMemoryStateStore()
    store.unavailable = "down"
    snapshot = source.snapshot(instance, store)
    assert snapshot.unknown == {"promotion", "market"}
    assert snapshot.globals["state_store_up"] == 0.0
    assert snapshot.globals["instance_up"] == 1.0
    # the instance's kinds are still decided
    assert snapshot.entities["job"][f"market_job|{TON.key}"]["last_status"] == "FAILURE"
    assert set(snapshot.entities["pool"]) == {*POOLS, "none"}
    _check_types(snapshot)


def test_an_instance_that_fails_makes_its_kinds_unknown(source):
    store = InMemoryStateStore()
    _experiment(store, "new", EUR, promoted=True)
    snapshot = source.snapshot(BrokenInstance(), store)
    assert snapshot.unknown == {"job", "sensor", "pool", "daemon", "market"}
    assert snapshot.globals["instance_up"] == 0.0
    assert snapshot.entities["job"] == {} and snapshot.entities["pool"] == {}
    # the store's kinds are still decided
    assert snapshot.globals["state_store_up"] == 1.0
    assert set(snapshot.entities["promotion"]) == {"new"}
    assert "promotion" not in snapshot.unknown


def test_a_source_that_answers_again_is_decided_again(source, instance):
    """The collector inside the source keeps no broken state: the next tick's instance is read."""
    assert source.snapshot(BrokenInstance(), InMemoryStateStore()).unknown
    assert not source.snapshot(instance, InMemoryStateStore()).unknown


# --- end to end through the engine ----------------------------------------------------------------------


def test_run_failed_fires_for_the_failed_job_only(source, instance):
    assert not run_market_job(instance, TON, fail=True)
    assert run_market_job(instance, EUR, fail=False)
    assert plain_job.execute_in_process(instance=instance).success
    snapshot = source.snapshot(instance, InMemoryStateStore())

    spec = builtin_spec("run_failed", {})
    evaluation = evaluate([compile_rule(spec)], snapshot)
    assert not evaluation.errors and not evaluation.undecided_rules
    active = {obs.labels.get("market", obs.labels["job"]): obs.active for obs in evaluation.observations}
    assert active == {TON.key: True, EUR.key: False, "plain_job": False}

    moved = transition({}, evaluation, {spec.name: spec}, snapshot.taken_at)
    assert [(s.labels.get("market"), s.status) for s in moved.changed] == [(TON.key, "firing")]
    [notice] = moved.notices
    assert notice.event == "firing" and notice.labels["market"] == TON.key
    assert "RuntimeError: planted failure" in notice.summary
    assert f"market '{TON.key}'" in notice.summary and "pool task_worker" in notice.summary


def test_run_failed_is_undecided_while_the_instance_is_down(source):
    spec = builtin_spec("run_failed", {})
    snapshot = source.snapshot(BrokenInstance(), InMemoryStateStore())
    evaluation = evaluate([compile_rule(spec)], snapshot)
    assert evaluation.undecided_rules == {"run_failed"} and evaluation.observations == []


def test_an_instance_without_schedule_storage_has_no_sensors_but_is_decided(source):
    """DagsterInstance.ephemeral() (the bench's) has no schedule storage: no sensor, nothing unknown."""
    ephemeral = DagsterInstance.ephemeral()
    try:
        assert plain_job.execute_in_process(instance=ephemeral).success
        snapshot = source.snapshot(ephemeral, InMemoryStateStore())
    finally:
        ephemeral.dispose()
    assert snapshot.unknown == frozenset()
    assert snapshot.globals["instance_up"] == 1.0
    assert snapshot.entities["sensor"] == {}
    assert snapshot.entities["job"]["plain_job"]["last_status"] == "SUCCESS"
