"""docs/alerting.md against the code: every ``alerting:`` example loads through the real config models,
every refused example is refused with the error the guide shows, and every rule, tunable, figure,
channel type and key the models have is documented, so the guide cannot drift from the code."""

import re
from pathlib import Path

import pytest
import yaml

from rof_pipelines import alerting_settings as models
from rof_pipelines.core.alerts.builtin import BUILTIN_RULES
from rof_pipelines.core.alerts.figures import FIGURES
from rof_pipelines.errors import ConfigError
from rof_pipelines.settings import PROJECT_ROOT, Settings, load_settings

GUIDE = PROJECT_ROOT / "docs" / "alerting.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced block, in order."""
    return [(lang, text) for lang, text in _FENCE.findall(GUIDE.read_text())]


def loadable() -> list[str]:
    return [text for lang, text in blocks() if lang == "yaml" and text.startswith("alerting:")]


def refused() -> list[tuple[str, str]]:
    """(yaml, the error text the guide shows under it) of every ``# refused`` example."""
    found = blocks()
    out = []
    for (lang, text), (next_lang, shown) in zip(found, [*found[1:], ("", "")], strict=True):
        if lang == "yaml" and text.startswith("# refused"):
            assert next_lang == "text", f"a refused example needs the error under it:\n{text}"
            out.append((text, shown.strip()))
    return out


def load(text: str, tmp_path: Path) -> Settings:
    """The block as the only config (an empty config.yaml plus the block as overrides)."""
    empty = tmp_path / "config.yaml"
    empty.write_text("")
    overrides = yaml.safe_load(text)
    return load_settings(empty, environ={}, overrides=overrides)


@pytest.fixture
def secrets_set(monkeypatch):
    """Every ``${VARIABLE}`` the guide uses, set (channels read them from the environment)."""
    for name in set(_ENV.findall(GUIDE.read_text())):
        monkeypatch.setenv(name, f"https://receiver.invalid/{name.lower()}")


def test_the_guide_has_examples_of_both_kinds():
    assert len(loadable()) >= 6
    assert len(refused()) >= 6


@pytest.mark.parametrize("index", range(len(loadable())))
def test_every_alerting_example_loads_and_means_what_it_says(index, tmp_path, secrets_set):
    text = loadable()[index]
    written = yaml.safe_load(text)["alerting"]
    alerting = load(text, tmp_path).alerting
    names = {spec.name for spec in alerting.rule_specs()}
    for rule in written.get("custom", []):
        assert rule["name"] in names, rule["name"]
    assert set(written.get("channels", {})) <= set(alerting.channels)
    for name, channel in written.get("channels", {}).items():
        assert alerting.channels[name].type == channel["type"]
    assert len(alerting.routes) == len(written.get("routes", []))
    for name, tuning in written.get("rules", {}).items():
        rule = getattr(alerting.rules, name)
        assert rule.enabled == tuning.get("enabled", True), name
        assert (name in names) == rule.enabled, name


def test_secret_references_are_read_from_the_environment(tmp_path, monkeypatch):
    [channels] = [text for text in loadable() if "type: telegram" in text]
    for name in set(_ENV.findall(channels)):
        monkeypatch.setenv(name, f"secret-{name}")
    alerting = load(channels, tmp_path).alerting
    assert alerting.channels["phone"].token.get_secret_value() == "secret-ROF_TELEGRAM_TOKEN"
    assert "secret-" not in repr(alerting.channels)
    monkeypatch.delenv("ROF_TELEGRAM_TOKEN")
    with pytest.raises(ConfigError, match="environment variable ROF_TELEGRAM_TOKEN is not set"):
        load(channels, tmp_path)


@pytest.mark.parametrize("index", range(len(refused())))
def test_every_refused_example_is_refused_with_the_error_shown(index, tmp_path, secrets_set):
    text, shown = refused()[index]
    assert yaml.safe_load(text)["alerting"], "a refused example is an alerting section too"
    with pytest.raises(ConfigError) as caught:
        load(text, tmp_path)
    assert shown in str(caught.value), f"the guide shows {shown!r}, the code says {caught.value}"


def test_every_rule_tunable_figure_channel_and_key_is_documented():
    guide = GUIDE.read_text()
    for name, rule in BUILTIN_RULES.items():
        assert f"`{name}`" in guide, name
        for tunable in rule.defaults:
            assert f"`{tunable.removesuffix('_s')}`" in guide, f"{name}.{tunable}"
    for kind, figures in FIGURES.items():
        assert f"**{kind}**" in guide, kind
        for figure in figures:
            assert f"`{figure}`" in guide, f"{kind}.{figure}"
    for model in (models.AlertingConfig, models.RetryConfig, models.RouteConfig, models._BuiltinRule):
        for field in model.model_fields:
            assert f"{field}:" in guide or f"`{field}`" in guide, f"{model.__name__}.{field}"
    for field, info in models.CustomRule.model_fields.items():
        assert f"`{info.alias or field}`" in guide, f"custom.{field}"
    for model in (
        models.WebhookChannel,
        models.SlackChannel,
        models.TelegramChannel,
        models.EmailChannel,
    ):
        kind = model.model_fields["type"].annotation.__args__[0]
        assert f"| `{kind}` |" in guide, kind
        for field in model.model_fields:
            assert f"`{field}`" in guide, f"{kind}.{field}"


def test_the_documented_defaults_are_the_models_defaults(tmp_path):
    """The tuning block that lists the section's own keys shows their defaults."""
    [defaults] = [text for text in loadable() if "give_up_after" in text and "channels" not in text]
    assert load(defaults, tmp_path).alerting == load("alerting: {}\n", tmp_path).alerting
