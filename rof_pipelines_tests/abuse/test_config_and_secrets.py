"""Config, secret and import abuse: each defect a review reproduced, and what happens now.

Secrets never reach text: a misspelt secret key, a password holding ``@``, ``:`` or ``/``, an IPv6
host, an unparsable URL. Config mistakes are ConfigErrors naming the path or key path, short even for
a YAML alias bomb. The hot-reload sensor skips when nothing valid exists yet. A killed Parquet import
leaves no temp files for long, and odd market names are refused. The last test plants distinctive
passwords everywhere, runs the CLI, a Dagster materialisation and the sensor for real, and greps every
output, log, event and state-store table for them.
"""

import logging
import os
import secrets
import signal
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import sqlalchemy as sa
import yaml
from dagster import build_sensor_context, instance_for_test
from typer.testing import CliRunner

from rof_pipelines.adapters.config_versions import config_versions, last_valid_path
from rof_pipelines.adapters.quote_stores.parquet import ParquetQuoteStore
from rof_pipelines.adapters.resources import PostgresStateStoreResource, RofSettings
from rof_pipelines.adapters.state_store import StateStore
from rof_pipelines.cli import app
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import generate_quotes
from rof_pipelines.core.redaction import all_spellings, mask_url, scrub
from rof_pipelines.defs.ops.sensors import config_reload_sensor
from rof_pipelines.defs.quotes.assets import quote_snapshots
from rof_pipelines.errors import ConfigError, DataValidationError, RofError
from rof_pipelines.settings import (
    MAX_CONFIG_BYTES,
    PROJECT_ROOT,
    RabbitMQConfig,
    load_settings,
    normalise_market,
)
from rof_pipelines_tests.conftest import RABBITMQ_TEST_URL
from rof_pipelines_tests.defs.support import materialize_market_day

TON = Market.parse("binance:TONUSDT")
DAY = date(2026, 11, 20)

# Distinctive passwords, one per secret field; each URL form's password is split into parts as well,
# so that a half-printed password (what describe() used to show) is caught too.
PG_PW = "PgPw-7f3a9c1e"
CH_PW = "ChPw-5b2d8e4f"
STATE_PW = "StPw-9e1c3a7b"
TYPO_PW = "TypoPw-2c4e6a8d"
URL_FORMS: dict[str, tuple[str, str]] = {  # form -> (password, URL template with {host})
    "plain": ("MqPlain-41d2e8", "amqp://guest:MqPlain-41d2e8@{host}/"),
    "at": ("MqAt-8c1f@tail-3e9a", "amqp://guest:MqAt-8c1f@tail-3e9a@{host}/"),
    "colon": ("MqColon-6a2b:tail-7d4c", "amqp://guest:MqColon-6a2b:tail-7d4c@{host}/"),
    "slash": ("MqSlash-2f8e/tail-5b1a", "amqp://guest:MqSlash-2f8e/tail-5b1a@{host}/"),
    "encoded": ("MqEnc-1c7d/tail-6e2f", "amqp://guest:MqEnc-1c7d%2Ftail-6e2f@{host}/"),
    "ipv6": ("MqSix-9d3c0b", "amqp://guest:MqSix-9d3c0b@[::1]:{port}/"),
}


def needles() -> set[str]:
    found = {PG_PW, CH_PW, STATE_PW, TYPO_PW}
    for password, _ in URL_FORMS.values():
        found |= all_spellings([password])
        for sep in "@:/":
            found |= {part for part in password.split(sep) if len(part) >= 8}
    return found


def url(form: str, host: str = "127.0.0.1", port: int = 1) -> str:
    return URL_FORMS[form][1].format(host=f"{host}:{port}", port=port)


def leaks(texts: dict[str, str]) -> list[str]:
    """Where any planted password occurs: ``source: needle``."""
    return [f"{source}: {needle}" for source, text in texts.items() for needle in needles() if needle in text]


def config_error(data: dict[str, Any] | str, tmp_path: Path, environ: dict[str, str] | None = None) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ=environ or {})
    return str(err.value)


# --- secrets in text --------------------------------------------------------------------------------


def test_an_unknown_key_never_echoes_its_value(tmp_path):
    """Before: ``state_storage.db_pasword: unknown key; got 'S3cr3t-...'``."""
    text = config_error({"state_storage": {"db_pasword": TYPO_PW}, "storage": {"markts": "x" * 50}}, tmp_path)
    assert "state_storage.db_pasword: unknown key" in text
    assert "storage.markts: unknown key" in text and "xxxxx" not in text
    assert TYPO_PW not in text


@pytest.mark.parametrize(
    "section",
    [
        {"storage": {"postgres": {"db_password": [PG_PW]}}},
        {"storage": {"rabbitmq": {"url": {"nested": PG_PW}}}},
        {"storage": {"clickhouse": {"db_password": {"x": PG_PW}}}},
        {"storage": {"clickhouse": {"dsn": [f"clickhouse://u:{PG_PW}@h"]}}},
        {"system_setup": {"backup": {"directory": f"memory://u:{PG_PW}@bucket/x"}}},
        {"storage": {"markets": [f"amqp://u:{PG_PW}@h"]}},
    ],
)
def test_values_of_secret_keys_and_urls_are_never_echoed(tmp_path, section):
    text = config_error(section, tmp_path)
    assert "invalid configuration" in text and PG_PW not in text


@pytest.mark.parametrize(
    ("form", "shown"),
    [
        ("plain", "amqp://guest:***@127.0.0.1:5672/"),
        ("at", "amqp://guest:***@127.0.0.1:5672/"),
        ("colon", "amqp://guest:***@127.0.0.1:5672/"),
        ("slash", "amqp://guest:***@127.0.0.1:5672/"),
        ("encoded", "amqp://guest:***@127.0.0.1:5672/"),
        ("ipv6", "amqp://guest:***@[::1]:5672/"),
    ],
)
def test_rabbitmq_describe_hides_the_whole_password(form, shown):
    """Before: ``amqp://guest:***@Pw-tail@host`` for a password with a raw ``@``."""
    described = RabbitMQConfig(url=url(form, port=5672)).describe()
    assert described == shown
    assert not leaks({"describe": described})


@pytest.mark.parametrize("form", sorted(URL_FORMS))
def test_the_scrubber_hides_every_spelling_of_a_url_password(form):
    """Drivers echo URLs as written, decoded or re-encoded; the one scrubber hides them all."""
    written = url(form, port=5672)
    password = URL_FORMS[form][0]
    text = f"cannot connect to {written}: login {password!r} ({quote(password, safe='')}) refused"
    scrubbed = scrub(text, written)
    assert not leaks({"scrubbed": scrubbed}) and "cannot connect to amqp://guest:***@" in scrubbed


def test_an_unparsable_url_is_a_config_error_not_a_traceback(tmp_path):
    """Before: ``ValueError: Invalid IPv6 URL`` from the client; describe() echoed it whole."""
    bad = "amqp://guest:[::1/"
    assert mask_url(bad) == "amqp://<hidden: not a valid URL>"
    assert "[::1/" not in scrub(f"client said: Invalid IPv6 URL {bad}", bad)
    assert RabbitMQConfig(url=bad).describe() == "amqp://<hidden: not a valid URL>"
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"RABBITMQ_URL": bad})
    text = str(err.value)
    assert "storage.rabbitmq.url: not a valid URL" in text and "RABBITMQ_URL" in text
    assert "[::1/" not in text
    done = rof(["config", "show"], {"RABBITMQ_URL": bad}, tmp_path)
    assert done.returncode == 2 and "storage.rabbitmq.url: not a valid URL" in done.stderr
    assert "Traceback" not in done.stderr and "[::1/" not in done.stdout + done.stderr


def test_a_raw_slash_in_the_password_is_refused_at_load(tmp_path):
    """A client reads ``guest:pa/ss@host`` as host ``guest``, port ``pa``; say how to encode it."""
    text = config_error({"storage": {"rabbitmq": {"url": url("slash")}}}, tmp_path)
    assert "storage.rabbitmq.url: the user or password holds a character that must be percent-encoded" in text
    assert not leaks({"error": text})
    assert load_settings(environ={"RABBITMQ_URL": url("encoded")}).storage.rabbitmq.describe()


# --- config ------------------------------------------------------------------------------------------


def test_rof_config_naming_a_missing_file_is_an_error(tmp_path):
    """Before: ``ROF_CONFIG=/nonexistent.yaml`` ran on built-in defaults with exit 0."""
    missing = tmp_path / "nonexistent.yaml"
    with pytest.raises(ConfigError, match=rf"configuration file not found: {missing} \(from ROF_CONFIG\)"):
        load_settings(environ={"ROF_CONFIG": str(missing)})
    done = rof(["config", "show"], {"ROF_CONFIG": str(missing)}, tmp_path)
    assert done.returncode == 2 and f"configuration file not found: {missing}" in done.stderr
    assert done.stdout == ""


def test_rof_config_naming_a_directory_or_a_fifo_is_an_error(tmp_path):
    """Before: an ``IsADirectoryError`` traceback."""
    with pytest.raises(
        ConfigError, match=rf"configuration file {tmp_path} \(from ROF_CONFIG\) is a directory"
    ):
        load_settings(environ={"ROF_CONFIG": str(tmp_path)})
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is not a regular file"):  # and does not block reading it
        load_settings(fifo, environ={})
    inside_a_file = tmp_path / "plain.txt"
    inside_a_file.write_text("")
    with pytest.raises(ConfigError, match="cannot be read: Not a directory"):
        load_settings(inside_a_file / "config.yaml", environ={})
    dangling = tmp_path / "link.yaml"
    dangling.symlink_to(tmp_path / "gone.yaml")
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_settings(dangling, environ={})
    done = rof(["config", "show"], {"ROF_CONFIG": str(tmp_path)}, tmp_path)
    assert done.returncode == 2 and "is a directory" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_config_is_an_error(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("storage: {}\n")
    path.chmod(0)
    with pytest.raises(ConfigError, match=rf"{path} cannot be read: permission denied"):
        load_settings(path, environ={})


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("99999999999d", "duration too long (at most 36525d)"),
        ("1.0e+300", "duration too long"),
        (".inf", "duration too long"),
        (-5, "a duration must not be negative"),
    ],
)
def test_duration_overflow_is_a_config_error_with_the_key_path(tmp_path, value, reason):
    """Before: ``reset_timeout: "99999999999d"`` gave an ``OverflowError`` traceback."""
    text = "system_setup:\n  circuit_breaker:\n    reset_timeout: " + str(value) + "\n"
    message = config_error(text, tmp_path)
    assert f"system_setup.circuit_breaker.reset_timeout: {reason}" in message


@pytest.mark.parametrize(
    ("key_path", "value"),
    [
        (("system_setup", "circuit_breaker", "call_timeout"), "0s"),
        (("system_setup", "circuit_breaker", "call_timeout"), "0.0004s"),  # 0 ms to PostgreSQL
        (("system_setup", "circuit_breaker", "reset_timeout"), 0),
        (("system_setup", "worker_pool", "task_worker", "task_timeout"), "0.5s"),  # 0 s to Dagster
    ],
)
def test_timeouts_that_would_mean_unlimited_are_refused(tmp_path, key_path, value):
    """Before: ``call_timeout: 0s`` was accepted and meant "no statement timeout"."""
    data: dict[str, Any] = {}
    node = data
    for key in key_path[:-1]:
        node = node.setdefault(key, {})
    node[key_path[-1]] = value
    if key_path[1] == "worker_pool":
        node.update(max_workers=1, queue_size=1)
    message = config_error(data, tmp_path)
    assert f"{'.'.join(key_path)}: must be at least" in message


def billion_laughs(levels: int = 9, width: int = 10) -> str:
    lines = ["lol0: &lol0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"lol{level}: &lol{level} [" + ", ".join([f"*lol{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_is_refused_with_a_short_message(tmp_path):
    """Before: refused, after expanding it, with a message of megabytes (9.7 MB)."""
    message = config_error(billion_laughs(), tmp_path)
    assert "refused YAML: more than 100000 values once aliases are expanded" in message
    assert len(message) < 2048


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a: &a x\nb: [" + ", ".join(["*a"] * 101) + "]\n", "more than 100 aliases"),
        ("a: &a [*a]\n", "an alias refers to a node that contains it"),
        ("a: " + "[" * 70 + "]" * 70 + "\n", "nested deeper than 64 levels"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 64 levels"),
    ],
)
def test_other_yaml_bombs_are_refused_short(tmp_path, text, reason):
    message = config_error(text, tmp_path)
    assert reason in message and len(message) < 2048


def test_a_huge_file_and_a_long_error_list_stay_short(tmp_path):
    message = config_error("# padding\n" + "#" * MAX_CONFIG_BYTES + "\n", tmp_path)
    assert f"larger than {MAX_CONFIG_BYTES} bytes" in message and len(message) < 2048
    many = {"storage": {f"unknown_{index}_{'k' * 300}": index for index in range(500)}}
    message = config_error(many, tmp_path)
    assert "unknown key" in message and "more problem(s)" in message and len(message) < 2048


def test_a_yaml_error_never_quotes_the_source_line(tmp_path):
    message = config_error(f'state_storage:\n  db_password: "{STATE_PW}\n  x: [\n', tmp_path)
    assert "not valid YAML" in message and "line" in message and STATE_PW not in message
    message = config_error(f"state_storage:\n  db_password: !!int {STATE_PW}\n", tmp_path)
    assert "not valid YAML" in message and STATE_PW not in message


# --- the hot-reload sensor ---------------------------------------------------------------------------


def tick(instance, resources, cursor):
    with build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        return config_reload_sensor(context), context.cursor


def test_reload_sensor_skips_when_no_last_valid_version_exists(tmp_path, caplog):
    """Before: the tick raised ConfigError (the state store is configured in the invalid file)."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"state_storage": {"db_pasword": TYPO_PW}}))
    settings = RofSettings(config_path=str(config))
    resources = {"settings": settings, "state_store": PostgresStateStoreResource(settings=settings)}
    assert not last_valid_path(config).exists()
    with caplog.at_level(logging.DEBUG), instance_for_test() as instance:
        result, cursor = tick(instance, resources, None)
        assert "no last valid version exists yet" in result.skip_message
        assert "nothing is recorded" in result.skip_message
        assert "state_storage.db_pasword: unknown key" in result.skip_message
        again, cursor_again = tick(instance, resources, cursor)
    assert again.skip_message == result.skip_message and cursor_again == cursor
    alerts = [record for record in caplog.records if "ALERT" in record.getMessage()]
    assert len(alerts) == 1  # once per version, not every tick
    assert not leaks({"skip": result.skip_message, "logs": caplog.text})


# --- Parquet import leftovers and market names --------------------------------------------------------

KILLED_WRITE = """
import os, signal, sys
from datetime import datetime, timedelta, UTC
from rof_pipelines.adapters.quote_stores.parquet import ParquetQuoteStore
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import generate_quotes

market = Market.parse("binance:TONUSDT")
start = datetime(2026, 11, 20, tzinfo=UTC)
store = ParquetQuoteStore(sys.argv[1])
os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # die after staging, before renaming
store.write(market, generate_quotes(market, start, start + timedelta(days=2), seed=7))
"""


def temp_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*.tmp"))


def test_a_killed_import_leaves_temp_files_only_until_the_next_write(tmp_path):
    """Before: a killed import left ``.part-0.parquet.<pid>.tmp`` files forever."""
    root = tmp_path / "quotes"
    done = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(root)], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    left = temp_files(root)
    assert len(left) == 2 and all(path.name.startswith(".part-0.parquet.") for path in left)
    foreign = root / "exchange=binance" / "pair=TONUSDT" / "date=2026-11-20" / "notes.tmp"
    foreign.write_text("not the store's")
    other_left = root / "exchange=okx" / "pair=BTCUSDT" / "date=2026-11-20" / ".part-0.parquet.1.tmp"
    other_left.parent.mkdir(parents=True)
    other_left.write_bytes(b"another market's leftover")

    store = ParquetQuoteStore(root)
    start = datetime(2026, 11, 21, tzinfo=UTC)
    quotes = generate_quotes(TON, start, start + timedelta(hours=1), seed=8)
    assert store.write(TON, quotes) == len(quotes)
    assert temp_files(root) == sorted([foreign, other_left])  # only this market's, only its names
    assert len(store.read(TON, start - timedelta(days=1), start + timedelta(hours=1))) == len(quotes)


def test_an_interrupted_write_removes_its_half_written_temp_file(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    store = ParquetQuoteStore(tmp_path / "quotes")
    real_write = pq.write_table

    def interrupted(table, where, **kwargs):  # the file is started, then Ctrl-C arrives
        real_write(table.slice(0, 10), where, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(pq, "write_table", interrupted)
    start = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC)
    with pytest.raises(KeyboardInterrupt):
        store.write(TON, generate_quotes(TON, start, start + timedelta(hours=1), seed=1))
    assert temp_files(tmp_path) == []
    assert store.read(TON, start, start + timedelta(hours=1)).empty


@pytest.mark.parametrize(
    "key", ["..:..", "binance:-rf", ".hidden:PAIR", "-x:Y", "a:B..C", "a:.B", "a:", ":B"]
)
def test_odd_market_names_are_refused(tmp_path, key):
    """Before: ``..:..`` and ``binance:-rf`` were accepted and made odd directories."""
    with pytest.raises(ValueError, match="each part starts with a letter or digit"):
        Market.parse(key)
    with pytest.raises(ValueError, match="each part starts with a letter or digit"):
        normalise_market(key)
    message = config_error({"storage": {"markets": [key]}}, tmp_path)
    assert "storage.markets" in message
    root = tmp_path / "quotes"
    exchange, pair = key.split(":")
    start = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC)
    with pytest.raises(DataValidationError):
        ParquetQuoteStore(root).write(
            Market(exchange, pair), generate_quotes(TON, start, start + timedelta(hours=1))
        )
    assert not root.exists() or not any(root.iterdir())


@pytest.mark.parametrize("key", ["binance:TONUSDT", "oanda:EUR_USD", "nasdaq:BRK.B", "1inch:X-Y", "a.b:C"])
def test_ordinary_market_names_still_parse(key):
    assert Market.parse(key).key == normalise_market(key) == key


# --- the secret grep ----------------------------------------------------------------------------------


def rof(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The real command, through its entry point, with no secret-bearing variable of this process."""
    base = {key: value for key, value in os.environ.items() if key not in ENV_WITH_SECRETS}
    return subprocess.run(
        [sys.executable, "-m", "rof_pipelines.cli", *args],
        env={**base, "DAGSTER_HOME": str(tmp_path / "dagster_home"), **env},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


ENV_WITH_SECRETS = {"DB_PASSWORD", "CLICKHOUSE_DB_PASSWORD", "STATE_STORAGE_DB_PASSWORD", "RABBITMQ_URL"}


def secret_config(pg_database: dict[str, Any], tmp_path: Path, rabbit_url: str) -> dict[str, Any]:
    database = {key: pg_database[key] for key in ("db_host", "db_user", "db_name")}
    return {
        "storage": {
            "data_dir": str(tmp_path / "data"),
            "quote_store": "postgres",
            "markets": [TON.key],
            "postgres": {**database, "db_password": PG_PW},  # trust auth: any password connects
            "clickhouse": {"db_password": CH_PW},
            "rabbitmq": {"url": rabbit_url, "queue_prefix": f"rof_secrets_{secrets.token_hex(3)}"},
        },
        "state_storage": {**database, "db_password": STATE_PW, "schema": "rof_state"},
    }


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# Runs through the real entry point (exit codes, main()'s error path); the rest run in-process,
# where the Python logs they write reach caplog too.
THROUGH_ENTRY_POINT = {
    "plain unreachable config show",
    "at broker publish",
    "slash broker publish",
    "bad config show",
}


def invoke_in_process(args: list[str], config: str) -> tuple[int, str]:
    """What ``rof ARGS`` prints and exits with, as main() reports a RofError."""
    runner = CliRunner()
    unset: dict[str, str | None] = dict.fromkeys(ENV_WITH_SECRETS)
    result = runner.invoke(app, args, env={**unset, "ROF_CONFIG": config})
    if isinstance(result.exception, RofError):
        return 2, f"{result.output}error: {result.exception}"
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def run_cli(pg_database: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """config show, and publish against an unreachable port and against the real broker (whose guest
    account refuses these passwords), for every URL form; then a bad-config invocation."""
    broker = urlsplit(RABBITMQ_TEST_URL)
    targets = {
        "unreachable": ("127.0.0.1", 1),
        "broker": (broker.hostname or "127.0.0.1", broker.port or 5672),
    }
    runs: dict[str, tuple[str, list[str]]] = {}
    publish = ["publish", "task", "-m", TON.key, "--date", "2026-11-20"]
    for form in URL_FORMS:
        for target, (host, port) in targets.items():
            config = tmp_path / f"{form}-{target}.yaml"
            write_yaml(config, secret_config(pg_database, tmp_path, url(form, host, port)))
            runs[f"{form} {target} config show"] = (str(config), ["config", "show"])
            runs[f"{form} {target} publish"] = (str(config), publish)
    bad = secret_config(pg_database, tmp_path, url("plain"))
    bad["state_storage"]["db_pasword"] = TYPO_PW
    runs["bad config show"] = (str(write_yaml(tmp_path / "bad.yaml", bad)), ["config", "show"])
    base = {key: value for key, value in os.environ.items() if key not in ENV_WITH_SECRETS}
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", "rof_pipelines.cli", *runs[name][1]],
            env={**base, "ROF_CONFIG": runs[name][0]},
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in THROUGH_ENTRY_POINT
    }
    outputs: dict[str, str] = {}
    codes: dict[str, int] = {}
    for name, (config, args) in runs.items():
        if name not in THROUGH_ENTRY_POINT:
            codes[name], outputs[f"cli {name}"] = invoke_in_process(args, config)
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=180)
        codes[name], outputs[f"cli {name}"] = process.returncode, stdout + stderr
    # What each run did, so that a run that never got as far as the secrets does not pass silently.
    shown = outputs["cli plain unreachable config show"]
    assert codes["plain unreachable config show"] == 0 and '"db_password": "***"' in shown
    for form in ("plain", "at", "colon", "encoded", "ipv6"):
        assert codes[f"{form} unreachable publish"] == 2
        assert "rabbitmq (amqp://guest:***@" in outputs[f"cli {form} unreachable publish"]
    for form in ("plain", "at", "colon", "encoded"):
        assert (
            codes[f"{form} broker publish"] == 2 and "ACCESS_REFUSED" in outputs[f"cli {form} broker publish"]
        )
    assert codes["slash broker publish"] == 2 and "percent-encoded" in outputs["cli slash broker publish"]
    assert codes["bad config show"] == 2
    assert "state_storage.db_pasword: unknown key" in outputs["cli bad config show"]
    assert all("Traceback" not in text for text in outputs.values()), outputs
    return outputs


def dump_tables(pg_database: dict[str, Any]) -> dict[str, str]:
    engine = sa.create_engine(
        sa.engine.URL.create(
            "postgresql+psycopg",
            username=pg_database["user"],
            host=pg_database["host"],
            port=pg_database["port"],
            database=pg_database["dbname"],
        )
    )
    try:
        with engine.connect() as connection:
            tables = connection.execute(
                sa.text(
                    "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
                )
            ).all()
            dumped = {}
            for schema, table in tables:
                rows = connection.execute(sa.text(f'SELECT * FROM "{schema}"."{table}"')).all()
                dumped[f"table {schema}.{table}"] = "\n".join(repr(tuple(row)) for row in rows)
            return dumped
    finally:
        engine.dispose()


def files_under(root: Path) -> dict[str, str]:
    """Every file of a Dagster instance (event and run storage, compute logs), as text."""
    return {
        f"file {path.relative_to(root)}": path.read_bytes().decode("utf-8", "replace")
        for path in root.rglob("*")
        if path.is_file()
    }


@pytest.mark.slow
def test_no_password_reaches_any_output_log_event_or_table(pg_database, rabbitmq_url, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    texts: dict[str, str] = run_cli(pg_database, tmp_path)

    # A Dagster materialisation with every secret set (quotes and state store on PostgreSQL).
    config = write_yaml(tmp_path / "config.yaml", secret_config(pg_database, tmp_path, url("at", port=5672)))
    with instance_for_test() as instance:
        result = materialize_market_day(config, instance, [quote_snapshots], TON, DAY)
        assert result.success
        texts["dagster events"] = "\n".join(repr(entry) for entry in instance.all_logs(result.run_id))
        texts.update(files_under(Path(instance.root_directory)))

        # The hot-reload sensor: a valid version, then an invalid edit with a misspelt secret key.
        settings = RofSettings(config_path=str(config))
        resources = {"settings": settings, "state_store": PostgresStateStoreResource(settings=settings)}
        applied, cursor = tick(instance, resources, None)
        assert "applied" in applied.skip_message
        edited = secret_config(pg_database, tmp_path, url("colon", port=5672))
        edited["state_storage"]["db_pasword"] = TYPO_PW
        edited["system_setup"] = {"circuit_breaker": {"call_timeout": "0s"}}
        write_yaml(config, edited)
        refused, _ = tick(instance, resources, cursor)
        assert refused.skip_message.startswith("REFUSED")
        assert "state_storage.db_pasword: unknown key" in refused.skip_message
        assert "system_setup.circuit_breaker.call_timeout: must be at least" in refused.skip_message
        texts["sensor"] = f"{applied.skip_message}\n{refused.skip_message}"
        texts.update({f"after ticks {k}": v for k, v in files_under(Path(instance.root_directory)).items()})

    with StateStore(load_settings(last_valid_path(config), environ={}).state_storage) as store:
        assert [row["status"] for row in config_versions(store)] == ["refused", "applied"]
    texts.update(dump_tables(pg_database))
    assert "refused" in texts["table rof_state.config_versions"]
    texts["python logs"] = caplog.text + "\n".join(str(record.__dict__) for record in caplog.records)
    assert "ALERT" in texts["python logs"]
    assert leaks(texts) == []
