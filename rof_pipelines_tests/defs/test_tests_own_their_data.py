"""Tests own their data: a representative slice of the suite's writes leaves no trace in the
developer's *configured* state store (what ``load_settings()`` reads from config.yaml and the
environment: the embedded server in data/pg, or e.g. ml_states on 127.0.0.1).

The slice uses a market nobody else uses, so the check holds while other processes (a daemon, a
colleague's test run) write to the configured store at the same time:

- the in-process path most Dagster tests take: quotes -> indicators -> GA -> A/B report -> knowledge
  materialised with resources from the test's config (a GA task and its checkpoints, trials, an
  experiment, maybe an active config);
- the command line (`rof run`, what `rof demo` does) with the test's ROF_CONFIG and DAGSTER_HOME;
- a config-reload sensor tick (a recorded config version).

The same query finds the market in the test's own database afterwards, so it would find a leak.
"""

import secrets
from datetime import date
from typing import Any

import psycopg
import pytest
import yaml
from dagster import build_sensor_context, instance_for_test
from psycopg import sql
from typer.testing import CliRunner

from rof_pipelines.adapters.resources import PostgresStateStoreResource, RofSettings
from rof_pipelines.cli import app
from rof_pipelines.core.market import Market
from rof_pipelines.defs.experiments.assets import ab_report, strategy_knowledge
from rof_pipelines.defs.indicators.assets import indicator_frame
from rof_pipelines.defs.ops.sensors import config_reload_sensor
from rof_pipelines.defs.optimisation.assets import ga_population
from rof_pipelines.defs.quotes.assets import quote_snapshots
from rof_pipelines.settings import StateStorageConfig, load_settings
from rof_pipelines_tests.defs.support import fill_quotes, materialize_market_day

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MARKET = Market.parse(f"binance:OWN{secrets.token_hex(3).upper()}USDT")  # nobody else's market
DAY, CLI_DAY = date(2026, 11, 20), date(2026, 11, 21)
ASSETS = [quote_snapshots, indicator_frame, ga_population, ab_report, strategy_knowledge]
SMALL_GA = {"generations": 2, "population_size": 8, "workers": 1}


def _conninfo(config: StateStorageConfig) -> dict[str, Any]:
    return {
        "host": config.host,
        "port": config.port,
        "user": config.db_user,
        "password": config.db_password.get_secret_value() or None,
        "dbname": config.db_name,
        "connect_timeout": 3,
    }


def rows_mentioning(config: StateStorageConfig, needle: str) -> dict[str, int] | str:
    """Rows per table of the store's schema whose text holds ``needle``; a reason string when the
    store cannot be read (not running, unreachable): then nothing can have been written to it either."""
    if config.embedded:
        from rof_pipelines.adapters.embedded_pg import server_for

        if not server_for(config).is_serving():
            return f"embedded server in {config.resolved_embedded_dir()} not running"
    try:
        with psycopg.connect(**_conninfo(config)) as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = %s AND table_type = 'BASE TABLE'",
                    (config.schema_name,),
                )
            ]
            counts = {}
            for table in tables:
                query = sql.SQL("SELECT count(*) FROM {}.{} AS t WHERE t::text LIKE %s").format(
                    sql.Identifier(config.schema_name), sql.Identifier(table)
                )
                counts[table] = conn.execute(query, (f"%{needle}%",)).fetchone()[0]
            return {table: n for table, n in counts.items() if n}
    except psycopg.Error as exc:
        return f"unreachable: {type(exc).__name__}: {str(exc).strip()[:200]}"


def test_the_suites_writes_stay_out_of_the_configured_state_store(tmp_path, state_storage, monkeypatch):
    configured = load_settings().state_storage  # the developer's config.yaml + environment
    before = rows_mentioning(configured, MARKET.pair)
    assert not isinstance(before, dict) or before == {}, f"{MARKET.key} already in {configured.describe()}"

    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "storage": {
                    "data_dir": str(tmp_path / "data"),
                    "quote_store": "parquet",
                    "markets": [MARKET.key],
                },
                "state_storage": state_storage,
                "ai_config": {"rl": {"episodes": 2, "fee": 0.0, "slippage": 0.0}},
                "ab_tests": {"experiment": {"ga": {"min_population": 8}}, "folds": 2, "n_boot": 200},
            }
        )
    )
    fill_quotes(config_path, MARKET, CLI_DAY, days_before=2)  # both days, and the warm-up before them
    with instance_for_test() as instance:
        result = materialize_market_day(
            config_path,
            instance,
            ASSETS,
            MARKET,
            DAY,
            run_config={"ops": {"ga_population": {"config": SMALL_GA}}},
        )
        assert result.success

        resource = RofSettings(config_path=str(config_path))
        resources = {"settings": resource, "state_store": PostgresStateStoreResource(settings=resource)}
        with build_sensor_context(instance=instance, resources=resources) as context:
            config_reload_sensor(context)

    monkeypatch.setenv("ROF_CONFIG", str(config_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    ran = CliRunner().invoke(
        app,
        ["run", "-m", MARKET.key, "-d", CLI_DAY.isoformat(), "--ga-generations", "2", "--ga-population", "8"],
    )
    assert ran.exit_code == 0, ran.output

    own = rows_mentioning(load_settings(config_path, environ={}).state_storage, MARKET.pair)
    assert isinstance(own, dict) and {"ab_experiments", "experiment_trials"} <= set(own), own
    after = rows_mentioning(configured, MARKET.pair)
    assert not isinstance(after, dict) or after == {}, (
        f"tests wrote {MARKET.key} into the configured state store {configured.describe()}: {after}"
    )
