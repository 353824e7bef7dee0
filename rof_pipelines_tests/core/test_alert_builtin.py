"""The ready-made rules: each compiles with its defaults and with tuned tunables, fires on a planted
figure set and not on a healthy one, and its default message names only its kind's figures."""

from datetime import timedelta

import pytest

from rof_pipelines.alerting_settings import AlertingConfig, BuiltinRules
from rof_pipelines.core.alerts.builtin import BUILTIN_RULES, builtin_spec, cel_double, cel_string
from rof_pipelines.core.alerts.expressions import compile_rule
from rof_pipelines.core.alerts.figures import FIGURES
from rof_pipelines.core.alerts.templates import render
from rof_pipelines.errors import AlertRuleError

# rule -> (healthy figures, failing figures) under the default tunables
PLANTED: dict[str, tuple[dict, dict]] = {
    "run_failed": (
        {"job": "ga_job", "pool": "ga", "market": "", "last_status": "SUCCESS", "last_run_id": "r1"},
        {
            "job": "ga_job",
            "pool": "ga",
            "market": "binance:BTCUSDT",
            "last_status": "FAILURE",
            "last_run_id": "r2",
            "last_error": "boom",
        },
    ),
    "sensor_failing": (
        {"sensor": "s", "workerpool_sensor_consecutive_failures": 2},
        {"sensor": "s", "workerpool_sensor_consecutive_failures": 3},
    ),
    "breaker_open": (
        {"service": "rabbitmq", "process": "sensor", "state": "half_open", "open_seconds": 0.0},
        {"service": "rabbitmq", "process": "sensor", "state": "open", "open_seconds": 12.0},
    ),
    "run_queue_waiting": (
        {"pool": "ga", "workerpool_oldest_queued_seconds": 600.0},
        {"pool": "ga", "workerpool_oldest_queued_seconds": 601.0},
    ),
    "daemon_heartbeat_stale": (
        {"daemon": "SENSOR", "workerpool_daemon_heartbeat_age_seconds": 5.0},
        {"daemon": "SENSOR", "workerpool_daemon_heartbeat_age_seconds": 121.0},
    ),
    "stale_data": (
        {"market": "binance:BTCUSDT", "data_manager_stale_open_seconds": 60.0},
        {"market": "binance:BTCUSDT", "data_manager_stale_open_seconds": 7300.0, "calendar": "24/7"},
    ),
    "ga_regression": (
        {"market": "m", "ga_champion_fitness": 1.0, "ga_previous_champion_fitness": 1.1},
        {"market": "m", "ga_champion_fitness": 0.7, "ga_previous_champion_fitness": 1.0},
    ),
    "drawdown": (
        {"market": "m", "rl_agent_active_max_drawdown": 0.1},
        {"market": "m", "rl_agent_active_max_drawdown": 0.35},
    ),
    "config_refused": (
        {"config_refused": False, "config_refused_error": ""},
        {"config_refused": True, "config_refused_error": "ga.population: must be >= 2"},
    ),
    "promotion": (
        {"experiment_id": "e1", "market": "m", "winner": "B", "age_seconds": 90000.0},
        {"experiment_id": "e1", "market": "m", "winner": "B", "age_seconds": 3600.0},
    ),
}

TUNED: dict[str, dict] = {
    "run_failed": {"jobs": ["ga_job", 'rl\'s "job"'], "pools": ["ga"]},
    "sensor_failing": {"consecutive": 5},
    "breaker_open": {"longer_than_s": 60.0},
    "run_queue_waiting": {"longer_than_s": 30},
    "daemon_heartbeat_stale": {"older_than_s": 1e20},
    "stale_data": {"after_s": 900.0, "markets": ["binance:BTCUSDT"]},
    "ga_regression": {"by": 0},
    "drawdown": {"beyond": 0.5},
    "config_refused": {},
    "promotion": {"within_s": 60.0},
}


def test_the_rule_names_are_those_of_the_settings_models():
    assert set(BUILTIN_RULES) == set(BuiltinRules.model_fields) == set(PLANTED) == set(TUNED)


@pytest.mark.parametrize("name", sorted(BUILTIN_RULES))
def test_each_builtin_compiles_and_fires_only_on_its_planted_condition(name):
    healthy, failing = PLANTED[name]
    rule = compile_rule(builtin_spec(name, {"labels": {}}))
    assert rule.spec.builtin and rule.spec.each == BUILTIN_RULES[name].each
    assert rule.evaluate(failing) is True
    assert rule.evaluate(healthy) is False


@pytest.mark.parametrize("name", sorted(BUILTIN_RULES))
def test_each_builtin_compiles_with_tuned_params(name):
    spec = builtin_spec(
        name, {"labels": {"team": "quant"}, "severity": "info", "cooldown_s": 60.0, **TUNED[name]}
    )
    rule = compile_rule(spec)
    assert spec.severity == "info" and spec.cooldown_s == 60.0 and spec.labels == {"team": "quant"}
    assert isinstance(rule.evaluate({**PLANTED[name][1], "job": "ga_job"}), bool)


@pytest.mark.parametrize("name", sorted(BUILTIN_RULES))
def test_default_messages_use_only_the_kinds_figures(name):
    rule = BUILTIN_RULES[name]
    spec = builtin_spec(name, {"labels": {}})
    assert spec.message == rule.message
    compile_rule(spec)  # check_template ran on it
    text = render(spec.message, PLANTED[name][1])
    assert "{" not in text
    if name == "run_failed":
        assert text == "job ga_job failed (market 'binance:BTCUSDT', pool ga): run r2: boom"


def test_tuned_thresholds_move_the_condition():
    failing = {"sensor": "s", "workerpool_sensor_consecutive_failures": 3}
    assert not compile_rule(builtin_spec("sensor_failing", {"consecutive": 5})).evaluate(failing)
    pool = {"pool": "ga", "workerpool_oldest_queued_seconds": 31.0}
    assert compile_rule(builtin_spec("run_queue_waiting", {"longer_than_s": 30})).evaluate(pool)
    assert (
        builtin_spec("run_queue_waiting", {"longer_than_s": 30}).expr
        == "workerpool_oldest_queued_seconds > 30.0"
    )
    regression = {"ga_champion_fitness": 0.95, "ga_previous_champion_fitness": 1.0}
    assert compile_rule(builtin_spec("ga_regression", {"by": 0})).evaluate(regression)
    assert not compile_rule(builtin_spec("ga_regression", {})).evaluate(regression)
    promo = {"age_seconds": 3600.0}
    assert not compile_rule(builtin_spec("promotion", {"within_s": 60.0})).evaluate(promo)


def test_filters_by_job_pool_and_market():
    spec = builtin_spec("run_failed", {"jobs": ["ga_job"], "pools": ["ga"]})
    assert spec.expr == 'last_status == "FAILURE" && job in ["ga_job"] && pool in ["ga"]'
    rule = compile_rule(spec)
    failing = {"job": "ga_job", "pool": "ga", "last_status": "FAILURE"}
    assert rule.evaluate(failing)
    assert not rule.evaluate({**failing, "job": "rl_job"})
    assert not rule.evaluate({**failing, "pool": "rl"})
    stale = compile_rule(builtin_spec("stale_data", {"markets": ["kraken:ETHUSD"]}))
    assert not stale.evaluate({"market": "binance:BTCUSDT", "data_manager_stale_open_seconds": 1e6})
    assert stale.evaluate({"market": "kraken:ETHUSD", "data_manager_stale_open_seconds": 1e6})


def test_string_tunables_cannot_inject_cel():
    nasty = 'x" || true || "'
    rule = compile_rule(builtin_spec("run_failed", {"jobs": [nasty, 'a\\b\n"c']}))
    assert not rule.evaluate({"job": "other", "pool": "p", "last_status": "FAILURE"})
    assert rule.evaluate({"job": nasty, "pool": "p", "last_status": "FAILURE"})
    assert rule.evaluate({"job": 'a\\b\n"c', "pool": "p", "last_status": "FAILURE"})
    assert cel_string("it's") == '"it\'s"'


def test_double_literals():
    assert [cel_double(v) for v in (300, 0.25, 1e20, 0)] == ["300.0", "0.25", "1e+20", "0.0"]
    with pytest.raises(ValueError):
        cel_double(float("inf"))


def test_for_durations_severities_absent_and_resolved_notices():
    assert builtin_spec("breaker_open", {}).for_s == 300.0
    assert builtin_spec("breaker_open", {"longer_than_s": 42.0}).for_s == 42.0
    assert all(builtin_spec(n, {}).for_s == 0 for n in BUILTIN_RULES if n != "breaker_open")
    assert builtin_spec("run_failed", {}).absent == "keep"
    assert {n for n in BUILTIN_RULES if builtin_spec(n, {}).absent == "keep"} == {"run_failed"}
    assert builtin_spec("promotion", {}).notify_resolved is False
    assert builtin_spec("promotion", {}).severity == "info"
    assert builtin_spec("drawdown", {}).severity == "critical"
    assert (
        builtin_spec("drawdown", {"message": "dd {rl_agent_active_max_drawdown}"}).message
        == "dd {rl_agent_active_max_drawdown}"
    )


def test_unknown_rules_tunables_and_values_are_refused():
    with pytest.raises(AlertRuleError, match="no ready-made rule"):
        builtin_spec("nope", {})
    with pytest.raises(AlertRuleError, match="unknown tunable"):
        builtin_spec("drawdown", {"byond": 0.3})
    with pytest.raises(AlertRuleError, match="not a whole number"):
        builtin_spec("sensor_failing", {"consecutive": 2.5})
    with pytest.raises(AlertRuleError, match="not a finite number"):
        builtin_spec("drawdown", {"beyond": float("nan")})
    with pytest.raises(AlertRuleError, match="unknown figure"):
        compile_rule(builtin_spec("drawdown", {"message": "{workerpool_oldest_queued_seconds}"}))


def test_the_settings_params_feed_builtin_spec():
    """What alerting_settings hands over (durations as ``<field>_s``) builds every rule."""
    config = AlertingConfig.model_validate(
        {
            "cooldown": "1m",
            "rules": {
                "breaker_open": {"longer_than": "90s", "labels": {"team": "ops"}},
                "stale_data": {"after": "30m", "markets": ["binance:BTCUSDT"]},
                "sensor_failing": {"consecutive": 7, "severity": "critical"},
                "promotion": {"enabled": False},
            },
        }
    )
    specs = {spec.name: spec for spec in config.rule_specs()}
    assert set(specs) == set(BUILTIN_RULES) - {"promotion"}
    assert specs["breaker_open"].for_s == 90.0 and specs["breaker_open"].labels == {"team": "ops"}
    assert (
        specs["stale_data"].expr
        == 'data_manager_stale_open_seconds > 1800.0 && market in ["binance:BTCUSDT"]'
    )
    assert specs["sensor_failing"].severity == "critical"
    assert specs["sensor_failing"].expr == "workerpool_sensor_consecutive_failures >= 7"
    assert all(spec.cooldown_s == timedelta(minutes=1).total_seconds() for spec in specs.values())
    assert len(config.compiled_rules()) == len(specs)


def test_every_planted_figure_is_documented():
    for name, (healthy, failing) in PLANTED.items():
        figures = FIGURES[BUILTIN_RULES[name].each] | FIGURES["global"]
        assert set(healthy) | set(failing) <= set(figures), name
