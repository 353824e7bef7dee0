"""The acceptance test of the observability work, end to end with real processes: a Prometheus
server and a Pushgateway (Debian's binaries, free ports, scrape interval 1 s), the ops service
(`rof ops serve`, a subprocess), a PostgreSQL cluster of the test's own as the state store, a
DAGSTER_HOME of its own, and real runs (`rof run`), one of them SIGKILLed in the middle of its GA.

Then, through Prometheus's HTTP API: every metric family of adapters/metrics.py has samples with
its documented labels; the killed run's GA figures are the last generation it reported to
worker_progress, and the run is still counted in its pool; /health answers 503 on the first
request after the state store's cluster stops (within one scrape) and 200 again once it is back."""

import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pika
import psycopg
import pytest
import yaml
from dagster import DagsterInstance
from dagster._core.scheduler.instigation import TickStatus

from rof_pipelines.adapters import metrics
from rof_pipelines.adapters.state_store import StateStore
from rof_pipelines.settings import PROJECT_ROOT, load_settings
from rof_pipelines_tests.ops.instance_facts import heartbeat, sensor_state, tick
from rof_pipelines_tests.ops.servers import (
    Prometheus,
    Pushgateway,
    TcpPostgres,
    free_port,
    http_get,
    temp_root,
    wait_until,
)

pytestmark = [pytest.mark.slow]

FINISHED, KILLED = "binance:TONUSDT", "binance:BTCUSDT"
SCHEMA = "rof_state"
DB = "rof_obs"
SCRAPE_S = 1.0
RUN_KILLED = [sys.executable, "-m", "rof_pipelines.cli", "run"]
# Labels Prometheus or the Pushgateway's grouping key may add to a family's documented ones.
TARGET_LABELS = {"__name__", "job", "instance"}
# Sensor ticks in this process push these (route "sensor": grouping key process="sensor", sensor).
SENSOR_FAMILIES = {name for name, family in metrics.FAMILIES.items() if family.route == "sensor"}


def rof(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "rof_pipelines.cli", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"rof {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def progress(pg: TcpPostgres, market: str) -> tuple[int, int, str] | None:
    """(generation, total_generations, status) of the market's newest worker_progress row."""
    try:
        with psycopg.connect(pg.admin_dsn(DB), connect_timeout=3) as conn:
            row = conn.execute(
                f"SELECT generation, total_generations, status FROM {SCHEMA}.worker_progress "
                "WHERE market = %s ORDER BY updated_at DESC LIMIT 1",
                (market,),
            ).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return None if row is None else (int(row[0]), int(row[1]), str(row[2]))


def tick_the_sensors(root: Path, day: str) -> None:
    """One ``task_messages_sensor`` tick against the real RabbitMQ and one ``config_reload_sensor``
    tick refusing an edit, in this process, as the code location runs them (``defs()``, the
    settings, state store and RabbitMQ resources; Pushgateway configured). Their counters reach
    Prometheus only through the push at the end of each tick. The tick drains a valid task (this
    process published it: ``workerpool_messages_published_total`` counts in the publishing process)
    and a malformed one (dead-lettered), and finds an inbox row it cannot run (quarantined)."""
    from dagster import SensorResult, build_sensor_context, instance_for_test

    from rof_pipelines.adapters.inbox import Inbox
    from rof_pipelines.adapters.messages import build_message
    from rof_pipelines.adapters.rabbitmq import Delivery, RabbitMQ, Received
    from rof_pipelines.adapters.resources import PostgresStateStoreResource, RabbitMQResource, RofSettings
    from rof_pipelines.adapters.state_store import StateStore
    from rof_pipelines.definitions import defs

    config = yaml.safe_load((root / "config.yaml").read_text())
    config["storage"].setdefault("rabbitmq", {})["queue_prefix"] = f"rof_obs_{secrets.token_hex(4)}"
    sensor_root = root / "sensor_ticks"
    sensor_root.mkdir()
    path = sensor_root / "config.yaml"  # its own file: the refused edit must not touch the ops service's
    # Alerting for the alerts_sensor ticks: the log, and a webhook nobody listens on (failed deliveries).
    config["alerting"] = {
        "channels": {
            "log": {"type": "log"},
            "nobody": {"type": "webhook", "url": f"http://127.0.0.1:{free_port()}/", "timeout": "1s"},
        },
        "retry": {"initial": "1s", "maximum": "2s"},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    resource = RofSettings(config_path=str(path))
    settings = resource.load()
    assert settings.system_setup.pushgateway_url  # from PUSHGATEWAY_URL
    rabbit_config = settings.storage.rabbitmq
    rabbit = RabbitMQ(rabbit_config, None, rabbit_config.queue_prefix)
    rabbit.declare_topology()
    try:
        valid = build_message("task", market=FINISHED, date=day)
        rabbit.publish(valid)
        connection = pika.BlockingConnection(pika.URLParameters(rabbit_config.url.get_secret_value()))
        connection.channel().basic_publish(
            "", rabbit.queue_name("task"), b"{not json", pika.BasicProperties(message_id="obs-malformed")
        )
        connection.close()
        with StateStore(settings.state_storage) as store:  # a row a consumer without the checks inboxed
            ancient = build_message("task", market=FINISHED, date="1900-01-01")
            delivery = Delivery("q", 0, False, pika.BasicProperties(), b"")
            Inbox(store).add([Received(delivery, ancient, None)])
        resources = {
            "settings": resource,
            "state_store": PostgresStateStoreResource(settings=resource),
            "rabbitmq": RabbitMQResource(settings=resource),
        }
        loaded = defs()
        tasks_sensor = loaded.resolve_sensor_def("task_messages_sensor")
        reload_sensor = loaded.resolve_sensor_def("config_reload_sensor")
        alerts_sensor = loaded.resolve_sensor_def("alerts_sensor")
        with instance_for_test() as instance:
            with build_sensor_context(instance=instance, resources=resources) as context:
                result = tasks_sensor(context)
            assert isinstance(result, SensorResult), result
            assert [r.run_key for r in result.run_requests] == [valid.message_id]
            cursor = None
            # Applied, refused (7m does not divide a day: the config_refused alert fires), applied again
            # (it resolves); an alerts_sensor tick after each, so every alerts_* family has samples.
            steps = (("1m", "applied", None), ("7m", "REFUSED", "fired"), ("1m", "applied", "resolved"))
            for bar_interval, outcome, event in steps:
                config["storage"]["bar_interval"] = bar_interval
                path.write_text(yaml.safe_dump(config, sort_keys=False))
                with build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                    skipped = reload_sensor(context)
                    cursor = context.cursor
                assert outcome in skipped.skip_message, skipped.skip_message
                with build_sensor_context(instance=instance, resources=resources) as context:
                    summary = alerts_sensor(context).skip_message  # "fired ...; resolved ...; ..."
                fired, resolved = (part.split(" ", 1)[1] for part in summary.split("; ")[:2])
                assert ("config_refused" in fired) == (event == "fired"), summary
                assert ("config_refused" in resolved) == (event == "resolved"), summary
    finally:
        connection = pika.BlockingConnection(pika.URLParameters(rabbit_config.url.get_secret_value()))
        channel = connection.channel()
        for queue in rabbit.topology.all_queues:
            channel.queue_delete(queue)
        for exchange in (rabbit.topology.exchange, rabbit.topology.dead_letter_exchange):
            channel.exchange_delete(exchange)
        connection.close()


def stop_group(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(15)


def test_prometheus_sees_every_family_the_killed_run_and_health_follows_the_state_store(
    monkeypatch, rabbitmq_url
):
    began = time.monotonic()
    with temp_root("rof-obs-") as root:
        (root / "pg").mkdir()
        pg = TcpPostgres(root / "pg")
        gateway = prom = ops = None
        try:
            pg.create_database(DB)
            gateway = Pushgateway(root)
            home = root / "dagster_home"
            home.mkdir()
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
            env = {
                **os.environ,
                "DAGSTER_HOME": str(home),
                "ROF_DATA_DIR": str(root / "data"),
                "ROF_QUOTE_STORE": "parquet",
                "STATE_STORAGE_DB_HOST": f"{pg.host}:{pg.port}",
                "STATE_STORAGE_DB_USER": "postgres",
                "STATE_STORAGE_DB_NAME": DB,
                "STATE_STORAGE_DB_PASSWORD": "",
                "STATE_STORAGE_SCHEMA": SCHEMA,
                "PUSHGATEWAY_URL": gateway.url,
                "LOG_LEVEL": "warning",
            }
            for name in ("ROF_MARKETS", "ROF_BAR_INTERVAL", "METRICS_PORT"):
                env.pop(name, None)
            # The shipped config.yaml with a breaker that opens after 3 failures and retries after 2 s
            # (the test watches it open and close); relative paths stay relative to the project.
            config = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
            config["system_setup"]["circuit_breaker"].update({"fail_max": 3, "reset_timeout": "2s"})
            (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            env["ROF_CONFIG"] = str(root / "config.yaml")
            env["RABBITMQ_URL"] = rabbitmq_url
            for name in (
                "DAGSTER_HOME",
                "ROF_DATA_DIR",
                "ROF_QUOTE_STORE",
                "PUSHGATEWAY_URL",
                "RABBITMQ_URL",
            ):
                monkeypatch.setenv(name, env[name])  # the sensor ticks below run in this process
            for name in env:
                if name.startswith("STATE_STORAGE_"):
                    monkeypatch.setenv(name, env[name])
            rof(env, "db", "upgrade")
            with StateStore(load_settings(PROJECT_ROOT / "config.yaml", environ=env).state_storage) as store:
                # an earlier completed optimisation of the finished market: its previous champion
                store.progress.record("obs:earlier", FINISHED, 2, 2, 0.5, None, "completed")
            rof(env, "quotes", "generate", "-m", FINISHED, "-m", KILLED, "--days", "15")
            day = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()

            port = free_port()
            ops = subprocess.Popen(
                [sys.executable, "-m", "rof_pipelines.cli", "ops", "serve", "--port", str(port)],
                env=env,
                cwd=PROJECT_ROOT,
                stdout=open(root / "ops.log", "wb"),  # noqa: SIM115 - the child holds it
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            ops_url = f"http://127.0.0.1:{port}"
            wait_until(lambda: http_get(ops_url + "/health/live")[0] == 200, 60, what="the ops service")
            prom = Prometheus(
                root,
                {
                    "rof_ops": (f"127.0.0.1:{port}", "/metrics", False),
                    "pushgateway": (f"127.0.0.1:{gateway.port}", "/metrics", True),
                },
                interval=SCRAPE_S,
            )
            wait_until(lambda: prom.targets_up(["rof_ops", "pushgateway"]), 30, what="both targets up")

            # A run that finishes, then one killed between two GA generations.
            rof(env, "run", "-m", FINISHED, "-d", day, "--ga-generations", "2", "--ga-population", "8")
            killed = subprocess.Popen(
                [*RUN_KILLED, "-m", KILLED, "-d", day, "--ga-generations", "60", "--ga-population", "8"],
                env=env,
                cwd=PROJECT_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=open(root / "killed_run.log", "wb"),  # noqa: SIM115
                start_new_session=True,
            )
            try:
                wait_until(
                    lambda: (p := progress(pg, KILLED)) is not None and p[0] >= 1, 300, 0.1, "generation >= 1"
                )
            finally:
                os.killpg(killed.pid, signal.SIGKILL)  # the run and its GA workers, mid-GA
                killed.wait(30)
            generation, total, status = progress(pg, KILLED)
            assert status == "running" and 1 <= generation < total, (generation, total, status)

            # The killed run's figures: its last reported generation, read at scrape time.
            def killed_generation() -> list[dict]:
                return prom.query(f'ga_generation{{market="{KILLED}"}} == {generation}')

            wait_until(killed_generation, 30, what=f"ga_generation of the killed run = {generation}")
            ratio = float(prom.query(f'ga_progress_ratio{{market="{KILLED}"}}')[0]["value"][1])
            assert ratio == pytest.approx(generation / total)
            assert prom.query(f'ga_best_fitness{{market="{KILLED}"}}')
            finished = prom.query(f'ga_progress_ratio{{market="{FINISHED}"}}')
            assert float(finished[0]["value"][1]) == 1.0
            # The killed run stays STARTED in the instance: still counted in its pool.
            wait_until(
                lambda: prom.query("sum(workerpool_runs_in_progress) >= 1"), 30, what="killed run in progress"
            )
            wait_until(
                lambda: prom.query('sum(workerpool_runs_finished_total{status="success"}) >= 1'),
                30,
                what="the finished run counted",
            )
            # What the finished run pushed through the Pushgateway (grouping key, no run id).
            pushed = prom.query(f'data_manager_loads_total{{job="rof", process="run", market="{FINISHED}"}}')
            assert pushed and {s["metric"]["asset"] for s in pushed} >= {"quote_snapshots"}

            # Sensor ticks (the code-location process's counters) push under process="sensor", sensor.
            tick_the_sensors(root, day)
            # No daemon runs here: its heartbeat and a sensor's failing tick are planted in the
            # instance the ops service reads, as the daemon records them.
            instance = DagsterInstance.from_config(str(home))
            try:
                heartbeat(instance, "SENSOR", time.time())
                tick(instance, sensor_state(instance, "alerts_sensor"), TickStatus.FAILURE, time.time(), 2)
            finally:
                instance.dispose()
            for name in sorted(SENSOR_FAMILIES):
                wait_until(
                    lambda name=name: prom.query(f'{name}{{job="rof", process="sensor", sensor!=""}}'),
                    30,
                    what=f"{name} pushed by a sensor tick",
                )
            for expr in (
                'data_manager_config_reloads_total{sensor="config_reload_sensor", status="refused"} >= 1',
                'workerpool_messages_dead_lettered_total{sensor="task_messages_sensor", queue="tasks"} >= 1',
                'workerpool_inbox_quarantined_total{sensor="task_messages_sensor", kind="task"} >= 1',
            ):
                wait_until(lambda expr=expr: prom.query(expr), 15, what=expr)

            # /health follows the state store: 503 as soon as its cluster stops, 200 once it is back.
            status_code, body = http_get(ops_url + "/health")
            assert status_code == 200, body
            pg.stop()
            stopped_at = time.monotonic()
            status_code, body = http_get(ops_url + "/health", timeout=10)
            answered = time.monotonic() - stopped_at
            assert status_code == 503 and b"state_store" in body, body
            assert answered <= SCRAPE_S + 3.5, f"/health took {answered:.1f}s"  # one scrape + a probe timeout
            wait_until(
                lambda: prom.query("ga_state_store_up == 0"),
                10 * SCRAPE_S,
                0.2,
                "state store down in Prometheus",
            )
            # Each scrape's state-store read fails through the ops process's breaker: it opens.
            breaker = 'circuit_breaker_state{service="state_store", process="ops"}'
            wait_until(lambda: prom.query(f"{breaker} == 2"), 30, 0.2, "the ops service's breaker open")
            pg.start()
            restarted_at = time.monotonic()
            wait_until(lambda: http_get(ops_url + "/health")[0] == 200, 10, 0.2, "/health 200 again")
            back = time.monotonic() - restarted_at
            # The collectors' reads resume once the breaker's reset_timeout lets a trial call through.
            wait_until(lambda: prom.query("ga_state_store_up == 1"), 20, 0.2, "state store up in Prometheus")
            wait_until(lambda: prom.query(f"{breaker} == 0"), 20, 0.2, "the breaker closed again")
            assert prom.query(
                'circuit_breaker_transitions_total{service="state_store", process="ops", state="open"} >= 1'
            )

            # Every family has samples, with exactly its documented labels (plus what the target or
            # the Pushgateway's grouping key adds).
            missing, wrong = [], []
            for family in metrics.FAMILIES.values():
                samples = prom.query(f"last_over_time({family.name}[10m])")
                if not samples:
                    missing.append(family.name)
                    continue
                allowed = (
                    set(family.labels)
                    | TARGET_LABELS
                    | set(metrics.GROUPING_LABELS)
                    | set(metrics.SENSOR_GROUPING_LABELS)
                )
                for sample in samples:
                    keys = set(sample["metric"])
                    if not set(family.labels) <= keys <= allowed:
                        wrong.append(f"{family.name}: {sorted(keys)} (documented {family.labels})")
            assert not wrong, "labels differ from the documented ones:\n" + "\n".join(wrong)
            assert not missing, f"families without samples: {sorted(missing)}"
            print(f"/health 503 after {answered:.2f}s, 200 again {back:.2f}s after the restart")
        finally:
            if ops is not None:
                stop_group(ops)
            if prom is not None:
                prom.stop()
            if gateway is not None:
                gateway.stop()
            pg.close()
            print(f"observability integration test: {time.monotonic() - began:.1f}s")
