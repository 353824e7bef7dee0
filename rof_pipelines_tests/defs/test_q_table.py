"""q_table through Dagster: trains with the market's active config exactly as the A/B test
evaluated it, stores a reloadable agent, shows its plots; an unreachable state store fails the step
visibly (a production agent must never silently run something other than what was promoted).

What q_table reads from the state store is wiring, so these run on the in-memory state store
(``memory_state_store``, held to the PostgreSQL one by test_state_store_contract.py); the
unreachable-store case goes through the real PostgreSQL resource."""

from datetime import date
from pathlib import Path

import pandas as pd
import yaml
from dagster import instance_for_test

from rof_pipelines.core.market import Market
from rof_pipelines.core.rl import TrainedAgent
from rof_pipelines.defs.indicators.assets import indicator_frame
from rof_pipelines.defs.quotes.assets import quote_snapshots
from rof_pipelines.defs.rl.assets import q_table
from rof_pipelines.settings import load_settings
from rof_pipelines_tests.defs.support import asset_metadata, materialize_market_day

TON = Market.parse("binance:TONUSDT")
DAY = date(2026, 11, 20)


def write_config(tmp_path: Path, state_storage: dict) -> Path:
    path = tmp_path / "config.yaml"
    config = {
        "storage": {"data_dir": str(tmp_path / "data"), "quote_store": "parquet"},
        "state_storage": state_storage,
        "ai_config": {"rl": {"episodes": 5}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


NO_SERVER = {"db_host": "127.0.0.1:9", "db_name": "nowhere", "auto_migrate": False}


def materialize_day(tmp_path: Path, config_path: Path, instance, state_store):
    return materialize_market_day(
        config_path, instance, [quote_snapshots, indicator_frame, q_table], TON, DAY, state_store=state_store
    )


def q_table_metadata(result) -> dict:
    return asset_metadata(result, "q_table")


def test_q_table_trains_with_defaults_and_stores_a_reloadable_agent(tmp_path, memory_state_store):
    config_path = write_config(tmp_path, NO_SERVER)
    with instance_for_test() as instance:
        result = materialize_day(tmp_path, config_path, instance, memory_state_store)
        assert result.success
    meta = q_table_metadata(result)
    assert meta["params_source"] == "config defaults (no active config yet)"
    assert meta["episodes"] == 5
    assert meta["train_bars"] == 1008 and meta["test_bars"] == 432  # 70 / 30 of one day of 1-minute bars
    assert 0 < meta["state_coverage"] <= 1
    assert meta["reward_per_episode"].startswith("![Reward per episode](data:image/png;base64,")
    assert meta["equity_out_of_sample"].startswith("![Out-of-sample equity](data:image/png;base64,")
    for key in (
        "test/total_return",
        "test/sharpe",
        "test/max_drawdown",
        "test/bh_total_return",
        "kelly_max_fraction",
    ):
        assert key in meta
    agent = TrainedAgent.from_bytes(Path(meta["path"]).read_bytes())
    frame = pd.read_parquet(next((tmp_path / "data" / "frames" / "indicator_frame").rglob("*.parquet")))
    again = TrainedAgent.from_bytes(agent.to_bytes())
    assert [agent.act(frame.iloc[: i + 1]) for i in range(200, 260)] == [
        again.act(frame.iloc[: i + 1]) for i in range(200, 260)
    ]


def test_q_table_uses_the_promoted_config(tmp_path, memory_state_store):
    config_path = write_config(tmp_path, NO_SERVER)
    with memory_state_store.open() as store:
        store.configs.set_active(TON.key, {"episodes": 3, "alpha": 0.05}, source="ga", experiment_id="exp-1")
    with instance_for_test() as instance:
        result = materialize_day(tmp_path, config_path, instance, memory_state_store)
    meta = q_table_metadata(result)
    assert meta["params_source"] == "active config v1 from ga" and meta["active_version"] == 1
    assert meta["episodes"] == 3 and meta["params"]["rl"]["alpha"] == 0.05


def test_a_promoted_champion_is_applied_in_full(tmp_path, memory_state_store):
    """Every part the A/B test evaluated (agent, bins, indicator windows, exits, Kelly, costs) is what
    q_table runs: its metadata shows the stored config back, nothing left unapplied."""
    config_path = write_config(tmp_path, NO_SERVER)
    settings = load_settings(config_path, environ={})
    from rof_pipelines.core.experiment import candidate_from_params
    from rof_pipelines.core.ga.space import SearchSpace
    from rof_pipelines.core.rl import RLParams

    space = SearchSpace.from_mapping(settings.ab_tests.experiment.ga.search_space)
    base = RLParams.from_settings(settings.ai_config)
    genes = [gene.from_unit(0.37) for gene in space.genes]
    champion = space.decode(space.canonical(genes), base).to_dict()
    with memory_state_store.open() as store:
        store.configs.set_active(TON.key, champion, source="ab_test", experiment_id="exp-2")
    with instance_for_test() as instance:
        result = materialize_day(tmp_path, config_path, instance, memory_state_store)
        assert result.success
    meta = q_table_metadata(result)
    assert meta["params_source"] == "active config v1 from ab_test"
    applied = candidate_from_params(meta["params"], base, space).to_dict()
    assert applied == candidate_from_params(champion, base, space).to_dict()
    assert meta["params"]["indicator_windows"] == champion["indicator_windows"]
    assert meta["params"]["strategy"] == champion["strategy"]
    assert "params_not_applied" not in meta


def test_unreachable_state_store_fails_visibly(tmp_path):
    config_path = write_config(
        tmp_path, {"db_host": "127.0.0.1:1", "db_user": "nobody", "db_password": "s3cr3t-x"}
    )
    with instance_for_test() as instance:
        fill = materialize_market_day  # the quotes exist; only the state store is missing
        result = fill(
            config_path, instance, [quote_snapshots, indicator_frame, q_table], TON, DAY, raise_on_error=False
        )
        assert not result.success
        logs = " ".join(str(record) for record in instance.all_logs(result.run_id))
    assert "the state store is unavailable" in logs and "active config cannot be stored or read" in logs
    assert "STEP_UP_FOR_RETRY" in logs  # retried before the run fails
    assert "s3cr3t-x" not in logs


def test_seed_q_table_warm_starts_from_a_transfer_source_and_off_it_does_not(tmp_path, memory_state_store):
    """okx:TONUSDT has a transfer source (the same pair on binance) whose agent is stored: with
    transfer_learning.seed_q_table on, q_table starts from that agent's Q-table (and so ends
    elsewhere than a cold start with the same seed); switched off, it starts from zeros."""
    from datetime import UTC, datetime

    from rof_pipelines.core.knowledge import TaskRecord

    config_path = write_config(tmp_path, NO_SERVER)
    with instance_for_test() as instance:
        source = materialize_day(tmp_path, config_path, instance, memory_state_store)
        source_path = q_table_metadata(source)["path"]
    with memory_state_store.open() as store:
        store.knowledge.add(
            TaskRecord(
                task_id="binance:TONUSDT|2026-11-19|test_experiment",
                market=TON.key,
                finished_at=datetime(2026, 11, 20, tzinfo=UTC),
                features={"volatility": 0.01, "trend": 0.0},
                best_params={"alpha": 0.1},
                score=1.0,
                artifact=source_path,
            )
        )
    okx = Market.parse("okx:TONUSDT")

    def agent_for(seed_q_table: bool) -> tuple[dict, TrainedAgent]:
        config = yaml.safe_load(config_path.read_text())
        config["ab_tests"] = {"transfer_learning": {"enabled": True, "seed_q_table": seed_q_table}}
        config_path.write_text(yaml.safe_dump(config))
        with instance_for_test() as instance:
            result = materialize_market_day(
                config_path,
                instance,
                [quote_snapshots, indicator_frame, q_table],
                okx,
                DAY,
                state_store=memory_state_store,
            )
            assert result.success
        meta = q_table_metadata(result)
        return meta, TrainedAgent.from_bytes(Path(meta["path"]).read_bytes())

    warm_meta, warm = agent_for(True)
    cold_meta, cold = agent_for(False)
    assert warm_meta["q_table_warm_start"] == f"transfer source {source_path}"
    assert cold_meta["q_table_warm_start"] == "none (transfer_learning.seed_q_table is off)"
    assert warm.q.shape == cold.q.shape and not (warm.q == cold.q).all()
