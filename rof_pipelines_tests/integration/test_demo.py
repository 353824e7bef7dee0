"""`rof demo` as a newcomer runs it: a subprocess, a persistent instance the UI can open afterwards,
and two synthetic markets whose outcomes differ for a reason: a planted momentum pattern the
optimiser finds and the A/B test promotes, and a random walk where nothing beats the active config."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from rof_pipelines.partitions import market_and_day
from rof_pipelines.settings import PROJECT_ROOT

PATTERNED, RANDOM_WALK = "binance:SOLUSDT", "binance:BTCUSDT"
ROW = re.compile(
    r"^(?P<market>\S+)\s+(?P<quotes>.+?)\s+(?P<day>\d{4}-\d{2}-\d{2})\s+(?P<status>ok|FAILED)\s+"
    r"(?P<bars>\S+)\s+(?P<close>\S+)\s+(?P<agent>\S+)\s+(?P<bh>\S+)\s+"
    r"(?P<config>defaults \(no store\)|defaults|active v\d+|-)\s+(?P<decision>.+?)\s+(?P<p>\S+)\s+"
    r"(?P<checks>all passed|warn/failed: .*)$"
)


def demo_env(tmp_path: Path, state_db: dict[str, str]) -> dict[str, str]:
    """The shipped config.yaml, except where the data, the instance and the state store live."""
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "ROF_DATA_DIR": str(tmp_path / "data"),
        "ROF_QUOTE_STORE": "parquet",
        "STATE_STORAGE_DB_PASSWORD": "",
        "STATE_STORAGE_SCHEMA": "rof_state",
        **state_db,
    }
    for name in ("ROF_CONFIG", "ROF_MARKETS", "ROF_BAR_INTERVAL"):
        env.pop(name, None)
    return env


def run_demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rof_pipelines.cli", "demo", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=1200)


def table(stdout: str) -> list[dict[str, str]]:
    rows = [ROW.match(line) for line in stdout.splitlines() if line.startswith("binance:")]
    assert all(rows), stdout
    return [row.groupdict() for row in rows if row]


@pytest.mark.slow
def test_demo_promotes_the_planted_pattern_keeps_the_random_walk_and_records_every_run(tmp_path, pg_database):
    # The test's own state store database, never the developer's configured one.
    env = demo_env(
        tmp_path,
        {
            "STATE_STORAGE_DB_HOST": pg_database["db_host"],
            "STATE_STORAGE_DB_USER": pg_database["db_user"],
            "STATE_STORAGE_DB_NAME": pg_database["db_name"],
        },
    )
    first = run_demo(env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    assert "generated" in out and "6 runs" in out, out
    assert "15m bars over a 14d window" in out and "UNAVAILABLE" not in out
    rows = table(out)
    assert len(rows) == 6 and {row["status"] for row in rows} == {"ok"}
    assert {row["checks"] for row in rows} == {"all passed"}, out  # warm indicators from day one
    patterned = [row for row in rows if row["market"] == PATTERNED]
    walk = [row for row in rows if row["market"] == RANDOM_WALK]
    assert {row["quotes"] for row in patterned} == {"momentum (planted)"}
    assert {row["quotes"] for row in walk} == {"random walk"}

    # The planted pattern: the agent earns something, the GA champion is promoted with its p-value,
    # and a later day's agent runs the promoted config.
    assert any(row["agent"] not in ("+0.00%", "-0.00%", "-") for row in patterned), out
    promoted = [i for i, row in enumerate(patterned) if row["decision"].startswith("promoted v")]
    assert promoted, out
    assert float(patterned[promoted[0]]["p"]) <= 0.05
    version = patterned[promoted[0]]["decision"].split()[-1]
    assert any(row["config"] == f"active {version}" for row in patterned[promoted[0] + 1 :]), out
    # The random walk: nothing passes the A/B test, the config defaults stay in force.
    assert {row["decision"] for row in walk} == {"keep active"}, out
    assert {row["config"] for row in walk} == {"defaults"}

    instance = DagsterInstance.from_config(env["DAGSTER_HOME"])
    try:
        for asset in ("quote_snapshots", "indicator_frame", "q_table", "ga_population", "ab_report"):
            parsed = {market_and_day(key) for key in instance.get_materialized_partitions(AssetKey(asset))}
            assert len(parsed) == 6, asset
            assert {market.key for market, _ in parsed} == {PATTERNED, RANDOM_WALK}
        assert set(instance.get_dynamic_partitions("markets")) >= {PATTERNED, RANDOM_WALK}
    finally:
        instance.dispose()
    demo_config = Path(env["ROF_DATA_DIR"]) / "demo" / "config.yaml"
    assert "bar_interval: 15m" in demo_config.read_text()
    assert oct(demo_config.stat().st_mode & 0o777) == "0o600"

    # A second demo finds the quotes already stored (and what they are) and only re-materialises.
    second = run_demo(env, "--days", "1")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "generated" not in second.stdout and second.stdout.count(" ok ") == 2
    assert {row["quotes"] for row in table(second.stdout)} == {"momentum (planted)", "random walk"}


@pytest.mark.slow
def test_demo_without_a_state_store_says_so_and_runs_only_what_needs_none(tmp_path):
    env = demo_env(tmp_path, {"STATE_STORAGE_DB_HOST": "127.0.0.1:9", "STATE_STORAGE_DB_USER": "postgres"})
    result = run_demo(env, "--days", "1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "state store UNAVAILABLE" in out and "no agent, optimisation, A/B test or promotion" in out, out
    rows = table(out)
    assert len(rows) == 2 and {row["status"] for row in rows} == {"ok"}
    assert {row["decision"] for row in rows} == {"not run (no state store)"}
    assert {row["config"] for row in rows} == {"-"} and {row["checks"] for row in rows} == {"all passed"}
    instance = DagsterInstance.from_config(env["DAGSTER_HOME"])
    try:
        assert len(instance.get_materialized_partitions(AssetKey("indicator_frame"))) == 2
        assert not instance.get_materialized_partitions(AssetKey("q_table"))
        assert not instance.get_materialized_partitions(AssetKey("ab_report"))
    finally:
        instance.dispose()
