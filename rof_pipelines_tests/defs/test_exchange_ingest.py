"""The scheduled exchange ingest (ingest.markets) as Dagster runs it: the stand-in exchange on
loopback with a clock at the real now, a Parquet quote store, the test RabbitMQ. A fetch stores the
closed candles, announces only the finished days as quotes.updated (the queue the quotes sensor
drains, with its inbox rules), and the next fetch resumes without duplicates; top-of-book snapshots
survive the candle writes around them."""

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from dagster import DagsterInstance

from rof_pipelines.adapters import metrics
from rof_pipelines.adapters.quote_stores import open_quote_store
from rof_pipelines.adapters.rabbitmq import RabbitMQ
from rof_pipelines.adapters.resources import InMemoryStateStoreResource, RabbitMQResource
from rof_pipelines.bench.exchange_standin import StandinExchange, synthetic_candles
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import resample_bars
from rof_pipelines.definitions import build_definitions
from rof_pipelines.defs.quotes.ingest import build_exchange_ingest_job, schedule_name
from rof_pipelines.settings import CircuitBreakerConfig, RabbitMQConfig, load_settings
from rof_pipelines_tests.defs.support import resources_for

BTC = Market("binance", "BTCUSDT")
MINUTE_MS = 60_000
# Candles from midnight two days ago up to the real now: two finished days and part of today.
NOW_MS = int(datetime.now(UTC).timestamp() * 1000) // MINUTE_MS * MINUTE_MS
TODAY = datetime.fromtimestamp(NOW_MS / 1000, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
START = TODAY - timedelta(days=2)
START_MS = int(START.timestamp() * 1000)


@pytest.fixture
def exchange() -> Iterator[StandinExchange]:
    candles = synthetic_candles((NOW_MS - START_MS) // MINUTE_MS + 30, START_MS, seed=3)
    with StandinExchange({"BTCUSDT": candles}, now_ms=NOW_MS - 10 * MINUTE_MS) as server:
        yield server


@pytest.fixture
def prefix(rabbitmq_url: str) -> Iterator[str]:
    name = f"rof_test_{secrets.token_hex(4)}"
    yield name
    rabbit = RabbitMQ(RabbitMQConfig(url=rabbitmq_url), None, name)
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        channel = connection.channel()
        for queue in rabbit.topology.all_queues:
            channel.queue_delete(queue)
        for name_ in (rabbit.topology.exchange, rabbit.topology.dead_letter_exchange):
            channel.exchange_delete(name_)
    finally:
        connection.close()


def write_config(
    tmp_path: Path, server: StandinExchange, rabbitmq_url: str, prefix: str, **entry: Any
) -> Path:
    config = {
        "storage": {
            "quote_store": "parquet",
            "data_dir": str(tmp_path / "data"),
            "markets": [BTC.key],
            "rabbitmq": {"url": rabbitmq_url, "queue_prefix": prefix},
        },
        "ingest": {
            "exchanges": {"binance": {"urls": {"api": {"public": server.api_url}}, "backoff": "100ms"}},
            "markets": [
                {
                    "market": BTC.key,
                    "interval": "1m",
                    "every_minutes": 5,
                    "since": START.date().isoformat(),
                    **entry,
                }
            ],
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fetch(config_path: Path, *, raise_on_error: bool = True) -> Any:
    settings = load_settings(config_path, environ={})
    job = build_exchange_ingest_job(settings)
    resources = resources_for(config_path, InMemoryStateStoreResource(space=str(config_path)))
    resources["rabbitmq"] = RabbitMQResource(settings=resources["settings"])
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance,
            resources={
                k: v
                for k, v in resources.items()
                if k in ("settings", "quote_store", "state_store", "rabbitmq")
            },
            run_config={"ops": {"fetch_exchange_quotes": {"config": {"market": BTC.key}}}},
            raise_on_error=raise_on_error,
        )
        if not raise_on_error:
            return result
        assert result.success
        outputs = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
        return {k: v.value for k, v in outputs[0].event_specific_data.metadata.items()} if outputs else {}


def announced(rabbitmq_url: str, prefix: str) -> list[Any]:
    rabbit = RabbitMQ(RabbitMQConfig(url=rabbitmq_url), CircuitBreakerConfig(), prefix)
    got: list[Any] = []
    rabbit.drain("quotes.updated", 100, lambda batch: got.extend(r.message for r in batch))
    return got


def stored(config_path: Path) -> pd.DataFrame:
    with open_quote_store(load_settings(config_path, environ={})) as store:
        return store.read(BTC, START - timedelta(days=1), TODAY + timedelta(days=1))


def test_a_fetch_stores_closed_candles_and_announces_only_finished_days(
    tmp_path, exchange, rabbitmq_url, prefix
):
    config_path = write_config(tmp_path, exchange, rabbitmq_url, prefix)
    before = metrics.INGEST_CANDLES._value.get()
    first = fetch(config_path)
    closed = (exchange.now_ms - START_MS) // MINUTE_MS  # candles whose minute has ended
    assert first["candles_written"] == closed
    assert metrics.INGEST_CANDLES._value.get() - before == closed
    assert 0 <= first["lag_seconds"] < 120
    # Two finished days, announced once; today's candles are stored but wait for the day to end.
    (message,) = announced(rabbitmq_url, prefix)
    assert (message.market, message.start, message.end) == (BTC.key, START, TODAY)
    assert first["quotes_updated_published"] == [f"{BTC.key} {START.isoformat()} .. {TODAY.isoformat()}"]

    exchange.now_ms += 3 * MINUTE_MS  # three more candles close
    second = fetch(config_path)
    assert second["candles_written"] == 3
    assert announced(rabbitmq_url, prefix) == []  # only today touched
    frame = stored(config_path)
    assert not frame["ts"].duplicated().any()
    assert len(frame) == 4 * (closed + 3)  # four snapshots per candle, none twice, no hole


def recorded_gaps(config_path: Path) -> list[tuple[datetime, datetime, str]]:
    store = InMemoryStateStoreResource(space=str(config_path)).open()
    return [(g.gap_from, g.gap_to, g.source) for g in store.quote_gaps.find(BTC.key, "1m")]


def test_a_gap_in_the_exchanges_data_is_recorded_and_shown(tmp_path, exchange, rabbitmq_url, prefix):
    outage = (START_MS + 600 * MINUTE_MS, START_MS + 700 * MINUTE_MS)
    exchange.faults.hidden = [outage]
    config_path = write_config(tmp_path, exchange, rabbitmq_url, prefix)
    try:
        first = fetch(config_path)
        gap = tuple(datetime.fromtimestamp(t / 1000, UTC) for t in outage)
        assert first["gaps"] == [f"{gap[0].isoformat()} .. {gap[1].isoformat()}"]
        assert recorded_gaps(config_path) == [(*gap, "ingest")]
        exchange.now_ms += 2 * MINUTE_MS
        assert fetch(config_path)["gaps"] == []
        assert recorded_gaps(config_path) == [(*gap, "ingest")], "a later fetch leaves it recorded"
    finally:
        InMemoryStateStoreResource.drop(str(config_path))


def test_top_of_book_snapshots_survive_the_candle_writes_around_them(
    tmp_path, exchange, rabbitmq_url, prefix
):
    config_path = write_config(tmp_path, exchange, rabbitmq_url, prefix, top_of_book=True)
    first_at = exchange.now_ms
    assert fetch(config_path)["top_of_book_snapshot"] is True
    exchange.now_ms += 2 * MINUTE_MS  # the minute of the first snapshot closes: its candle is written
    fetch(config_path)
    frame = stored(config_path)
    assert not frame["ts"].duplicated().any()
    book = frame[frame["bid"].notna()]
    assert [ts.value // 1_000_000 for ts in book["ts"]] == [first_at, exchange.now_ms]
    assert (book["ask"] > book["bid"]).all()
    # The candles around them are what the exchange served, none missing.
    closed = (exchange.now_ms - START_MS) // MINUTE_MS
    bars = resample_bars(frame, timedelta(minutes=1))
    bars = bars.loc[bars["n_ticks"] > 0].iloc[:closed]
    served = exchange.candles["BTCUSDT"]
    assert len(bars) == closed
    for column in ("open", "high", "low", "close", "volume"):
        assert bars[column].to_numpy().tolist() == getattr(served, column)[:closed].tolist(), column


def test_each_configured_market_gets_a_schedule_at_its_pace(tmp_path, exchange, rabbitmq_url, prefix):
    settings = load_settings(
        write_config(tmp_path, exchange, rabbitmq_url, prefix, every_minutes=15), environ={}
    )
    schedules = {s.name: s for s in build_definitions(settings).get_repository_def().schedule_defs}
    (entry,) = settings.ingest.markets
    schedule = schedules[schedule_name(entry)]
    assert schedule.name == "exchange_ingest_binance_btcusdt_1m"
    assert schedule.cron_schedule == "*/15 * * * *" and schedule.job_name == "exchange_ingest"
    with pytest.raises(ValueError, match="every_minutes must divide an hour"):
        type(entry)(market=BTC.key, every_minutes=7)


def test_a_broker_that_stays_down_fails_the_step_naming_what_to_publish(tmp_path, exchange, monkeypatch):
    """The candles are stored; a retry would find nothing new and announce nothing, so the step fails
    at once (no retry) with the commands that announce what it stored."""
    from dagster import DagsterEventType

    from rof_pipelines.defs.quotes import ingest

    monkeypatch.setattr(ingest, "PUBLISH_RETRY_SECONDS", 0.0)
    config_path = write_config(tmp_path, exchange, "amqp://guest:guest@127.0.0.1:9/%2F", "rof_test_nobroker")
    result = fetch(config_path, raise_on_error=False)
    assert not result.success
    starts = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_START]
    assert len(starts) == 1, "not retried"
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    text = failure.step_failure_data.user_failure_data.description
    assert "candles stored, but quotes.updated could not be published" in text
    assert (
        f"rof publish quotes-updated -m {BTC.key} --start {START.isoformat()} --end {TODAY.isoformat()}"
        in text
    )
    assert len(stored(config_path)) == 4 * ((exchange.now_ms - START_MS) // MINUTE_MS)  # nothing lost
