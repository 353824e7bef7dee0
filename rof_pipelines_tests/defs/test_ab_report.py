"""ab_report and strategy_knowledge through Dagster: the arms table, p-values, decision, equity plot
and upstream links in the UI metadata; the experiment stored and listable; the finished task in the
knowledge base; and a second day whose GA is seeded from it when meta-learning is on."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import yaml
from dagster import AssetKey, instance_for_test, materialize

from rof_pipelines.adapters.io_managers import ParquetFrameIOManager
from rof_pipelines.adapters.quote_stores import open_quote_store
from rof_pipelines.adapters.resources import PostgresStateStoreResource, QuoteStoreResource, RofSettings
from rof_pipelines.adapters.state_store import StateStore
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import generate_quotes
from rof_pipelines.defs.experiments.assets import ab_report, strategy_knowledge
from rof_pipelines.defs.indicators.assets import indicator_frame
from rof_pipelines.defs.optimisation.assets import ga_population
from rof_pipelines.defs.quotes.assets import quote_snapshots
from rof_pipelines.partitions import market_day_key, markets_partitions
from rof_pipelines.settings import load_settings

TON = Market.parse("binance:TONUSDT")
DAY = date(2026, 11, 20)
RUN_CONFIG = {"ops": {"ga_population": {"config": {"generations": 2, "population_size": 8, "workers": 1}}}}
ASSETS = [quote_snapshots, indicator_frame, ga_population, ab_report, strategy_knowledge]


def write_config(tmp_path: Path, state_storage: dict, meta: bool) -> Path:
    path = tmp_path / "config.yaml"
    config = {
        "storage": {"data_dir": str(tmp_path / "data"), "quote_store": "parquet"},
        "state_storage": state_storage,
        "ai_config": {"rl": {"episodes": 2, "fee": 0.0, "slippage": 0.0}},  # costs low enough to trade
        "ab_tests": {
            "experiment": {"ga": {"min_population": 8}},
            "folds": 2,
            "n_boot": 200,
            "meta_learning": {"enabled": meta, "min_tasks_for_learning": 1, "seed_fraction": 0.5},
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def materialize_day(config_path: Path, instance, day: date):
    settings = load_settings(config_path, environ={})
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    with open_quote_store(settings) as store:
        store.write(TON, generate_quotes(TON, start - timedelta(days=1), start + timedelta(days=1), seed=9))
    resource = RofSettings(config_path=str(config_path))
    instance.add_dynamic_partitions(markets_partitions.name, [TON.key])
    return materialize(
        ASSETS,
        partition_key=market_day_key(TON, day),
        instance=instance,
        run_config=RUN_CONFIG,
        resources={
            "settings": resource,
            "quote_store": QuoteStoreResource(settings=resource),
            "state_store": PostgresStateStoreResource(settings=resource),
            "frame_io_manager": ParquetFrameIOManager(settings=resource),
        },
    )


def metadata(result, name: str) -> dict:
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key == AssetKey(name):
            return {key: value.value for key, value in materialization.metadata.items()}
    raise AssertionError(f"{name} was not materialised")


def test_ab_report_shows_the_evidence_and_records_the_experiment(tmp_path, state_storage):
    config_path = write_config(tmp_path, state_storage, meta=False)
    with instance_for_test() as instance:
        result = materialize_day(config_path, instance, DAY)
        assert result.success
        meta = metadata(result, "ab_report")
        assert meta["decision"].startswith(("promote", "keep active"))
        assert "Holm-adjusted" in meta["decision_rule"] and meta["folds"] == 2
        assert meta["arms"].startswith("| arm |") and "ga_champion" in meta["arms"]
        assert "buy_and_hold" in meta["arms"] and "p_adjusted" in meta["arms"]
        assert meta["equity_curves"].startswith("![")
        for name in ("quote_snapshots", "indicator_frame", "ga_population"):
            assert meta[f"upstream/{name}"].startswith("run ")
        assert meta["uplift/seeded"] == 0 and "meta-learning off" in meta["uplift/seeding"]
        assert meta["uplift/measured"] == "no: the population was not seeded"
        table = pd.read_parquet(meta["path"])
        assert set(table["arm"]) == {"active", "ga_champion", "buy_and_hold"}
        assert table.loc[table["arm"] == "active", "verdict"].item() == "the config in force"

        settings = load_settings(config_path, environ={})
        with StateStore(settings.state_storage) as store:
            experiments = store.experiments.recent(TON.key)
            active = store.configs.get_active(TON.key)
            tasks = store.knowledge.tasks()
        assert [e.experiment_id for e in experiments] == [meta["experiment_id"]]
        assert {a.arm for a in experiments[0].arms} == {"active", "ga_champion", "buy_and_hold"}
        assert experiments[0].promoted == meta["promoted"]
        if meta["promoted"]:
            assert active is not None and active.experiment_id == meta["experiment_id"]
            assert set(active.params) == {"rl", "indicator_windows", "strategy"}
        else:
            assert active is None
        assert [t.task_id for t in tasks] == [f"{TON.key}|{DAY.isoformat()}|test_experiment"]
        knowledge = metadata(result, "strategy_knowledge")
        assert knowledge["tasks_retained"] == 1 and knowledge["meta_learning"] == "off"


def test_with_meta_learning_on_the_next_day_is_seeded_from_the_knowledge_base(tmp_path, state_storage):
    config_path = write_config(tmp_path, state_storage, meta=True)
    with instance_for_test() as instance:
        first = materialize_day(config_path, instance, DAY)
        assert metadata(first, "ga_population")["seeded"] == 0  # empty knowledge base: cold
        second = materialize_day(config_path, instance, DAY + timedelta(days=1))
        assert second.success
        ga = metadata(second, "ga_population")
        assert ga["seeded"] == 1 and ga["seeding"]["meta"][0]["market"] == TON.key
        report = metadata(second, "ab_report")
        assert report["uplift/seeded"] == 1
        # The cold comparison ran beside the seeded GA, and the report carries its figures.
        assert report["uplift/measured"].startswith("yes")
        assert report["uplift/generations_to_cold_fitness_cold"] >= 0
        assert report["uplift/generations_to_cold_fitness_seeded"] >= -1
        assert report["uplift/evaluations_cold"] > 0 and report["uplift/evaluations_seeded"] > 0


def test_rerunning_a_partition_gives_the_same_decision_and_trial_count(tmp_path, state_storage):
    """Three runs of one partition, the GA resuming from its final checkpoint after the first
    (evaluations 0): the trial count comes from the state store's ledger, not from the run, so the
    decision, the p-values and the count are identical each time. (Promotion is off: a promotion
    would change the active arm, which is a different experiment.)"""
    config_path = write_config(tmp_path, state_storage, meta=False)
    config = yaml.safe_load(config_path.read_text())
    config["ab_tests"]["promote"] = False
    config_path.write_text(yaml.safe_dump(config))
    seen = []
    with instance_for_test() as instance:
        for attempt in range(3):
            result = materialize_day(config_path, instance, DAY)
            assert result.success
            ga, report = metadata(result, "ga_population"), metadata(result, "ab_report")
            if attempt:
                assert ga["resumed_from_generation"] == ga["generations_run"] and ga["evaluations"] == 0
            table = pd.read_parquet(report["path"]).set_index("arm")
            seen.append(
                (
                    report["decision"],
                    report["reason"],
                    report["n_trials_for_dsr"],
                    report["trials_sharpe_variance"],
                    table[["p_welch", "p_bootstrap", "dsr", "p_adjusted"]].round(12).fillna(-1).to_dict(),
                )
            )
    assert seen[0][2] > 8  # more than the final population: every genome ever scored
    assert seen[0] == seen[1] == seen[2]
