"""`rof demo` as a newcomer runs it: a subprocess, a persistent instance the UI can open afterwards."""

import os
import subprocess
import sys

import pytest
from dagster import AssetKey, DagsterInstance

from rof_pipelines.partitions import market_and_day
from rof_pipelines.settings import PROJECT_ROOT


@pytest.mark.slow
def test_demo_materialises_two_markets_by_three_days_into_a_persistent_instance(tmp_path):
    home = tmp_path / "dagster_home"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ROF_DATA_DIR": str(tmp_path / "data"),
        "ROF_QUOTE_STORE": "parquet",
        "ROF_MARKETS": "binance:TONUSDT,binance:BTCUSDT",
    }
    env.pop("ROF_CONFIG", None)
    command = [sys.executable, "-m", "rof_pipelines.cli", "demo"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "generated" in first.stdout and "6 runs" in first.stdout
    assert first.stdout.count(" ok ") == 6

    instance = DagsterInstance.from_config(str(home))
    try:
        for asset in ("quote_snapshots", "indicator_frame"):
            partitions = instance.get_materialized_partitions(AssetKey(asset))
            parsed = {market_and_day(key) for key in partitions}
            assert len(parsed) == 6
            assert {market.key for market, _ in parsed} == {"binance:TONUSDT", "binance:BTCUSDT"}
            assert len({day for _, day in parsed}) == 3
        assert set(instance.get_dynamic_partitions("markets")) >= {"binance:TONUSDT", "binance:BTCUSDT"}
    finally:
        instance.dispose()

    # A second demo finds the quotes already stored and only re-materialises.
    second = subprocess.run(command, capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "generated" not in second.stdout and second.stdout.count(" ok ") == 6
