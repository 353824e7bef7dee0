"""ga_population through Dagster: a small GA on one day, its population frame and UI metadata, a
rerun answered from the final checkpoint, and a run without a reachable state store.

The checkpoints and trials go to the in-memory state store (held to PostgreSQL's behaviour by
test_state_store_contract.py; test_ga_checkpoints.py resumes from PostgreSQL itself); the unreachable
case goes through the real PostgreSQL resource."""

from datetime import date
from pathlib import Path

import pandas as pd
import yaml
from dagster import instance_for_test

from rof_pipelines.core.market import Market
from rof_pipelines.defs.indicators.assets import indicator_frame
from rof_pipelines.defs.optimisation.assets import ga_population
from rof_pipelines.defs.quotes.assets import quote_snapshots
from rof_pipelines_tests.defs.support import asset_metadata, materialize_market_day

TON = Market.parse("binance:TONUSDT")
DAY = date(2026, 11, 20)
RUN_CONFIG = {"ops": {"ga_population": {"config": {"generations": 3, "population_size": 8, "workers": 2}}}}


def write_config(tmp_path: Path, state_storage: dict) -> Path:
    path = tmp_path / "config.yaml"
    config = {
        "storage": {"data_dir": str(tmp_path / "data"), "quote_store": "parquet"},
        "state_storage": state_storage,
        "ai_config": {"rl": {"episodes": 3, "fee": 0.0, "slippage": 0.0}},  # costs low enough to trade
        "ab_tests": {
            "experiment": {"ga": {"min_population": 8}},
            "state_management": {"checkpoint_interval": 2},
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


NO_SERVER = {"db_host": "127.0.0.1:9", "db_name": "nowhere", "auto_migrate": False}


def materialize_day(config_path: Path, instance, state_store, assets=None):
    return materialize_market_day(
        config_path,
        instance,
        assets or [quote_snapshots, indicator_frame, ga_population],
        TON,
        DAY,
        RUN_CONFIG,
        state_store=state_store,
    )


def metadata(result) -> dict:
    return asset_metadata(result, "ga_population")


def test_ga_population_stores_the_final_population_and_shows_the_run(tmp_path, memory_state_store):
    config_path = write_config(tmp_path, NO_SERVER)
    with instance_for_test() as instance:
        result = materialize_day(config_path, instance, memory_state_store)
        assert result.success
        logs = " ".join(str(record) for record in instance.all_logs(result.run_id))
        meta = metadata(result)
        assert meta["train_bars"] == 1008  # the 70 % training part of one day, never the held-out 30 %
        assert meta["generations_run"] == 3 and meta["checkpointing"] == "state store"
        assert meta["resumed_from_generation"] == -1 and meta["workers"] == 2
        assert meta["evaluations"] > 0 and meta["cache_hits"] >= 0 and meta["wall_seconds"] > 0
        assert meta["trials"] == meta["evaluations"]  # a fresh task: every scored genome is a trial
        for key in ("fitness_per_generation", "return_per_generation", "pareto_front"):
            assert meta[key].startswith("![")
        assert set(meta["champion_params"]) == {"rl", "indicator_windows", "strategy"}
        assert "champion/sharpe" in meta and "champion/max_drawdown" in meta
        assert "generation 3/3: best Sharpe" in logs

        frame = pd.read_parquet(meta["path"])
        assert len(frame) == meta["population_size"] and frame["champion"].sum() == 1
        assert frame.loc[frame["champion"], "pareto"].all()
        assert {"alpha", "rsi_window", "stop_loss", "total_return", "sharpe", "max_drawdown"} <= set(
            frame.columns
        )

        with memory_state_store.open() as store:
            progress = store.progress.get(meta["task_id"])
        assert progress is not None and progress.status == "completed" and progress.generation == 3

        # The same task again: answered from its final checkpoint, same population.
        again = materialize_day(config_path, instance, memory_state_store)
        meta2 = metadata(again)
        assert meta2["resumed_from_generation"] == 3 and meta2["evaluations"] == 0
        assert pd.read_parquet(meta2["path"]).equals(frame)
        assert meta2["trials"] == meta["trials"]  # a rerun adds no trials and loses none


def test_unreachable_state_store_fails_visibly_after_retries(tmp_path):
    """Without the state store the GA's trials could not be counted for the A/B test: the step fails
    (after its retries) instead of a green run that lost its record."""
    config_path = write_config(tmp_path, {"db_host": "127.0.0.1:1", "db_user": "nobody", "db_password": "x"})
    with instance_for_test() as instance:
        result = materialize_market_day(
            config_path,
            instance,
            [quote_snapshots, indicator_frame, ga_population],
            TON,
            DAY,
            RUN_CONFIG,
            raise_on_error=False,
        )
        assert not result.success
        logs = " ".join(str(record) for record in instance.all_logs(result.run_id))
    assert "the state store is unavailable" in logs and "checkpoints and trial count" in logs
    assert "STEP_UP_FOR_RETRY" in logs


def test_a_flat_landscape_names_no_champion_and_the_ab_test_no_challenger(tmp_path, memory_state_store):
    """Costs of 5 % a side: no genome trades, every one scores (0, 0, 0); the GA says so and the A/B
    test has no arbitrary champion to test."""
    from rof_pipelines.defs.experiments.assets import ab_report

    config_path = write_config(tmp_path, NO_SERVER)
    config = yaml.safe_load(config_path.read_text())
    config["ai_config"]["rl"].update(fee=0.05, slippage=0.0)
    config_path.write_text(yaml.safe_dump(config))
    with instance_for_test() as instance:
        result = materialize_day(
            config_path,
            instance,
            memory_state_store,
            [quote_snapshots, indicator_frame, ga_population, ab_report],
        )
        assert result.success
        meta = metadata(result)
        assert meta["landscape"].startswith("flat: all ")
        assert "no configuration trades profitably under these costs (fee 500.00 bp" in meta["landscape"]
        assert "champion_params" not in meta and "champion/sharpe" not in meta
        assert pd.read_parquet(meta["path"])["champion"].sum() == 0
        logs = " ".join(str(record) for record in instance.all_logs(result.run_id))
        assert "flat: all" in logs
        report = asset_metadata(result, "ab_report")
        assert "ga_champion" not in report["arms"] and report["decision"].startswith("keep active")
        assert report["costs"] == "fee 500.00 bp + slippage 0.00 bp per side"
