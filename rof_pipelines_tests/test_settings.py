import os
from datetime import timedelta
from pathlib import Path

import pytest

from rof_pipelines.errors import ConfigError
from rof_pipelines.settings import DEFAULT_CONFIG_PATH, ENV_OVERRIDES, load_settings

SECRET = "s3cr3t-pw-do-not-print"


def test_project_config_has_every_seed_section_and_defaults():
    settings = load_settings(DEFAULT_CONFIG_PATH, environ={})
    assert settings.system_setup.worker_pool.ab_optimizer.max_workers == 12
    assert settings.system_setup.worker_pool.task_worker.task_timeout == timedelta(seconds=30)
    assert settings.storage.postgres.db_name == "quotes"
    assert settings.state_storage.schema_name == "public"
    assert settings.ab_tests.data_period.span == timedelta(hours=24)
    assert settings.ab_tests.state_management.checkpoint_interval == 5
    assert settings.ai_config.kelly.window_trades == 200
    assert settings.ai_config.rl.gamma == 0.85
    assert settings.ai_config.allow_trading is False
    assert settings.storage.quote_store == "parquet"


def test_every_seed_variable_overrides_its_key():
    environ = {
        "LOG_LEVEL": "DEBUG",
        "METRICS_PORT": "9100",
        "PPROF_PORT": "9101",
        "DB_USER": "u1",
        "DB_PASSWORD": "p1",
        "DB_HOST": "db.example:6543",
        "DB_NAME": "n1",
        "CLICKHOUSE_DB_USER": "u2",
        "CLICKHOUSE_DB_PASSWORD": "p2",
        "CLICKHOUSE_DB_HOST": "ch:9000",
        "CLICKHOUSE_DB_NAME": "n2",
        "RABBITMQ_URL": "amqp://a:b@mq:5672/",
        "ENABLE_AB_TESTS": "false",
        "AB_TEST_EXCHANGE": "okx",
        "AB_TEST_PAIR": "btcusdt",
        "STATE_STORAGE_DB_USER": "u3",
        "STATE_STORAGE_DB_PASSWORD": "p3",
        "STATE_STORAGE_DB_HOST": "st:5433",
        "STATE_STORAGE_DB_NAME": "n3",
        "STATE_STORAGE_SCHEMA": "ml",
        "STATE_STORAGE_MIGRATIONS_PATH": "/opt/migrations",
        "STATE_STORAGE_AUTO_MIGRATE": "false",
    }
    assert set(environ) <= set(ENV_OVERRIDES)
    s = load_settings(DEFAULT_CONFIG_PATH, environ=environ)
    assert (s.system_setup.log_level, s.system_setup.metrics_port, s.system_setup.pprof_port) == (
        "debug",
        9100,
        9101,
    )
    assert (s.storage.postgres.db_user, s.storage.postgres.host, s.storage.postgres.port) == (
        "u1",
        "db.example",
        6543,
    )
    assert s.storage.postgres.db_password.get_secret_value() == "p1"
    assert (s.storage.clickhouse.db_user, s.storage.clickhouse.db_name) == ("u2", "n2")
    assert s.storage.rabbitmq.url.get_secret_value() == "amqp://a:b@mq:5672/"
    assert s.ab_tests.enabled is False and s.ab_tests.market == "okx:BTCUSDT"
    assert (s.state_storage.db_user, s.state_storage.port, s.state_storage.db_name) == ("u3", 5433, "n3")
    assert s.state_storage.schema_name == "ml" and s.state_storage.auto_migrate is False
    assert s.state_storage.migrations_path == Path("/opt/migrations")


def test_invalid_file_value_is_refused_with_key_path(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "system_setup:\n  worker_pool:\n    ab_optimizer:\n      max_workers: 0\n      queue_size: 1\n      task_timeout: 'soon'\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    text = str(err.value)
    assert (
        "system_setup.worker_pool.ab_optimizer.max_workers: Input should be greater than or equal to 1"
        in text
    )
    assert "system_setup.worker_pool.ab_optimizer.task_timeout: not a duration: 'soon'" in text


def test_unknown_key_and_bad_types_are_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "storage:\n  quote_store: mongo\n  markts: []\nai_config:\n  kelly:\n    window_size: 'lots'\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    text = str(err.value)
    assert "storage.quote_store: Input should be 'parquet', 'postgres' or 'clickhouse'" in text
    assert "storage.markts: unknown key" in text
    assert "ai_config.kelly: window_size must be a positive whole number of trades" in text


def test_invalid_environment_value_names_the_variable():
    with pytest.raises(
        ConfigError, match=r"state_storage.schema: .* \(from environment variable STATE_STORAGE_SCHEMA\)"
    ):
        load_settings(DEFAULT_CONFIG_PATH, environ={"STATE_STORAGE_SCHEMA": "x; drop table y"})
    with pytest.raises(ConfigError, match=r"storage.postgres.db_host: port out of range"):
        load_settings(DEFAULT_CONFIG_PATH, environ={"DB_HOST": "localhost:99999"})


def test_markets_are_normalised_and_validated():
    s = load_settings(
        DEFAULT_CONFIG_PATH, environ={"ROF_MARKETS": "Binance:tonusdt, okx:BTCUSDT binance:TONUSDT"}
    )
    assert s.storage.markets == ["binance:TONUSDT", "okx:BTCUSDT"]
    with pytest.raises(ConfigError, match=r"storage\.markets: market must look like 'exchange:PAIR'"):
        load_settings(DEFAULT_CONFIG_PATH, environ={"ROF_MARKETS": "nonsense"})


def test_secrets_never_print():
    environ = {
        "DB_PASSWORD": SECRET,
        "STATE_STORAGE_DB_PASSWORD": SECRET,
        "CLICKHOUSE_DB_PASSWORD": SECRET,
        "RABBITMQ_URL": f"amqp://user:{SECRET}@mq:5672/",
    }
    s = load_settings(DEFAULT_CONFIG_PATH, environ=environ)
    for text in (
        repr(s),
        str(s),
        str(s.redacted()),
        s.storage.postgres.describe(),
        s.state_storage.describe(),
        s.storage.rabbitmq.describe(),
        s.storage.clickhouse.describe(),
        s.model_dump_json(),
    ):
        assert SECRET not in text
    assert s.storage.postgres.conninfo_kwargs()["password"] == SECRET
    # ... nor in a validation error about the same section
    with pytest.raises(ConfigError) as err:
        load_settings(DEFAULT_CONFIG_PATH, environ={**environ, "DB_HOST": ""})
    assert SECRET not in str(err.value)


def test_secret_in_an_invalid_url_field_is_not_echoed(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(f"storage:\n  rabbitmq:\n    url: ['{SECRET}']\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    assert "storage.rabbitmq.url" in str(err.value) and SECRET not in str(err.value)


def test_missing_explicit_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_settings(tmp_path / "nope.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad, environ={})


def test_environment_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv("DB_NAME", "first")
    assert load_settings(DEFAULT_CONFIG_PATH).storage.postgres.db_name == "first"
    monkeypatch.setenv("DB_NAME", "second")
    assert load_settings(DEFAULT_CONFIG_PATH).storage.postgres.db_name == "second"


def test_rof_config_empty_or_dev_null_means_defaults(tmp_path):
    assert load_settings(environ={"ROF_CONFIG": ""}).source_path == DEFAULT_CONFIG_PATH
    quiet = load_settings(environ={"ROF_CONFIG": os.devnull})
    assert quiet.storage.markets == ["binance:TONUSDT", "binance:BTCUSDT"]
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_settings(environ={"ROF_CONFIG": str(empty)}).source_path == empty
    with pytest.raises(ConfigError, match=r"configuration file not found: .*nope.yaml \(from ROF_CONFIG\)"):
        load_settings(environ={"ROF_CONFIG": str(tmp_path / "nope.yaml")})


def test_durations_keep_their_usual_forms_within_bounds():
    settings = load_settings(
        DEFAULT_CONFIG_PATH,
        environ={},
        overrides={"system_setup": {"circuit_breaker": {"call_timeout": "250ms", "reset_timeout": "36525d"}}},
    )
    assert settings.system_setup.circuit_breaker.call_timeout == timedelta(milliseconds=250)
    assert settings.system_setup.circuit_breaker.reset_timeout == timedelta(days=36525)
    with pytest.raises(
        ConfigError, match=r"circuit_breaker.reset_timeout: duration too long \(at most 36525d\)"
    ):
        load_settings(
            DEFAULT_CONFIG_PATH,
            environ={},
            overrides={"system_setup": {"circuit_breaker": {"reset_timeout": "36526d"}}},
        )


def test_credentials_in_plain_fields_are_masked_when_shown():
    dsn = f"clickhouse://reader:{SECRET}@ch.example:8443/quotes"
    s = load_settings(DEFAULT_CONFIG_PATH, environ={"CLICKHOUSE_DSN": dsn})
    assert s.storage.clickhouse.describe() == "clickhouse://reader:***@ch.example:8443/quotes"
    assert SECRET not in str(s.redacted())
    assert s.redacted()["storage"]["clickhouse"]["dsn"] == "clickhouse://reader:***@ch.example:8443/quotes"


@pytest.mark.parametrize("cron", ["0 1 * * *", "30 3 * * *", "@daily", "0 0 * * MON-FRI", "*/90 * * * *"])
def test_cron_strings_the_scheduler_runs_are_accepted(cron):
    config = load_settings(
        overrides={"system_setup": {"schedules": {"state_backup": {"cron": cron}}}}, environ={}
    )
    assert config.system_setup.schedules.state_backup.cron == cron


@pytest.mark.parametrize("cron", ["* * * * * *", "0 1 * *", "61 * * * *", "0 0 30 2 *", "bad", ""])
def test_cron_strings_the_scheduler_refuses_are_refused(cron):
    with pytest.raises(ConfigError, match=r"state_backup\.cron.*not a valid cron expression"):
        load_settings(overrides={"system_setup": {"schedules": {"state_backup": {"cron": cron}}}}, environ={})


def test_config_defaults_and_limits_are_the_cores():
    from rof_pipelines.core.abtest import DecisionRule
    from rof_pipelines.core.defaults import GA, KELLY, RL
    from rof_pipelines.core.ga.engine import GASettings
    from rof_pipelines.core.kelly import KellyParams
    from rof_pipelines.core.rl.agent import RLParams
    from rof_pipelines.settings import ABTestsConfig, AIConfig, GAConfig, StateManagementConfig

    ga, core_ga = GAConfig(), GASettings()
    assert {name: getattr(ga, name) for name in GA if name != "checkpoint_interval"} == {
        name: getattr(core_ga, name) for name in GA if name != "checkpoint_interval"
    }
    assert StateManagementConfig().checkpoint_interval == core_ga.checkpoint_interval
    ai, rl = AIConfig(), RLParams()
    assert {name: getattr(ai.rl, name) for name in RL} == {name: getattr(rl, name) for name in RL}
    assert KellyParams.from_settings(ai.kelly) == KellyParams() == rl.kelly
    assert set(KELLY) <= set(vars(KellyParams()))
    ab, rule = ABTestsConfig(), DecisionRule()
    names = ("alpha", "min_effect", "min_periods", "use_dsr", "n_boot")
    assert {n: getattr(ab, n) for n in names} == {n: getattr(rule, n) for n in names}
    assert tuple(ab.tests) == rule.tests
    # One limit, two checks: config.yaml refuses what GASettings refuses, with the same words.
    with pytest.raises(ConfigError, match=r"population_size.*greater than or equal to 4"):
        load_settings(overrides={"ab_tests": {"experiment": {"ga": {"population_size": 3}}}}, environ={})
    with pytest.raises(ValueError, match="population_size must be >= 4, got 3"):
        GASettings(population_size=3, min_population=4)
    with pytest.raises(ValueError, match=r"need min_population \(20\) <= population_size \(10\)"):
        GASettings(population_size=10)
