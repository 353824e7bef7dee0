"""q_table through Dagster: trains with the market's active parameters, stores a reloadable agent,
shows its plots; an unreachable state store means config defaults, said plainly."""

from datetime import date
from pathlib import Path

import pandas as pd
import yaml
from dagster import instance_for_test

from rof_pipelines.adapters.state_store import StateStore
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


def materialize_day(tmp_path: Path, config_path: Path, instance):
    return materialize_market_day(
        config_path, instance, [quote_snapshots, indicator_frame, q_table], TON, DAY
    )


def q_table_metadata(result) -> dict:
    return asset_metadata(result, "q_table")


def test_q_table_trains_with_defaults_and_stores_a_reloadable_agent(tmp_path, state_storage):
    config_path = write_config(tmp_path, state_storage)
    with instance_for_test() as instance:
        result = materialize_day(tmp_path, config_path, instance)
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
        "kelly_fraction",
    ):
        assert key in meta
    agent = TrainedAgent.from_bytes(Path(meta["path"]).read_bytes())
    frame = pd.read_parquet(next((tmp_path / "data" / "frames" / "indicator_frame").rglob("*.parquet")))
    again = TrainedAgent.from_bytes(agent.to_bytes())
    assert [agent.act(frame.iloc[: i + 1]) for i in range(200, 260)] == [
        again.act(frame.iloc[: i + 1]) for i in range(200, 260)
    ]


def test_q_table_uses_the_promoted_config(tmp_path, state_storage):
    config_path = write_config(tmp_path, state_storage)
    settings = load_settings(config_path, environ={})
    with StateStore(settings.state_storage) as store:
        store.upgrade()
        store.set_active_config(TON.key, {"episodes": 3, "alpha": 0.05}, source="ga", experiment_id="exp-1")
    with instance_for_test() as instance:
        result = materialize_day(tmp_path, config_path, instance)
    meta = q_table_metadata(result)
    assert meta["params_source"] == "active config v1 from ga"
    assert meta["episodes"] == 3 and meta["params"]["alpha"] == 0.05


def test_unreachable_state_store_falls_back_to_defaults(tmp_path):
    config_path = write_config(
        tmp_path, {"db_host": "127.0.0.1:1", "db_user": "nobody", "db_password": "s3cr3t-x"}
    )
    with instance_for_test() as instance:
        result = materialize_day(tmp_path, config_path, instance)
        assert result.success
        logs = " ".join(str(record) for record in instance.all_logs(result.run_id))
    meta = q_table_metadata(result)
    assert meta["params_source"].startswith("config defaults (state store unavailable")
    assert "state store unavailable, training binance:TONUSDT with config defaults" in logs
    assert "s3cr3t-x" not in logs
