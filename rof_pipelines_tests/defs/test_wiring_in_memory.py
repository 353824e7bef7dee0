"""The whole market-day graph wired through Dagster on in-memory stores: no PostgreSQL, no files but
the IO manager's. What these check is the wiring (resources by key, partitions, what each asset
hands the next and records in the state store), so the fakes stand in; the same flows on the real
stores are in test_ab_report.py and test_ga_population.py (test_q_table.py runs on the fake too)."""

from datetime import date
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, instance_for_test

from rof_pipelines.adapters.resources import PostgresStateStoreResource, StateStoreResource
from rof_pipelines.core.market import Market
from rof_pipelines.definitions import defs
from rof_pipelines.defs.experiments.assets import ab_report, strategy_knowledge
from rof_pipelines.defs.indicators.assets import indicator_frame
from rof_pipelines.defs.optimisation.assets import ga_population
from rof_pipelines.defs.quotes.assets import quote_snapshots
from rof_pipelines.defs.rl.assets import q_table
from rof_pipelines_tests.defs.support import asset_metadata, materialize_market_day

TON = Market.parse("binance:TONUSDT")
DAY = date(2026, 11, 20)
ASSETS = [quote_snapshots, indicator_frame, q_table, ga_population, ab_report, strategy_knowledge]
RUN_CONFIG = {"ops": {"ga_population": {"config": {"generations": 2, "population_size": 8, "workers": 1}}}}


def write_config(tmp_path: Path) -> Path:
    """The memory quote store, and a state store address nothing listens on: a step that reached
    PostgreSQL instead of the bound fake would fail."""
    path = tmp_path / "config.yaml"
    config = {
        "storage": {"data_dir": str(tmp_path / "data"), "quote_store": "memory"},
        "state_storage": {"db_host": "127.0.0.1:9", "db_name": "nowhere", "auto_migrate": False},
        "ai_config": {"rl": {"episodes": 2, "fee": 0.0, "slippage": 0.0}},
        "ab_tests": {"experiment": {"ga": {"min_population": 8}}, "folds": 2, "n_boot": 200},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def test_every_asset_of_a_market_day_runs_and_records_in_the_bound_state_store(
    config_path, memory_state_store
):
    with instance_for_test() as instance:
        result = materialize_market_day(
            config_path, instance, ASSETS, TON, DAY, run_config=RUN_CONFIG, state_store=memory_state_store
        )
    assert result.success
    materialised = {event.asset_key for event in result.get_asset_materialization_events()}
    assert materialised == {AssetKey(asset.key.path) for asset in ASSETS}

    store = memory_state_store.open()
    ga = asset_metadata(result, "ga_population")
    checkpointed = [generation for generation, _ in store.checkpoints.generations(ga["task_id"])]
    assert checkpointed[0] == 0 and checkpointed[-1] == ga["generations_run"]
    (experiment,) = store.experiments.recent(TON.key)
    report = asset_metadata(result, "ab_report")
    assert experiment.experiment_id == report["experiment_id"]
    assert {arm.arm for arm in experiment.arms} >= {"active", "buy_and_hold"}
    # The trial ledger the GA wrote is what the A/B test counted.
    assert experiment.details["trials"] == report["n_trials_for_dsr"] == ga["trials"] >= 8
    (task,) = store.knowledge.tasks()
    assert task.market == TON.key and asset_metadata(result, "strategy_knowledge")["task_id"] == task.task_id


def test_the_code_location_binds_the_postgresql_state_store_behind_the_abstract_resource():
    """Production runs get PostgreSQL; assets only know the abstract resource."""
    loaded = defs() if callable(defs) else defs
    bound = loaded.resources["state_store"]
    assert isinstance(bound, PostgresStateStoreResource) and isinstance(bound, StateStoreResource)
    with pytest.raises(TypeError):
        StateStoreResource()  # abstract: open() is what each implementation provides
