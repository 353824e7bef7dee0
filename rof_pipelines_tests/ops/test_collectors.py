"""The scrape-time collectors: runs per pool and status from a real Dagster instance (with the oldest
queued run per pool, daemon heartbeats and failing sensor ticks), the newest materialisation per
market with calendar-aware staleness, GA progress, champions and A/B drawdowns from the state store
(the in-memory twin and a real PostgreSQL), the alert outbox, and sources that are down."""

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetMaterialization,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    instance_for_test,
)
from dagster._core.remote_origin import RemoteJobOrigin
from dagster._core.scheduler.instigation import (
    TickStatus,
)
from dagster._core.test_utils import create_run_for_test
from dagster._daemon.types import DaemonHeartbeat

from rof_pipelines.adapters import metrics
from rof_pipelines.adapters.state_store import StateStore
from rof_pipelines.adapters.state_store.memory import InMemoryStateStore
from rof_pipelines.adapters.state_store.records import ArmRecord, ExperimentRecord
from rof_pipelines.core.alerts.model import AlertState, Delivery, Notice, delivery_id, fingerprint, notice_id
from rof_pipelines.core.market import Market
from rof_pipelines.ops.collectors import InstanceCollector, StateStoreCollector, collectors
from rof_pipelines.partitions import market_day_key, markets_partitions
from rof_pipelines_tests.ops.instance_facts import REPOSITORY, sensor_state, tick

POOLS = ["task_worker", "ab_optimizer"]
TON, EUR = Market.parse("binance:TONUSDT"), Market.parse("oanda:EURUSD")


def samples(collector) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list] = {}
    for family in collector.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert name in metrics.FAMILIES, name
        spec = metrics.FAMILIES[name]
        assert family.type == spec.type, name
        rows = out.setdefault(name, [])
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            assert tuple(sample.labels) == spec.labels, (name, sample.labels)
            rows.append((sample.labels, sample.value))
    return out


def value(found, name: str, **labels: str) -> float:
    matches = [v for got, v in found[name] if all(got.get(k) == x for k, x in labels.items())]
    assert len(matches) == 1, (name, labels, found.get(name))
    return matches[0]


ORIGIN = RemoteJobOrigin(REPOSITORY, "j")


def queued_run(instance, pool: str | None) -> None:
    tags = {"rof/pool": pool} if pool else {}
    create_run_for_test(
        instance, job_name="j", tags=tags, status=DagsterRunStatus.QUEUED, remote_job_origin=ORIGIN
    )


def finished_run(instance, pool: str, status: DagsterEventType, pause: float = 0.05) -> None:
    run = create_run_for_test(
        instance, job_name="j", tags={"rof/pool": pool}, status=DagsterRunStatus.NOT_STARTED
    )
    for event in (DagsterEventType.RUN_STARTING, DagsterEventType.RUN_START, status):
        instance.report_dagster_event(DagsterEvent(event_type_value=event.value, job_name="j"), run.run_id)
        time.sleep(pause)


def materialised(instance, asset: str, market: Market, day: str, **metadata) -> None:
    key = market_day_key(market, datetime.fromisoformat(day).date())
    instance.report_runless_asset_event(
        AssetMaterialization(asset_key=asset, partition=str(key), metadata=metadata)
    )


def test_runs_per_pool_and_status_and_wait_times():
    with instance_for_test() as instance:
        for _ in range(2):
            queued_run(instance, "ab_optimizer")
        create_run_for_test(
            instance, job_name="j", tags={"rof/pool": "task_worker"}, status=DagsterRunStatus.STARTED
        )
        queued_run(instance, None)  # no pool tag
        finished_run(instance, "ab_optimizer", DagsterEventType.RUN_SUCCESS)
        finished_run(instance, "ab_optimizer", DagsterEventType.RUN_FAILURE)
        finished_run(instance, "task_worker", DagsterEventType.RUN_SUCCESS)

        found = samples(InstanceCollector(instance, lambda: POOLS))
        assert value(found, "workerpool_instance_up") == 1
        assert value(found, "workerpool_runs_queued", pool="ab_optimizer") == 2
        assert value(found, "workerpool_runs_queued", pool="task_worker") == 0
        assert value(found, "workerpool_runs_queued", pool="none") == 1
        assert value(found, "workerpool_runs_in_progress", pool="task_worker") == 1
        assert value(found, "workerpool_runs_finished_total", pool="ab_optimizer", status="success") == 1
        assert value(found, "workerpool_runs_finished_total", pool="ab_optimizer", status="failure") == 1
        assert value(found, "workerpool_runs_finished_total", pool="task_worker", status="success") == 1
        assert {q for labels, _ in found["workerpool_run_seconds"] for q in [labels["quantile"]]} == {
            "0.5",
            "0.9",
            "1",
        }
        assert 0.04 < value(found, "workerpool_run_seconds", pool="ab_optimizer", quantile="1") < 5
        assert value(found, "workerpool_run_wait_seconds", pool="ab_optimizer", quantile="0.5") >= 0


def test_the_newest_materialisation_of_each_market():
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(markets_partitions.name, [TON.key, EUR.key])
        now = datetime.now(UTC)
        stale = (now - timedelta(hours=2)).isoformat()
        q_table = {
            "episodes": 3,
            "final_episode_reward": 1.5,
            "state_coverage": 0.25,
            "test/n_trades": 4.0,
            "test/kelly_fraction": 0.1,
        }
        materialised(instance, "q_table", TON, "2026-11-19", **{**q_table, "episodes": 1})
        materialised(instance, "q_table", TON, "2026-11-20", **q_table)
        materialised(
            instance, "quote_snapshots", TON, "2026-11-20", **{"dagster/row_count": 1440, "last_ts": stale}
        )
        materialised(instance, "indicator_frame", EUR, "2026-11-20", **{"dagster/row_count": 288})
        materialised(instance, "ga_population", TON, "2026-11-20", trials=40)

        collector = InstanceCollector(instance, lambda: POOLS)
        found = samples(collector)
        assert value(found, "rl_agent_episodes", market=TON.key) == 3  # the newest day's, not the older
        assert value(found, "rl_agent_episode_reward", market=TON.key) == 1.5
        assert value(found, "rl_agent_state_coverage", market=TON.key) == 0.25
        assert value(found, "rl_agent_trades", market=TON.key) == 4
        assert value(found, "rl_agent_kelly_fraction", market=TON.key) == 0.1
        assert value(found, "rl_agent_trained_timestamp_seconds", market=TON.key) > now.timestamp() - 60
        assert value(found, "ga_trials", market=TON.key) == 40
        assert value(found, "data_manager_rows_loaded", market=TON.key) == 1440
        assert value(found, "data_manager_bars_loaded", market=EUR.key) == 288
        assert 7100 < value(found, "data_manager_freshness_seconds", market=TON.key) < 7400

        # later scrapes read only what was stored since (the cursor), and see it
        materialised(instance, "q_table", TON, "2026-11-21", **{**q_table, "episodes": 7})
        assert value(samples(collector), "rl_agent_episodes", market=TON.key) == 7


def _progress(store, market: str, task: str, generation: int, status: str, **details) -> None:
    store.progress.record(
        task,
        market,
        generation,
        10,
        1.2,
        30.0,
        status,
        details={
            "best_sharpe": 1.2,
            "mean_sharpe": 0.4,
            "evaluations": 90,
            "cache_hits": 10,
            "evaluations_per_second": 45.0,
            **details,
        },
    )


def _check_ga(found) -> None:
    assert value(found, "ga_state_store_up") == 1
    assert value(found, "ga_generation", market=TON.key) == 4  # the newest task of the market
    assert value(found, "ga_generations_planned", market=TON.key) == 10
    assert value(found, "ga_progress_ratio", market=TON.key) == 0.4
    assert value(found, "ga_eta_seconds", market=TON.key) == 30
    assert value(found, "ga_best_fitness", market=TON.key) == 1.2
    assert value(found, "ga_mean_fitness", market=TON.key) == 0.4
    assert value(found, "ga_evaluations_per_second", market=TON.key) == 45
    assert value(found, "ga_cache_hit_ratio", market=TON.key) == pytest.approx(0.1)
    assert value(found, "ga_progress_ratio", market=EUR.key) == 1  # completed
    assert [labels for labels, _ in found["ga_eta_seconds"]] == [{"market": TON.key}]  # running ones only
    assert value(found, "ga_optimisations", status="running") == 1
    assert value(found, "ga_optimisations", status="completed") == 2
    assert value(found, "ga_progress_timestamp_seconds", market=TON.key) > time.time() - 60


def _fill(store) -> None:
    _progress(store, TON.key, "ga:old", 10, "completed")
    time.sleep(0.01)
    _progress(store, TON.key, "ga:new", 4, "running")
    _progress(store, EUR.key, "ga:eur", 10, "completed")


def test_ga_progress_from_the_in_memory_store():
    store = InMemoryStateStore()
    _fill(store)
    found = samples(StateStoreCollector(store))
    _check_ga(found)
    assert value(found, "data_manager_config_versions", status="refused") == 0  # no such table here


def test_ga_progress_and_config_refusals_from_postgresql(make_settings, pg_database):
    from rof_pipelines.adapters.config_versions import ReloadOutcome, record_version

    db = {k: pg_database[k] for k in ("db_host", "db_user", "db_name")} | {"db_password": ""}
    settings = make_settings({"state_storage": db})
    with StateStore(settings.state_storage) as store:
        store.upgrade()
        _fill(store)
        for n, status in enumerate(("applied", "refused", "refused", "applied", "refused")):
            error = None if status == "applied" else "bad key"
            record_version(store, ReloadOutcome(f"{n:064d}", status, [], error), Path("config.yaml"))
        found = samples(StateStoreCollector(store))
    _check_ga(found)
    assert value(found, "data_manager_config_versions", status="refused") == 3
    assert value(found, "data_manager_config_versions", status="applied") == 2
    assert found["alerts_fired_total"] == []  # alerts_* come from the outbox, not from config_versions


def test_a_store_that_is_down_yields_its_up_gauge_and_never_raises():
    store = InMemoryStateStore()
    store.unavailable = "stopped for the test"
    found = samples(StateStoreCollector(store))
    assert found == {"ga_state_store_up": [({}, 0.0)]}


def test_an_instance_that_fails_yields_its_up_gauge():
    def broken():
        raise RuntimeError("no DAGSTER_HOME")

    found = samples(InstanceCollector(broken, lambda: POOLS))
    assert found == {"workerpool_instance_up": [({}, 0.0)]}


def test_collectors_for_the_ops_app_take_settings_lazily(make_settings):
    with instance_for_test() as instance:
        settings = make_settings()
        built = collectors(lambda: settings, instance=instance, store=InMemoryStateStore())
        registry = metrics.new_registry(built)
        text = metrics.render(registry)[0].decode()
    assert 'workerpool_runs_queued{pool="ab_optimizer"} 0.0' in text
    assert "ga_state_store_up 1.0" in text
    assert "circuit_breaker_state" in text  # this process's own, labelled process="ops" when recorded


# --- the store under test: the in-memory twin and a real PostgreSQL -------------------------------------


@pytest.fixture(params=["memory", "postgres"])
def any_store(request) -> Iterator[Any]:
    """Each state-store figure is checked on both implementations: the collector has a path for each."""
    if request.param == "memory":
        yield InMemoryStateStore()
        return
    settings = request.getfixturevalue("pg_settings")
    with StateStore(settings.state_storage, settings.system_setup.circuit_breaker) as store:
        store.upgrade()
        yield store


# --- the alert outbox -----------------------------------------------------------------------------------

T0 = datetime(2026, 12, 2, 12, tzinfo=UTC)


def _state(rule: str, labels: dict[str, str], severity: str, status: str) -> AlertState:
    return AlertState(
        rule=rule,
        fingerprint=fingerprint(rule, labels),
        labels=labels,
        severity=severity,
        status=status,
        active_since=T0,
        fired_at=T0 if status != "pending" else None,
        resolved_at=T0 + timedelta(minutes=5) if status == "resolved" else None,
    )


def _delivery(state: AlertState, event: str, channel: str, created: datetime) -> Delivery:
    nid = notice_id(state.fingerprint, event, T0)
    notice = Notice(nid, event, state.rule, state.fingerprint, state.labels, state.severity, "s", created)
    return Delivery(delivery_id(nid, channel), notice, channel, "pending", 0, created, created)


def _plant_outbox(store: Any) -> None:
    """Two ga_stalled alerts firing (one to webhook and email, one to webhook), a stale_data alert that
    fired and resolved, and a run_failed alert still pending (no notice yet); then deliveries sent,
    retried and given up."""
    ton = _state("ga_stalled", {"market": TON.key}, "critical", "firing")
    eur = _state("ga_stalled", {"market": EUR.key}, "critical", "firing")
    stale = _state("stale_data", {"market": EUR.key}, "warning", "resolved")
    waiting = _state("run_failed", {"job": "j"}, "critical", "pending")
    ton_hook, ton_mail = _delivery(ton, "firing", "webhook", T0), _delivery(ton, "firing", "email", T0)
    eur_hook = _delivery(eur, "firing", "webhook", T0 + timedelta(seconds=1))
    stale_fired = _delivery(stale, "firing", "webhook", T0 + timedelta(seconds=2))
    stale_resolved = _delivery(stale, "resolved", "webhook", T0 + timedelta(minutes=5))
    planted = [ton_hook, ton_mail, eur_hook, stale_fired, stale_resolved]
    assert store.alerts.apply([ton, eur, stale, waiting], planted) == 5

    first = T0 + timedelta(minutes=6)
    claimed = {d.delivery_id for d in store.alerts.claim_due(first, lease_s=30)}
    assert claimed == {d.delivery_id for d in planted}
    assert store.alerts.mark_sent(ton_hook.delivery_id, "200 OK", first)
    assert store.alerts.mark_failed(ton_mail.delivery_id, "refused", first, first + timedelta(hours=1))
    assert store.alerts.mark_failed(eur_hook.delivery_id, "503", first, first)
    assert store.alerts.mark_sent(stale_fired.delivery_id, "200 OK", first)
    # stale_resolved stays claimed (pending, under its lease); eur_hook is due again, fails for good
    again = first + timedelta(seconds=1)
    assert [d.delivery_id for d in store.alerts.claim_due(again, lease_s=30)] == [eur_hook.delivery_id]
    assert store.alerts.mark_failed(eur_hook.delivery_id, "503", again, None)


def test_the_alert_outbox_as_families(any_store):
    _plant_outbox(any_store)
    found = samples(StateStoreCollector(any_store))
    stalled, stale = "ga_stalled", "stale_data"
    assert sorted(found["alerts_fired_total"], key=str) == sorted(
        [
            ({"rule": stalled, "channel": "email"}, 1.0),
            ({"rule": stalled, "channel": "webhook"}, 2.0),  # one per alert and channel, whatever befell it
            ({"rule": stale, "channel": "webhook"}, 1.0),
        ],
        key=str,
    )
    assert found["alerts_resolved_total"] == [({"rule": stale, "channel": "webhook"}, 1.0)]
    # the sum of failed attempts: the e-mail once (to be retried), the EUR webhook twice (given up)
    assert value(found, "alerts_deliveries_failed_total", rule=stalled, channel="email") == 1
    assert value(found, "alerts_deliveries_failed_total", rule=stalled, channel="webhook") == 2
    assert value(found, "alerts_deliveries_failed_total", rule=stale, channel="webhook") == 0
    # firing now: the two ga_stalled alerts; not the resolved one nor the one still pending
    assert found["alerts_firing"] == [({"rule": stalled, "severity": "critical"}, 2.0)]
    # waiting: the e-mail retry and the resolved notice under its lease; not the sent nor the dead
    assert sorted(found["alerts_deliveries_pending"], key=str) == [
        ({"channel": "email"}, 1.0),
        ({"channel": "webhook"}, 1.0),
    ]


def test_an_empty_outbox_yields_empty_alert_families(any_store):
    found = samples(StateStoreCollector(any_store))
    for name in (
        "alerts_fired_total",
        "alerts_resolved_total",
        "alerts_deliveries_failed_total",
        "alerts_firing",
        "alerts_deliveries_pending",
    ):
        assert found[name] == [], name


# --- champions and the drawdown of the config in force --------------------------------------------------


def _completed(store: Any, task: str, market: str, best: float | None, status: str = "completed") -> None:
    store.progress.record(task, market, 10, 10, best, None, status)
    time.sleep(0.01)  # updated_at orders them


def _experiment(store: Any, experiment_id: str, market: str, *arms: ArmRecord, promoted=False) -> None:
    store.experiments.record(
        ExperimentRecord(
            experiment_id=experiment_id,
            market=market,
            label="rl_vs_ga",
            window_start=T0 - timedelta(days=1),
            window_end=T0,
            decision={"winner": "ga_champion"},
            winner="ga_champion",
            promoted=promoted,
            active_version=None,
            promoted_version=None,
            conflict=None,
            details={},
            arms=arms,
        )
    )
    time.sleep(0.01)  # created_at orders them


def _arm(name: str, role: str, **arm_metrics: float) -> ArmRecord:
    return ArmRecord(name, role, {}, {"sharpe": 0.5, **arm_metrics}, {})


BTC = Market.parse("binance:BTCUSDT")


def test_champions_and_the_active_drawdown(any_store):
    store = any_store
    _completed(store, "ga:ton-1", TON.key, 1.0)
    _completed(store, "ga:ton-2", TON.key, 0.6)  # the newest completed: the champion now
    _completed(store, "ga:ton-3", TON.key, 2.0, status="running")  # not completed: no champion yet
    _completed(store, "ga:eur-1", EUR.key, 0.9)
    _completed(store, "ga:btc-1", BTC.key, None)  # completed without a fitness: nothing to compare
    _experiment(store, "ton-old", TON.key, _arm("a", "active", max_drawdown=0.1))
    _experiment(
        store,
        "ton-new",
        TON.key,
        _arm("a", "active", max_drawdown=0.3),
        _arm("c", "challenger", max_drawdown=0.05),
    )
    _experiment(store, "eur-old", EUR.key, _arm("a", "active", max_drawdown=0.2))
    _experiment(store, "eur-new", EUR.key, _arm("a", "active"))  # the newest window carries none
    _experiment(store, "btc", BTC.key, _arm("a", "active"), _arm("c", "challenger", max_drawdown=0.5))

    found = samples(StateStoreCollector(store))
    assert value(found, "ga_champion_fitness", market=TON.key) == pytest.approx(0.6)
    assert value(found, "ga_previous_champion_fitness", market=TON.key) == pytest.approx(1.0)
    assert value(found, "ga_champion_fitness", market=EUR.key) == pytest.approx(0.9)
    assert [labels for labels, _ in found["ga_previous_champion_fitness"]] == [{"market": TON.key}]
    assert {labels["market"] for labels, _ in found["ga_champion_fitness"]} == {TON.key, EUR.key}
    # the newest experiment's active arm only: not an older window's, never a challenger's
    assert found["rl_agent_active_max_drawdown"] == [({"market": TON.key}, pytest.approx(0.3))]


def test_the_previous_champion_counts_completed_tasks_only(any_store):
    _completed(any_store, "ga:1", TON.key, 1.5)
    _completed(any_store, "ga:2", TON.key, 0.2, status="failed")
    _completed(any_store, "ga:3", TON.key, 1.1)
    found = samples(StateStoreCollector(any_store))
    assert value(found, "ga_champion_fitness", market=TON.key) == pytest.approx(1.1)
    assert value(found, "ga_previous_champion_fitness", market=TON.key) == pytest.approx(1.5)


# --- the instance's new figures -------------------------------------------------------------------------


def test_oldest_queued_run_per_pool_including_untagged():
    with instance_for_test() as instance:
        queued_run(instance, "ab_optimizer")
        time.sleep(0.3)
        queued_run(instance, "ab_optimizer")
        queued_run(instance, None)
        create_run_for_test(
            instance, job_name="j", tags={"rof/pool": "task_worker"}, status=DagsterRunStatus.STARTED
        )
        at = time.time() + 100.0
        found = samples(InstanceCollector(instance, lambda: POOLS, clock=lambda: at))
        oldest_ab = value(found, "workerpool_oldest_queued_seconds", pool="ab_optimizer")
        untagged = value(found, "workerpool_oldest_queued_seconds", pool="none")
        assert 100.0 <= untagged < 105.0
        assert oldest_ab >= untagged + 0.25  # the older of the two ab_optimizer runs counts
        assert value(found, "workerpool_oldest_queued_seconds", pool="task_worker") == 0  # running only


def test_daemon_heartbeat_age_and_sensor_failures_in_a_row():
    with instance_for_test() as instance:
        now = time.time()
        instance.add_daemon_heartbeat(DaemonHeartbeat(now - 42.0, "SENSOR", "d-1", None))
        instance.add_daemon_heartbeat(DaemonHeartbeat(now - 5.0, "SCHEDULER", "d-1", None))
        broken, recovered, quiet = (sensor_state(instance, n) for n in ("broken", "recovered", "quiet"))
        tick(instance, broken, TickStatus.SUCCESS, now - 30)
        tick(instance, broken, TickStatus.FAILURE, now - 20, failures=1)
        tick(instance, broken, TickStatus.FAILURE, now - 10, failures=3)
        tick(instance, recovered, TickStatus.FAILURE, now - 20, failures=4)
        tick(instance, recovered, TickStatus.SKIPPED, now - 10)
        sensor_state(instance, "never_ticked")
        tick(instance, quiet, TickStatus.FAILURE, now - 10)  # a failed tick without a count is one

        found = samples(InstanceCollector(instance, lambda: POOLS, clock=lambda: now))
        assert value(found, "workerpool_daemon_heartbeat_age_seconds", daemon="SENSOR") == pytest.approx(42.0)
        assert value(found, "workerpool_daemon_heartbeat_age_seconds", daemon="SCHEDULER") == pytest.approx(
            5.0
        )
        assert value(found, "workerpool_sensor_consecutive_failures", sensor="broken") == 3
        assert value(found, "workerpool_sensor_consecutive_failures", sensor="recovered") == 0
        assert value(found, "workerpool_sensor_consecutive_failures", sensor="quiet") == 1
        assert "never_ticked" not in {
            labels["sensor"] for labels, _ in found["workerpool_sensor_consecutive_failures"]
        }


FRIDAY_CLOSE = datetime(2026, 7, 10, 21, tzinfo=UTC)  # 17:00 New York (EDT): the FX week ends
SUNDAY_NOON = datetime(2026, 7, 12, 12, tzinfo=UTC)  # FX reopens at 21:00 UTC


def test_stale_open_seconds_follow_the_market_calendar(make_settings):
    settings = make_settings()
    gbp = Market.parse("oanda:GBPUSD")
    assert settings.market_profile(EUR).calendar.name == "FX"
    assert settings.market_profile(TON).calendar.name == "24/7"
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(markets_partitions.name, [TON.key, EUR.key, gbp.key])
        for market, last in (
            (EUR, FRIDAY_CLOSE),
            (TON, FRIDAY_CLOSE),
            (gbp, FRIDAY_CLOSE - timedelta(hours=1)),
        ):
            materialised(instance, "quote_snapshots", market, "2026-07-10", last_ts=last.isoformat())
        collector = InstanceCollector(
            instance,
            lambda: POOLS,
            lambda market: settings.market_profile(market).calendar,
            clock=SUNDAY_NOON.timestamp,
        )
        found = samples(collector)
    weekend = (SUNDAY_NOON - FRIDAY_CLOSE).total_seconds()  # 39 hours
    assert value(found, "data_manager_freshness_seconds", market=EUR.key) == pytest.approx(weekend)
    assert value(found, "data_manager_stale_open_seconds", market=EUR.key) == pytest.approx(0.0, abs=1.0)
    # the hour before the close was open market; the weekend after it is not
    assert value(found, "data_manager_stale_open_seconds", market=gbp.key) == pytest.approx(3600.0, abs=1.0)
    # crypto trades through the weekend: every second since the quote is an open one
    ton_fresh = value(found, "data_manager_freshness_seconds", market=TON.key)
    assert ton_fresh == pytest.approx(weekend)
    assert value(found, "data_manager_stale_open_seconds", market=TON.key) == pytest.approx(ton_fresh)


def test_no_stale_open_figure_without_a_calendar_or_a_quote_time():
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(markets_partitions.name, [TON.key, EUR.key])
        materialised(instance, "quote_snapshots", TON, "2026-07-10", last_ts=FRIDAY_CLOSE.isoformat())
        materialised(instance, "quote_snapshots", EUR, "2026-07-10", last_ts="not a time")
        without = samples(InstanceCollector(instance, lambda: POOLS))
        assert without["data_manager_stale_open_seconds"] == []  # no calendar_of: no figure
        assert [labels for labels, _ in without["data_manager_freshness_seconds"]] == [{"market": TON.key}]

        def unknown_calendar(market: str):
            raise KeyError(market)

        broken = samples(InstanceCollector(instance, lambda: POOLS, unknown_calendar))
        assert broken["data_manager_stale_open_seconds"] == []  # no figure rather than a wrong one
        assert value(broken, "workerpool_instance_up") == 1


def test_an_instance_without_schedule_storage_keeps_its_other_families():
    """DagsterInstance.ephemeral() has no schedule storage: no sensor figure, but the runs still count."""
    instance = DagsterInstance.ephemeral()
    try:
        queued_run(instance, "ab_optimizer")
        found = samples(InstanceCollector(instance, lambda: POOLS))
    finally:
        instance.dispose()
    assert value(found, "workerpool_instance_up") == 1
    assert value(found, "workerpool_runs_queued", pool="ab_optimizer") == 1
    assert found["workerpool_sensor_consecutive_failures"] == []
