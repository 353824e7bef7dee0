"""ga_population as an island graph (ga.islands = 2 at load): one market-day materialised in process,
the same frame again, the island steps, a rerun answered from the stored island epochs, re-execution
from a failed island step, and a closed day that materialises nothing.

The island epochs go to the in-memory state store (held to PostgreSQL's behaviour by
test_state_store_contract.py)."""

import os
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dagster import (
    AssetSelection,
    DagsterInstance,
    Definitions,
    ReexecutionOptions,
    define_asset_job,
    execute_job,
    in_process_executor,
    instance_for_test,
    materialize,
    reconstructable,
)

from rof_pipelines.adapters.resources import InMemoryStateStoreResource
from rof_pipelines.core.market import Market
from rof_pipelines.defs.indicators.assets import indicator_frame
from rof_pipelines.defs.optimisation.definitions import domain_definitions
from rof_pipelines.defs.optimisation.islands import build_island_ga_population
from rof_pipelines.defs.quotes.assets import quote_snapshots
from rof_pipelines.errors import PermanentError
from rof_pipelines.partitions import market_day_key, markets_partitions
from rof_pipelines.settings import load_settings
from rof_pipelines_tests.defs.support import (
    asset_metadata,
    fill_quotes,
    materialize_market_day,
    resources_for,
)

TON = Market.parse("binance:TONUSDT")
GOOG = Market.parse("nasdaq:GOOG")
DAY = date(2026, 11, 20)
SATURDAY = date(2026, 11, 21)
RUN_CONFIG = {"ops": {"ga_population": {"config": {"population_size": 16}}}}
ISLAND_STEPS = {
    f"ga_population.{step}"
    for step in (
        "ga_islands_start",
        *(f"ga_island_epoch_{e}[island_{i}]" for e in (1, 2) for i in (0, 1)),
        "ga_islands_migrate_1",
        "ga_islands_merge",
    )
}


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    config = {
        "storage": {"data_dir": str(tmp_path / "data"), "quote_store": "parquet"},
        "state_storage": {"db_host": "127.0.0.1:9", "db_name": "nowhere", "auto_migrate": False},
        "ai_config": {"rl": {"episodes": 3, "fee": 0.0, "slippage": 0.0}},
        "ab_tests": {
            "experiment": {
                "ga": {
                    "generations": 4,
                    "population_size": 20,
                    "min_population": 8,
                    "islands": 2,
                    "migration_interval": 2,
                    "migrants": 2,
                }
            },
            "state_management": {"checkpoint_interval": 2},
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def island_population(config_path: Path):  # type: ignore[no-untyped-def]
    """What the optimisation domain holds for the config at load."""
    at_load = load_settings(config_path, environ={})
    (asset,) = domain_definitions(at_load).assets
    assert asset.node_def.name == "ga_population" and asset.keys_by_output_name
    return build_island_ga_population(at_load)


def frame_of(result) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    return pd.read_parquet(asset_metadata(result, "ga_population")["path"])


def steps_of(instance: DagsterInstance, run_id: str) -> set[str]:
    return {
        record.dagster_event.step_key
        for record in instance.all_logs(run_id)
        if record.dagster_event is not None and record.dagster_event.event_type_value == "STEP_SUCCESS"
    }


def test_island_ga_population_is_the_same_frame_again_and_reuses_stored_epochs(tmp_path, memory_state_store):
    config_path = write_config(tmp_path)
    assets = [quote_snapshots, indicator_frame, island_population(config_path)]
    with instance_for_test() as instance:
        first = materialize_market_day(
            config_path, instance, assets, TON, DAY, RUN_CONFIG, state_store=memory_state_store
        )
        assert first.success
        assert steps_of(instance, first.run_id) == {"quote_snapshots", "indicator_frame", *ISLAND_STEPS}
        meta = asset_metadata(first, "ga_population")
        assert (meta["islands"], meta["epochs"], meta["generations_run"]) == (2, 2, 4)
        assert meta["evaluations"] > 0 and meta["trials"] > 0 and meta["workers"] == 1
        frame = frame_of(first)
        assert len(frame) == meta["population_size"] == 16 and frame["champion"].sum() == 1
        with memory_state_store.open() as store:
            stored = {
                (r.island, r.epoch): r.created_at
                for e in (0, 1, 2)
                for r in store.islands.epoch(meta["task_id"], e)
            }
            assert store.progress.get(meta["task_id"]).status == "completed"
        assert set(stored) == {(i, e) for i in (0, 1) for e in (0, 1, 2)}

        again = materialize_market_day(
            config_path, instance, assets, TON, DAY, RUN_CONFIG, state_store=memory_state_store
        )
        logs = " ".join(str(record) for record in instance.all_logs(again.run_id))
        assert frame_of(again).equals(frame)
        assert logs.count("reused the stored result") == 4 and "computed (" not in logs
        with memory_state_store.open() as store:
            after = {
                (r.island, r.epoch): r.created_at
                for e in (0, 1, 2)
                for r in store.islands.epoch(meta["task_id"], e)
            }
        assert after == stored, "nothing rewritten"

        fresh = InMemoryStateStoreResource(space=f"{memory_state_store.space}:fresh")
        try:
            other = materialize_market_day(
                config_path, instance, assets, TON, DAY, RUN_CONFIG, state_store=fresh
            )
            assert frame_of(other).equals(frame), "recomputed from nothing: the same frame"
        finally:
            InMemoryStateStoreResource.drop(fresh.space)


def test_island_steps_push_their_figures_and_are_profiled_one_artifact_each(tmp_path, memory_state_store):
    """What every market-day step has, the island ops have too: the GA's figures pushed as
    ga_population, and with ``rof/profile`` one artifact per step (not one for all islands)."""
    from rof_pipelines.defs.profiling import PROFILE_TAG
    from rof_pipelines_tests.adapters.test_pushgateway import series
    from rof_pipelines_tests.ops.servers import Pushgateway, temp_root

    config_path = write_config(tmp_path)
    with temp_root("rof-pushgateway-") as root:
        gateway = Pushgateway(root)
        try:
            config = yaml.safe_load(config_path.read_text())
            config["system_setup"] = {"pushgateway_url": gateway.url, "pushgateway_interval": 0}
            config_path.write_text(yaml.safe_dump(config))
            assets = [quote_snapshots, indicator_frame, island_population(config_path)]
            fill_quotes(config_path, TON, DAY)
            with instance_for_test() as instance:
                instance.add_dynamic_partitions(markets_partitions.name, [TON.key])
                result = materialize(
                    assets,
                    partition_key=market_day_key(TON, DAY),
                    instance=instance,
                    run_config=RUN_CONFIG,
                    resources=resources_for(config_path, memory_state_store),
                    tags={"rof/pool": "ab_optimizer", PROFILE_TAG: "cpu"},
                )
                assert result.success
            group = {"job": "rof", "process": "run", "pool": "ab_optimizer", "market": TON.key}
            [(_, evaluations)] = series(gateway, "ga_evaluations_total", asset="ga_population", **group)
        finally:
            gateway.stop()
    meta = asset_metadata(result, "ga_population")
    assert (
        evaluations >= meta["evaluations"] > 0
    )  # pushed by the island steps: no other step is ga_population
    profiles = tmp_path / "data" / "profiles" / result.run_id
    island_steps = {
        f"ga_population.{step}.html"
        for step in (
            "ga_islands_start",
            *(f"ga_island_epoch_{e}.island_{i}" for e in (1, 2) for i in (0, 1)),
            "ga_islands_merge",
        )
    }
    assert {p.name for p in profiles.iterdir()} == {
        "quote_snapshots.html",
        "indicator_frame.html",
    } | island_steps
    assert meta["profile/mode"] == "cpu" and meta["profile/path"].endswith(
        "ga_population.ga_islands_merge.html"
    )


def test_a_closed_day_materialises_nothing(tmp_path, memory_state_store):
    config_path = write_config(tmp_path)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(markets_partitions.name, [GOOG.key])
        result = materialize(
            [island_population(config_path)],
            partition_key=market_day_key(GOOG, SATURDAY),
            instance=instance,
            resources=resources_for(config_path, memory_state_store),
        )
        assert result.success and result.get_asset_materialization_events() == []
        logs = " ".join(str(record) for record in instance.all_logs(result.run_id))
        assert "the market is closed" in logs


# --- re-execution from a failed island step -----------------------------------------------------

REFUSED: set[tuple[str, int, int]] = set()


class RefusingIslands:
    """``store.islands`` that refuses the first write of island 1, epoch 2 (a permanent error: the
    step fails at once, the run fails)."""

    def __init__(self, inner, space: str) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.space = inner, space

    def save(self, task_id: str, island: int, epoch: int, payload: bytes) -> bool:
        if (island, epoch) == (1, 2) and (self.space, island, epoch) not in REFUSED:
            REFUSED.add((self.space, island, epoch))
            raise PermanentError("state_store: permission denied for table ga_island_epochs")
        return self.inner.save(task_id, island, epoch, payload)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)


class RefusingOnce:
    def __init__(self, store, space: str) -> None:  # type: ignore[no-untyped-def]
        self.store, self.islands = store, RefusingIslands(store.islands, space)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.store, name)

    def __enter__(self) -> "RefusingOnce":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class RefusingOnceStateStore(InMemoryStateStoreResource):
    def open(self):  # type: ignore[no-untyped-def]
        return RefusingOnce(super().open(), self.space)


def island_job():  # type: ignore[no-untyped-def]
    """The island job on the test's config (reconstructable: the path and store space by env)."""
    config_path = Path(os.environ["ROF_TEST_ISLANDS_CONFIG"])
    resources = resources_for(config_path, RefusingOnceStateStore(space=os.environ["ROF_TEST_ISLANDS_SPACE"]))
    job = define_asset_job(
        "islands", selection=AssetSelection.assets("ga_population"), executor_def=in_process_executor
    )
    defs = Definitions(
        assets=[quote_snapshots, indicator_frame, island_population(config_path)],
        jobs=[job],
        resources=resources,
    )
    return defs.resolve_job_def("islands")


def test_reexecution_from_a_failed_island_step_finishes_with_the_same_frame(
    tmp_path, memory_state_store, monkeypatch
):
    config_path = write_config(tmp_path)
    monkeypatch.setenv("ROF_TEST_ISLANDS_CONFIG", str(config_path))
    monkeypatch.setenv("ROF_TEST_ISLANDS_SPACE", memory_state_store.space)
    key = market_day_key(TON, DAY)
    with instance_for_test() as instance:
        reference = materialize_market_day(
            config_path,
            instance,
            [quote_snapshots, indicator_frame, island_population(config_path)],
            TON,
            DAY,
            RUN_CONFIG,
            state_store=InMemoryStateStoreResource(space=f"{memory_state_store.space}:reference"),
        )
        expected = frame_of(reference)
        InMemoryStateStoreResource.drop(f"{memory_state_store.space}:reference")
        fill_quotes(config_path, TON, DAY)

        failed = execute_job(
            reconstructable(island_job), instance, run_config=RUN_CONFIG, tags={"dagster/partition": key}
        )
        assert not failed.success
        assert "permission denied for table ga_island_epochs" in " ".join(
            str(r) for r in instance.all_logs(failed.run_id)
        )
        done = steps_of(instance, failed.run_id)
        assert "ga_population.ga_island_epoch_2[island_0]" in done
        assert "ga_population.ga_island_epoch_2[island_1]" not in done
        with memory_state_store.open() as store:
            task_id = store.progress.find()[0].task_id
            before = {
                (r.island, r.epoch): r.created_at for e in (0, 1, 2) for r in store.islands.epoch(task_id, e)
            }
        assert (1, 2) not in before and (0, 2) in before

        with execute_job(
            reconstructable(island_job),
            instance,
            reexecution_options=ReexecutionOptions.from_failure(failed.run_id, instance),
            tags={"dagster/partition": key},
        ) as resumed:
            assert resumed.success
            steps = steps_of(instance, resumed.run_id)
            assert steps == {"ga_population.ga_island_epoch_2[island_1]", "ga_population.ga_islands_merge"}
            logs = " ".join(str(r) for r in instance.all_logs(resumed.run_id))
            assert "island 1 epoch 2/2: computed (0 evaluations)" in logs, "resumed from its checkpoint"
            frame = pd.read_parquet(
                next(
                    e.step_materialization_data.materialization.metadata["path"].value
                    for e in resumed.get_asset_materialization_events()
                )
            )
        assert frame.equals(expected)
        with memory_state_store.open() as store:
            after = {
                (r.island, r.epoch): r.created_at for e in (0, 1, 2) for r in store.islands.epoch(task_id, e)
            }
        assert {k: v for k, v in after.items() if k != (1, 2)} == before, "stored epochs not rewritten"


@pytest.fixture(autouse=True)
def _forget_refusals():  # type: ignore[no-untyped-def]
    yield
    REFUSED.clear()
