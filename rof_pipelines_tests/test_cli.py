"""The `rof` command's read-only views against a real state store."""

from typer.testing import CliRunner

from rof_pipelines.cli import app


def test_experiments_list_on_an_empty_and_a_migrated_store(pg_database):
    env = {
        "STATE_STORAGE_DB_HOST": pg_database["db_host"],
        "STATE_STORAGE_DB_USER": pg_database["db_user"],
        "STATE_STORAGE_DB_NAME": pg_database["db_name"],
        "STATE_STORAGE_DB_PASSWORD": "",
        "STATE_STORAGE_SCHEMA": "rof_state",
    }
    runner = CliRunner()
    upgraded = runner.invoke(app, ["db", "upgrade"], env=env)
    assert upgraded.exit_code == 0, upgraded.output
    assert "schema=rof_state: at 0005" in upgraded.output
    listed = runner.invoke(app, ["experiments", "list"], env=env)
    assert listed.exit_code == 0 and "no experiments recorded yet" in listed.output
