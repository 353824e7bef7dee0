"""The scrape-time collectors: runs per pool and status from a real Dagster instance, the newest
materialisation per market, GA progress from worker_progress (the in-memory twin and a real
PostgreSQL), config refusals as alerts, and a state store that is down."""

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import AssetMaterialization, DagsterEvent, DagsterEventType, DagsterRunStatus, instance_for_test
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.test_utils import create_run_for_test

from rof_pipelines.adapters import metrics
from rof_pipelines.adapters.state_store import StateStore
from rof_pipelines.adapters.state_store.memory import InMemoryStateStore
from rof_pipelines.core.market import Market
from rof_pipelines.ops.collectors import InstanceCollector, StateStoreCollector, collectors
from rof_pipelines.partitions import market_day_key, markets_partitions

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


ORIGIN = RemoteJobOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("rof"), "__repository__"), "j")


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
    assert found["alerts_fired_total"] == [({"rule": "config_refused", "channel": "log"}, 0.0)]


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
    rule = {"rule": "config_refused", "channel": "log"}
    assert found["alerts_fired_total"] == [(rule, 3.0)]
    assert found["alerts_resolved_total"] == [(rule, 2.0)]  # two refusals a later applied version ended
    assert found["alerts_deliveries_failed_total"] == [(rule, 0.0)]
    assert value(found, "data_manager_config_versions", status="refused") == 3


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
