"""Runs push their step figures to a real Pushgateway (Debian's binary on a free loopback port)
through dagster-prometheus, under the bounded grouping key; a gateway that is down never fails a
run."""

import logging
import re
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import yaml
from dagster import instance_for_test

from rof_pipelines.adapters import metrics, pushgateway
from rof_pipelines.adapters.breakers import breaker_for
from rof_pipelines.adapters.resources import InMemoryStateStoreResource
from rof_pipelines.core.market import Market
from rof_pipelines.defs.indicators.assets import indicator_frame
from rof_pipelines.defs.optimisation.assets import ga_population
from rof_pipelines.defs.quotes.assets import quote_snapshots
from rof_pipelines_tests.defs.support import fill_quotes, resources_for
from rof_pipelines_tests.ops.servers import Pushgateway, http_get, temp_root

TON = Market.parse("binance:TONUSDT")
DAY = date(2026, 11, 20)
RUN_CONFIG = {"ops": {"ga_population": {"config": {"generations": 3, "population_size": 8, "workers": 1}}}}
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


@pytest.fixture
def memory_state_store() -> Iterator[InMemoryStateStoreResource]:
    resource = InMemoryStateStoreResource(space=f"pushgateway:{uuid.uuid4().hex}")
    yield resource
    InMemoryStateStoreResource.drop(resource.space)


@pytest.fixture(scope="module")
def gateway() -> Iterator[Pushgateway]:
    with temp_root("rof-pushgateway-") as root:
        server = Pushgateway(root)
        try:
            yield server
        finally:
            server.stop()


def scraped(gateway: Pushgateway) -> list[tuple[str, dict[str, str], float]]:
    status, body = http_get(gateway.url + "/metrics")
    assert status == 200
    out = []
    for line in body.decode().splitlines():
        match = SAMPLE.match(line)
        if match and not line.startswith("#"):
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
            out.append((match["name"], labels, float(match["value"])))
    return out


def series(gateway: Pushgateway, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    return [
        (got, value)
        for sample, got, value in scraped(gateway)
        if sample == name and all(got.get(k) == v for k, v in labels.items())
    ]


def test_a_pusher_replaces_its_group_with_this_processs_figures(gateway):
    breaker_for("push_probe")  # a breaker of this process: circuit_breaker_state{service="push_probe"} 0
    pusher = pushgateway.StepPusher(
        gateway.url, pool="task_worker", market="probe:AAA", asset="quote_snapshots"
    )
    metrics.DATA_LOAD_SECONDS.set(0.25)
    assert pusher.push(force=True)
    group = {
        "job": "rof",
        "instance": "",  # the gateway's own, empty
        "process": "run",
        "pool": "task_worker",
        "market": "probe:AAA",
        "asset": "quote_snapshots",
    }
    assert series(gateway, "circuit_breaker_state", service="push_probe", **group) == [
        ({**group, "service": "push_probe"}, 0.0)
    ]
    assert series(gateway, "data_manager_load_seconds", **group) == [(group, 0.25)]
    assert not pusher.push()  # throttled: min_interval since the last push
    metrics.DATA_LOAD_SECONDS.set(0.5)
    assert pusher.push(force=True)
    assert series(gateway, "data_manager_load_seconds", **group) == [(group, 0.5)]  # PUT: replaced
    pusher.delete()
    assert series(gateway, "data_manager_load_seconds", **group) == []


def test_a_gateway_that_is_down_never_fails_the_caller(caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    pusher = pushgateway.StepPusher(
        f"http://127.0.0.1:{port}", pool="none", market="probe:BBB", asset="q_table"
    )
    with caplog.at_level(logging.WARNING, logger=pushgateway.__name__):
        started = time.perf_counter()
        assert pusher.push(force=True) is False
        assert pusher.push(force=True) is False
    assert time.perf_counter() - started < 5
    assert pusher.failures == 2
    warnings = [r for r in caplog.records if "metrics push" in r.getMessage()]
    assert len(warnings) == 1  # at most once a minute


def test_pushing_is_off_without_a_url(make_settings):
    assert pushgateway.pusher_for(make_settings().system_setup, pool="x", market="a:B", asset="q") is None


def write_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "config.yaml"
    config = {
        "system_setup": {"pushgateway_url": url, "pushgateway_interval": 0},
        "storage": {"data_dir": str(tmp_path / "data"), "quote_store": "parquet"},
        "state_storage": {"db_host": "127.0.0.1:9", "db_name": "nowhere", "auto_migrate": False},
        "ai_config": {"rl": {"episodes": 3, "fee": 0.0, "slippage": 0.0}},
        "ab_tests": {
            "experiment": {"ga": {"min_population": 8}},
            "state_management": {"checkpoint_interval": 2},
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_run_pushes_its_steps_figures(tmp_path, gateway, memory_state_store):
    from dagster import materialize

    from rof_pipelines.partitions import market_day_key, markets_partitions

    config_path = write_config(tmp_path, gateway.url)
    fill_quotes(config_path, TON, DAY)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(markets_partitions.name, [TON.key])
        result = materialize(
            [quote_snapshots, indicator_frame, ga_population],
            partition_key=market_day_key(TON, DAY),
            instance=instance,
            run_config=RUN_CONFIG,
            resources=resources_for(config_path, memory_state_store),
            tags={"rof/pool": "ab_optimizer"},
        )
        assert result.success
    group = {"job": "rof", "process": "run", "pool": "ab_optimizer", "market": TON.key}
    for asset in ("quote_snapshots", "indicator_frame", "ga_population"):
        [(labels, loads)] = series(gateway, "data_manager_loads_total", asset=asset, **group)
        assert loads >= 1, labels
        [(_, seconds)] = series(gateway, "data_manager_load_seconds", asset=asset, **group)
        [(_, size)] = series(gateway, "data_manager_load_bytes", asset=asset, **group)
        assert seconds > 0 and size > 0
    [(_, evaluations)] = series(gateway, "ga_evaluations_total", asset="ga_population", **group)
    assert evaluations > 0
    names = {name for name, labels, _ in scraped(gateway) if labels.get("market") == TON.key}
    # no run id anywhere in a pushed label
    for _, labels, _ in scraped(gateway):
        if labels.get("job") == "rof":
            assert set(labels) <= metrics.BOUNDED_LABELS | {"job", "instance"}, labels
    assert {"data_manager_load_seconds", "ga_evaluations_total", "push_time_seconds"} <= names


def test_a_failing_step_still_pushes(tmp_path, gateway, memory_state_store):
    from dagster import materialize

    from rof_pipelines.partitions import market_day_key, markets_partitions

    empty = Market.parse("binance:NOQUOTES")
    config_path = write_config(tmp_path, gateway.url)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(markets_partitions.name, [empty.key])
        result = materialize(
            [quote_snapshots],
            partition_key=market_day_key(empty, DAY),
            instance=instance,
            resources=resources_for(config_path, memory_state_store),
            raise_on_error=False,
        )
    assert not result.success  # no quotes for the day
    group = {"job": "rof", "process": "run", "pool": "none", "market": empty.key, "asset": "quote_snapshots"}
    [(_, loads)] = series(gateway, "data_manager_loads_total", **group)
    assert loads >= 1  # the read that found nothing, pushed as the step failed


# --- sensor ticks: the code-location process's registry, under process="sensor", sensor=<name> ------
def test_a_sensor_tick_pushes_the_process_registry_under_its_sensor_group(gateway, make_settings):
    settings = make_settings({"system_setup": {"pushgateway_url": gateway.url}})
    pusher = pushgateway.sensor_pusher(settings, "probe_sensor")
    assert pusher is not None and pusher.grouping_key == {"process": "sensor", "sensor": "probe_sensor"}
    assert pushgateway.sensor_pusher(settings, "probe_sensor") is pusher  # one per sensor and process
    metrics.MESSAGES_RECEIVED.labels("probe_queue").inc(3)
    metrics.DATA_LOADS.inc()  # a run step's registry: not a sensor's to push

    @pushgateway.pushed_tick("probe_sensor")
    def tick(context, settings):  # type: ignore[no-untyped-def]
        """A tick."""
        metrics.MESSAGES_ACKED.labels("probe_queue").inc()
        raise RuntimeError("the tick's own failure")

    with pytest.raises(RuntimeError, match="the tick's own failure"):
        tick(None, settings=settings)  # Dagster passes resources by name
    assert tick.__name__ == "tick" and tick.__doc__ == "A tick."
    group = {"job": "rof", "instance": "", "process": "sensor", "sensor": "probe_sensor"}
    [(labels, received)] = series(gateway, "workerpool_messages_received_total", queue="probe_queue")
    assert labels == {**group, "queue": "probe_queue"} and received >= 3
    [(_, acked)] = series(gateway, "workerpool_messages_acked_total", queue="probe_queue", **group)
    assert acked >= 1  # pushed although the tick raised
    assert series(gateway, "data_manager_loads_total", **group) == []
    for _, labels, _ in scraped(gateway):
        if labels.get("process") == "sensor":
            assert set(labels) <= metrics.BOUNDED_LABELS | {"job", "instance"}, labels
    pusher.delete()
    assert series(gateway, "workerpool_messages_received_total", **group) == []


def test_a_config_reload_tick_pushes_its_counters(tmp_path, gateway, pg_database):
    from dagster import build_sensor_context, instance_for_test

    from rof_pipelines.adapters.resources import PostgresStateStoreResource, RofSettings
    from rof_pipelines.defs.ops.sensors import config_reload_sensor

    config = tmp_path / "config.yaml"
    state = {
        "db_host": pg_database["db_host"],
        "db_user": pg_database["db_user"],
        "db_name": pg_database["db_name"],
        "db_password": "",
        "schema": "rof_state",
    }

    def write(bar_interval: str) -> None:
        config.write_text(
            yaml.safe_dump(
                {
                    "system_setup": {"pushgateway_url": gateway.url},
                    "state_storage": state,
                    "storage": {"data_dir": str(tmp_path / "d"), "bar_interval": bar_interval},
                }
            )
        )

    settings = RofSettings(config_path=str(config))
    resources = {"settings": settings, "state_store": PostgresStateStoreResource(settings=settings)}
    cursor = None
    with instance_for_test() as instance:
        for bar_interval, outcome in (("1m", "applied"), ("7m", "REFUSED")):  # 7m: not a divisor of a day
            write(bar_interval)
            with build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                result = config_reload_sensor(context)
                cursor = context.cursor
            assert outcome in result.skip_message
    group = {"job": "rof", "process": "sensor", "sensor": "config_reload_sensor"}
    for status in ("applied", "refused"):
        [(_, count)] = series(gateway, "data_manager_config_reloads_total", status=status, **group)
        assert count >= 1, status
    pushgateway.sensor_pusher(settings, "config_reload_sensor").delete()


def test_a_gateway_that_is_down_never_fails_a_tick_and_pauses_its_pushes(make_settings, caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once the block ends
    settings = make_settings({"system_setup": {"pushgateway_url": f"http://127.0.0.1:{port}"}})
    with caplog.at_level(logging.WARNING, logger=pushgateway.__name__):
        started = time.perf_counter()
        assert pushgateway.push_tick(settings, "down_sensor") is False
        assert pushgateway.push_tick(settings, "down_sensor") is False  # paused: not even tried
    assert time.perf_counter() - started < 5
    assert pushgateway.sensor_pusher(settings, "down_sensor").failures == 1
    assert len([r for r in caplog.records if "metrics push" in r.getMessage()]) == 1
    assert pushgateway.push_tick(make_settings(), "down_sensor") is False  # no URL: off
    assert pushgateway.push_tick(None, "down_sensor") is False  # a tick without settings
