"""Alert rule expressions and message templates: what compiles, what is refused (with the rule's name
and position), and how evaluation fails when it cannot decide."""

import pytest

from rof_pipelines.core.alerts.expressions import (
    ALLOWED_FUNCTIONS,
    MAX_EXPR_CHARS,
    CompiledRule,
    compile_rule,
)
from rof_pipelines.core.alerts.figures import FIGURES, KINDS, variables_for
from rof_pipelines.core.alerts.model import RuleSpec
from rof_pipelines.core.alerts.templates import check_template, render
from rof_pipelines.errors import AlertRuleError, ConfigError

MARKET = {
    "market": "binance:BTCUSDT",
    "exchange": "binance",
    "calendar": "24/7",
    "ga_best_fitness": 0.05,
    "ga_mean_fitness": 0.01,
    "data_manager_stale_open_seconds": 10.0,
}


def rule(expr: str, each: str = "market", name: str = "my_rule", **kw) -> CompiledRule:
    return compile_rule(RuleSpec(name=name, expr=expr, each=each, **kw))


def refused(expr: str, each: str = "market", name: str = "bad_rule", **kw) -> AlertRuleError:
    with pytest.raises(AlertRuleError) as info:
        rule(expr, each=each, name=name, **kw)
    err = info.value
    assert err.rule == name
    assert name in str(err)
    assert isinstance(err, ConfigError)
    return err


def test_a_valid_rule_compiles_and_evaluates_on_planted_figures():
    r = rule('ga_best_fitness < 0.1 && exchange == "binance"', message="{market}: {ga_best_fitness:.2f}")
    assert r.evaluate(MARKET) is True
    assert r.evaluate({**MARKET, "ga_best_fitness": 0.4}) is False
    assert r.evaluate({**MARKET, "exchange": "kraken"}) is False
    assert r.names == {"ga_best_fitness", "exchange"}


def test_global_rules_read_the_collections_with_comprehensions():
    r = rule("markets.exists(m, markets[m].ga_best_fitness < 0.1) && markets_known > 0", each="global")
    markets = {"a:X": {"ga_best_fitness": 0.5}, "b:Y": {"ga_best_fitness": 0.05}}
    assert r.evaluate({"markets": markets, "markets_known": 2}) is True
    markets["b:Y"]["ga_best_fitness"] = 0.3
    assert r.evaluate({"markets": markets, "markets_known": 2}) is False
    # the comprehension's bound name is no figure and not refused: "m" is not in variables_for
    assert "m" not in variables_for("global")


def test_a_syntax_error_names_the_rule_line_and_column():
    err = refused('ga_best_fitness <\n  && market == "x"')
    assert (err.line, err.column) == (2, 3)
    assert "Syntax error" in err.reason
    assert "expecting {" not in err.reason  # cel's token list is not echoed


def test_parse_errors_do_not_echo_a_long_expression():
    expr = "ga_best_fitness < 1.0 && " * 60 + "("
    err = refused(expr)
    assert err.line == 1 and err.column is not None
    assert len(str(err)) < 300
    assert "ga_best_fitness < 1.0 && ga_best_fitness" not in str(err)


@pytest.mark.parametrize(
    ("expr", "column"),
    [
        ("().__class__", 4),
        ("market.__class__", 8),
        ("market._secret == 1", 8),
        ("_private > 1", 1),
        ("market.a__b > 1", 8),
        ('ga_best_fitness > 0.1 || market.__class__.__bases__ == ""', 33),
    ],
)
def test_private_names_and_attribute_access_are_refused(expr, column):
    err = refused(expr)
    assert "private names is not allowed" in err.reason
    assert (err.line, err.column) == (1, column)


def test_underscores_inside_string_literals_are_only_text():
    r = rule('market == "__class__" || market == \'_x\' || market == r"""__y"""')
    assert r.evaluate({**MARKET, "market": "__class__"}) is True
    assert r.evaluate(MARKET) is False


def test_a_comment_is_not_read_as_a_name():
    assert rule("// __class__ and _private here are only a comment\nga_best_fitness > 0.0").evaluate(MARKET)


def test_imports_are_refused():
    err = refused("import os")
    assert "reserved identifier" in err.reason
    assert (err.line, err.column) == (1, 1)
    err = refused('market == "x" || __import__("os")')
    assert "private" in err.reason and err.column == 18


def test_huge_exponents_are_refused():
    err = refused("9**9**9 > 1")
    assert "Syntax error" in err.reason
    assert (err.line, err.column) == (1, 3)


def test_unknown_names_are_refused_with_their_first_position_and_close_matches():
    err = refused("ga_best_fitness > 0.1 && champion > 1.0 && champion < 2.0")
    assert "unknown name 'champion'" in err.reason
    assert (err.line, err.column) == (1, 26)
    assert "rof alerts figures" in err.reason  # where the whole list is, not the list itself
    err = refused("ga_best_fitnes < 0.5")
    assert "did you mean ga_best_fitness" in err.reason and len(str(err)) < 300
    # a figure of another kind is unknown here
    err = refused("workerpool_oldest_queued_seconds > 1.0", each="market")
    assert "unknown name 'workerpool_oldest_queued_seconds'" in err.reason
    assert rule("workerpool_oldest_queued_seconds > 1.0", each="pool").evaluate(
        {"workerpool_oldest_queued_seconds": 2.0}
    )


def test_unknown_functions_are_refused():
    err = refused("market.lowerAscii() == 'x'")
    assert "function 'lowerAscii' is not available" in err.reason
    assert (err.line, err.column) == (1, 8)
    err = refused("ga_best_fitness > 0.1 && bool(market)")
    assert "function 'bool'" in err.reason and err.column == 26
    err = refused("markets.all(k, v, v.ga_best_fitness > 1.0)", each="global")  # two-variable form
    assert "function 'all'" in err.reason
    err = refused("math.abs(ga_best_fitness) > 1.0")
    assert "not available" in err.reason or "unknown name" in err.reason


@pytest.mark.parametrize(
    "expr",
    [
        "size(market) > 3 && market.size() > 3 && size(markets) >= 0",
        'int(ga_best_fitness) == 0 && uint(1) == 1u && double(1) == 1.0 && string(1) == "1"',
        'bytes("a") == b"a" && type(1) == int && dyn(1) == 1',
        'market.contains("BTC") && market.startsWith("binance") && market.endsWith("USDT")',
        'market.matches("^binance:[A-Z]+$")',
        'timestamp("2024-01-01T05:06:07.008Z").getHours() == 5 && duration("1m") > duration("1s")',
        'timestamp("2024-02-03T05:06:07.008Z").getFullYear() == 2024',
        'timestamp("2024-02-03T05:06:07.008Z").getMonth() == 1',
        'timestamp("2024-02-03T05:06:07.008Z").getDayOfYear() == 33',
        'timestamp("2024-02-03T05:06:07.008Z").getDayOfMonth() == 2',
        'timestamp("2024-02-03T05:06:07.008Z").getDate() == 3',
        'timestamp("2024-02-03T05:06:07.008Z").getDayOfWeek() == 6',
        'timestamp("2024-02-03T05:06:07.008Z").getMinutes() == 6',
        'timestamp("2024-02-03T05:06:07.008Z").getSeconds() == 7',
        'timestamp("2024-02-03T05:06:07.008Z").getMilliseconds() == 8',
        "has(markets.x) || !has(markets.y) ? true : false",
        "[1, 2, 3].map(x, x * 2).filter(x, x > 2).exists_one(x, x == 6) && 7 % 2 == 1 && -1 < 0",
        '"a" in ["a", "b"] && [1, 2].all(x, x > 0) && 4 / 2 - 1 + 1 != 3 && 1 <= 2 && 2 >= 1',
    ],
)
def test_every_whitelisted_function_exists_and_runs(expr):
    assert rule(expr).evaluate({**MARKET, "markets": {}}) is True


def test_the_whitelist_is_what_those_expressions_cover():
    src = " ".join(test_every_whitelisted_function_exists_and_runs.pytestmark[0].args[1])
    assert all(name in src for name in ALLOWED_FUNCTIONS)


def test_an_overlong_expression_is_refused_with_the_position_of_the_limit():
    err = refused("ga_best_fitness > 0.1 || " * 400 + "true")  # 10,000 characters
    assert "at most 2000" in err.reason
    assert (err.line, err.column) == (1, MAX_EXPR_CHARS + 1)
    assert len(str(err)) < 200


def test_deep_nesting_is_refused():
    err = refused("(" * 40 + "ga_best_fitness > 0.1" + ")" * 40)
    assert "nested more than 32" in err.reason and err.column == 33
    err = refused("markets.exists(a, markets.exists(b, markets.exists(c, a == b && b == c)))", each="global")
    assert "comprehensions nested" in err.reason and err.column == 45


def test_a_non_bool_result_is_refused_at_evaluation_with_a_clear_error():
    r = rule("ga_best_fitness * 2.0")
    with pytest.raises(
        ValueError, match=r"alert rule 'my_rule': the expression gave float 0\.1, not true/false"
    ):
        r.evaluate(MARKET)
    with pytest.raises(ValueError, match="gave str"):
        rule("market").evaluate(MARKET)


def test_evaluation_failures_are_short_value_errors_naming_the_rule():
    r = rule("ga_best_fitness > 0.1")
    with pytest.raises(ValueError, match="alert rule 'my_rule': figure 'ga_best_fitness' is not set"):
        r.evaluate({"market": "x"})
    with pytest.raises(ValueError, match="division by zero"):
        rule("1 / 0 > 0").evaluate(MARKET)
    with pytest.raises(ValueError, match="type error") as info:
        rule("ga_best_fitness - 1 > 0.0").evaluate(MARKET)  # CEL does not coerce int and double
    assert len(str(info.value)) < 200
    with pytest.raises(ValueError, match="no key or field"):
        rule('markets["nope"].ga_best_fitness > 1.0', each="global").evaluate({"markets": {}})


def test_comparisons_across_int_and_double_work_arithmetic_needs_double_literals():
    assert rule("ga_best_fitness > 0").evaluate(MARKET)  # comparison: fine
    assert rule("ga_best_fitness - 1.0 < 0.0").evaluate(MARKET)
    assert rule("failures_in_a_row >= 3", each="job").evaluate({"failures_in_a_row": 3})


def test_each_must_be_a_documented_kind():
    err = refused("true", each="planet")
    assert "each" in err.reason and "planet" in err.reason
    for kind in KINDS:
        assert rule("true", each=kind).evaluate({})


def test_an_empty_expression_is_refused():
    assert "empty" in refused("   ").reason


# --- templates ------------------------------------------------------------------------------------


def test_a_rule_with_an_invalid_message_is_refused_at_compile():
    err = refused("true", message="{market}: {nope}")
    assert "unknown figure {nope}" in err.reason
    assert (err.line, err.column) == (1, 11)


@pytest.mark.parametrize(
    ("template", "column", "reason"),
    [
        ("{market.__class__}", 1, "plain figure name"),
        ("x {market[0]}", 3, "plain figure name"),
        ("{market!r}", 1, "conversions"),
        ("{_x}", 1, "private"),
        ("{}", 1, "empty placeholder"),
        ("{0}", 1, "plain figure name"),
        ("{{literal}} {market:{ga_best_fitness}}", 13, "nested fields"),
        ("{{x}} {ga_best_fitness:.2q}", 7, "does not suit a double"),
        ("ok {market:d}", 4, "does not suit a string"),
    ],
)
def test_check_template_refuses_with_the_placeholder_column(template, column, reason):
    with pytest.raises(AlertRuleError) as info:
        check_template("tpl_rule", template, "market")
    assert info.value.rule == "tpl_rule"
    assert reason in info.value.reason
    assert (info.value.line, info.value.column) == (1, column)


def test_check_template_positions_on_later_lines_and_malformed_braces():
    with pytest.raises(AlertRuleError) as info:
        check_template("r", "first line\n  then {ghost}", "market")
    assert (info.value.line, info.value.column) == (2, 8)
    with pytest.raises(AlertRuleError, match="Single '}'"):
        check_template("r", "oops }", "market")


def test_check_template_accepts_every_figure_of_the_kind():
    for kind in KINDS:
        check_template("r", " ".join("{%s}" % name for name in FIGURES[kind]), kind)  # noqa: UP031
    check_template("r", "{ga_best_fitness:.2f} {markets_known:d} {market:>10} {{braces}}", "market")


def test_render_fills_figures_and_never_raises():
    template = "{market}: best fitness {ga_best_fitness:.2f} {{ok}}"
    assert render(template, MARKET) == "binance:BTCUSDT: best fitness 0.05 {ok}"
    assert render(template, {"market": "m"}) == "m: best fitness ? {ok}"  # missing -> ?
    assert render(template, {"market": "m", "ga_best_fitness": None}) == "m: best fitness ? {ok}"
    # a spec that does not suit the value: str(value)
    assert render("{ga_best_fitness:.2f}", {"ga_best_fitness": "n/a"}) == "n/a"
    assert render("broken {", {}) == "broken {"
    long = render("{market}", {"market": "x" * 5000})
    assert len(long) == 2000 and long.endswith("…")
