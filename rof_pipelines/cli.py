"""The ``rof`` command: demo, quotes generate/import, db upgrade, alerts, bench, ui."""

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from rof_pipelines.alerts_cli import alerts_app
from rof_pipelines.core.market import duration_text
from rof_pipelines.errors import RofError, UnrunnableMessage
from rof_pipelines.settings import PROJECT_ROOT, Settings, load_settings

app = typer.Typer(
    help="rof_pipelines: market quotes to tested trading-strategy configurations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
quotes_app = typer.Typer(help="Put quotes into the configured store.", no_args_is_help=True)
db_app = typer.Typer(help="The state store's schema (alembic migrations).", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks; each prints one JSON line.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
state_app = typer.Typer(help="Back up and restore the state store.", no_args_is_help=True)
app.add_typer(state_app, name="state")
instance_app = typer.Typer(help="The production Dagster instance (dagster.yaml).", no_args_is_help=True)
app.add_typer(instance_app, name="instance")
experiments_app = typer.Typer(help="A/B experiments recorded in the state store.", no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")
app.add_typer(quotes_app, name="quotes")
app.add_typer(db_app, name="db")
app.add_typer(bench_app, name="bench")
app.add_typer(config_app, name="config")
ops_app = typer.Typer(help="The ops service: /metrics and /health.", no_args_is_help=True)
app.add_typer(ops_app, name="ops")
app.add_typer(alerts_app, name="alerts")
workers_app = typer.Typer(
    help="dagster-celery workers (system_setup.executor: celery).", no_args_is_help=True
)
app.add_typer(workers_app, name="workers")


@app.callback()
def _logging() -> None:
    """Every command logs at system_setup.log_level in system_setup.log_format, scrubbed of the
    configuration's secrets (adapters/logs.py)."""
    from rof_pipelines.adapters.logs import configure_for_process

    configure_for_process()


DEFAULT_DAGSTER_HOME = PROJECT_ROOT / ".dagster_home"
StoreOption = Annotated[
    str | None, typer.Option("--store", help="parquet | postgres | clickhouse (default: config)")
]


def _settings(store: str | None = None) -> Settings:
    overrides: dict[str, Any] = {"storage": {"quote_store": store}} if store else {}
    return load_settings(overrides=overrides)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def main() -> None:
    try:
        app()
    except RofError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


# --- quotes ---------------------------------------------------------------------------------------


def _utc_day(value: str) -> datetime:
    return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)


@quotes_app.command("generate")
def quotes_generate(
    market: Annotated[
        list[str] | None, typer.Option("--market", "-m", help="exchange:PAIR; repeatable")
    ] = None,
    days: Annotated[int, typer.Option(help="whole UTC days ending today 00:00")] = 3,
    start: Annotated[str | None, typer.Option(help="first day YYYY-MM-DD (instead of --days)")] = None,
    end: Annotated[str | None, typer.Option(help="day after the last, YYYY-MM-DD")] = None,
    seed: int = 0,
    store: StoreOption = None,
    pattern: Annotated[
        str, typer.Option(help="none (a random walk) | momentum (persistent trends): see core/quotes.py")
    ] = "none",
    strength: Annotated[
        float | None, typer.Option(help="momentum: drift per minute in volatilities (default 0.25)")
    ] = None,
) -> None:
    """Realistic synthetic snapshots (deterministic by seed) into the configured store, optionally
    with a planted pattern an agent can learn (--pattern momentum)."""
    from rof_pipelines.adapters.quote_stores import open_quote_store
    from rof_pipelines.core.market import Market
    from rof_pipelines.core.quotes import PATTERNS, GeneratorConfig, generate_quotes

    settings = _settings(store)
    try:
        tuned = {} if strength is None else {"pattern_strength": strength}
        generator = GeneratorConfig(pattern=pattern, **tuned)
    except ValueError as exc:
        _fail(f"--pattern/--strength: {exc}")
    markets = [Market.parse(m) for m in (market or settings.storage.markets)]
    end_at = _utc_day(end) if end else datetime.combine(date.today(), datetime.min.time(), tzinfo=UTC)
    start_at = _utc_day(start) if start else end_at - timedelta(days=days)
    with open_quote_store(settings) as quote_store:
        quote_store.ensure_schema()
        for item in markets:
            frame = generate_quotes(item, start_at, end_at, seed=seed, config=generator)
            written = quote_store.write(item, frame)
            typer.echo(
                f"{item}: {written} snapshots {start_at:%Y-%m-%d}..{end_at:%Y-%m-%d} "
                f"(pattern {pattern}: {PATTERNS[pattern]}) -> {quote_store.describe()}"
            )


@quotes_app.command("import")
def quotes_import(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet: snapshots (ts, price, ...) or OHLCV candles")],
    market: Annotated[str, typer.Option("--market", "-m", help="exchange:PAIR, e.g. binance:TONUSDT")],
    kind: Annotated[str, typer.Option(help="auto | snapshots | candles")] = "auto",
    interval: Annotated[
        str | None, typer.Option(help="candle interval 1m .. 1d, e.g. 5m, 1h, 1d (default: inferred)")
    ] = None,
    tz: Annotated[
        str | None,
        typer.Option(
            "--tz", help="IANA zone of timestamps written without one, e.g. UTC or America/New_York"
        ),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Import a user's quotes. The file is validated completely before anything is written."""
    from rof_pipelines.adapters.quote_files import import_quote_file
    from rof_pipelines.adapters.quote_stores import open_quote_store
    from rof_pipelines.core.market import Market
    from rof_pipelines.core.quotes import parse_candle_interval, resolve_zone

    if kind not in ("auto", "snapshots", "candles"):
        _fail(f"--kind must be auto, snapshots or candles, got {kind!r}")
    try:
        parsed_market = Market.parse(market)
        candle_interval = parse_candle_interval(interval) if interval else None
        resolve_zone(tz)
    except (ValueError, RofError) as exc:
        _fail(str(exc))
    settings = _settings(store)
    profile = settings.market_profile(parsed_market)
    with open_quote_store(settings) as quote_store:
        quote_store.ensure_schema()
        try:
            result = import_quote_file(
                quote_store, parsed_market, file, kind, candle_interval, tz, bar_interval=profile.bar_interval
            )
        except RofError as exc:
            _fail(str(exc))
        typer.echo(
            f"{result.market}: {result.rows_in_file} {result.kind} rows -> {result.snapshots_written} "
            f"snapshots {result.first_ts} .. {result.last_ts} in {quote_store.describe()}"
            + (f" (candle interval {result.candle_interval})" if result.candle_interval else "")
        )
        if result.candle_interval_note:
            typer.echo(f"{result.market}: candle interval {result.candle_interval_note}")
        typer.echo(
            f"{result.market}: covers {result.days} UTC day(s) with data, "
            f"{result.first_day} .. {result.last_day}"
        )
    _report_partitions(
        settings, profile, date.fromisoformat(result.first_day), date.fromisoformat(result.last_day)
    )


@quotes_app.command("download")
def quotes_download(
    market: Annotated[
        list[str], typer.Option("--market", "-m", help="exchange:PAIR, e.g. binance:BTCUSDT; repeatable")
    ],
    interval: Annotated[
        str, typer.Option(help="candle interval the exchange offers: 1m, 5m, 1h, 1d, ...")
    ] = "1m",
    since: Annotated[
        str | None, typer.Option(help="YYYY-MM-DD[THH:MM] UTC: where history starts when nothing is stored")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="YYYY-MM-DD[THH:MM] UTC, exclusive (default: the exchange's now)")
    ] = None,
    prepend: Annotated[
        bool, typer.Option(help="fill history before the oldest stored candle back to --since")
    ] = False,
    store: StoreOption = None,
) -> None:
    """Closed candles from the exchange's public API (ccxt) into the configured store, page by page:
    resumes after the newest stored candle; gaps in the exchange's data are recorded in the state
    store (`rof quotes gaps`), not invented."""
    from rof_pipelines.adapters.exchanges import ExchangeClient, download_candles
    from rof_pipelines.adapters.quote_stores import open_quote_store
    from rof_pipelines.core.market import Market
    from rof_pipelines.core.quotes import parse_candle_interval

    try:
        markets = [Market.parse(m) for m in market]
        candle_interval = parse_candle_interval(interval)
        since_at = _utc_instant(since) if since else None
        until_at = _utc_instant(until) if until else None
    except (ValueError, RofError) as exc:
        _fail(str(exc))
    settings = _settings(store)
    clients: dict[str, ExchangeClient] = {}
    failed = 0
    with open_quote_store(settings) as quote_store, contextlib.ExitStack() as opened:
        quote_store.ensure_schema()
        try:
            state_store = opened.enter_context(_migrated_state_store(settings))
        except RofError as exc:
            _fail(f"the state store records the exchange's gaps, and it cannot be opened: {exc}")
        for item in markets:
            try:
                if item.exchange not in clients:
                    client = ExchangeClient.from_settings(settings, item.exchange)
                    clients[item.exchange] = opened.enter_context(client)
                result = download_candles(
                    quote_store, clients[item.exchange], item, candle_interval,
                    since=since_at, until=until_at, prepend=prepend, gap_ledger=state_store.quote_gaps,
                )  # fmt: skip
            except RofError as exc:
                failed += 1
                typer.secho(f"{item}: error: {exc}", fg=typer.colors.RED, err=True)
                continue
            typer.echo(f"{result.summary()} -> {quote_store.describe()}")
    if failed:
        raise typer.Exit(2)


@quotes_app.command("gaps")
def quotes_gaps(
    market: Annotated[
        list[str] | None, typer.Option("--market", "-m", help="only this exchange:PAIR; repeatable")
    ] = None,
    interval: Annotated[str | None, typer.Option(help="only this candle interval (1m, 1h, ...)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Ranges the exchange served no candles for, as downloads recorded them (UTC, [from, to))."""
    from rof_pipelines.core.quotes import interval_text, parse_candle_interval

    try:
        wanted = interval_text(parse_candle_interval(interval)) if interval else None
    except (ValueError, RofError) as exc:
        _fail(str(exc))
    try:
        with _migrated_state_store(load_settings()) as store:
            records = [gap for m in market or [None] for gap in store.quote_gaps.find(m, wanted)]
    except RofError as exc:
        _fail(str(exc))
    if not records:
        typer.echo("no gaps recorded" + (f" for {', '.join(market)}" if market else ""), err=True)
    for gap in records:
        minutes = (gap.gap_to - gap.gap_from).total_seconds() / 60
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "market": gap.market,
                        "interval": gap.interval,
                        "from": gap.gap_from.isoformat(),
                        "to": gap.gap_to.isoformat(),
                        "minutes": minutes,
                        "source": gap.source,
                        "recorded_at": gap.recorded_at.isoformat(),
                    }
                )
            )
        else:
            typer.echo(
                f"{gap.market} {gap.interval}: {gap.gap_from:%Y-%m-%d %H:%M} .. {gap.gap_to:%Y-%m-%d %H:%M} "
                f"({minutes:g} min), recorded by {gap.source} at {gap.recorded_at:%Y-%m-%d %H:%M}"
            )


@contextlib.contextmanager
def _migrated_state_store(settings: Settings) -> Iterator[Any]:
    """:func:`_state_store`, migrated when auto_migrate is on, disposed on exit."""
    from rof_pipelines.adapters.state_store.store import ensure_migrated

    store = _state_store(settings)
    try:
        ensure_migrated(store, settings)
        yield store
    finally:
        store.dispose()


def _report_partitions(settings: Settings, profile: Any, first: date, last: date) -> None:
    """Which `date` x `markets` partitions the data fills, that the market exists in the local
    Dagster instance, and what stops the window from running (days before history_start, a window
    too short for the market's bars)."""
    from dagster import DagsterInstance

    from rof_pipelines.demo import register_markets
    from rof_pipelines.partitions import HISTORY_START

    market = profile.market
    home = _dagster_home()
    added = register_markets(DagsterInstance.get(), [market])
    open_days = profile.calendar.open_days(max(first, HISTORY_START), last) if last >= HISTORY_START else []
    typer.echo(
        f"{market}: partitions date {first} .. {last} x markets {market}: {len(open_days)} trading day(s) "
        f"on the {profile.calendar_name} calendar (closed days are skipped); market "
        f"{'added to' if added else 'already in'} the Dagster instance at DAGSTER_HOME={home}"
    )
    if first < HISTORY_START:
        typer.secho(
            f"warning: {market}: data from {first} starts before the first partition day {HISTORY_START} "
            f"(storage.history_start); those days cannot be materialised until storage.history_start is "
            f"set to {first} or earlier in config.yaml and the code location reloads",
            fg=typer.colors.YELLOW,
            err=True,
        )
    problem = settings.window_problems(profile)
    if problem:
        typer.secho(f"warning: {problem}", fg=typer.colors.YELLOW, err=True)
    held = profile.calendar.bar_slots(
        datetime.combine(first, datetime.min.time(), tzinfo=UTC),
        datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=UTC),
        profile.bar_interval,
    )
    needed = profile.window.expected_bars(profile.bars_per_year)
    if held < needed:
        typer.secho(
            f"warning: {market}: too few bars for one window: the data spans {held} "
            f"{duration_text(profile.bar_interval)} bars, the {profile.window} window needs about {needed} "
            f"(plus the indicators' warm-up); import more history or shorten the market's data_period",
            fg=typer.colors.YELLOW,
            err=True,
        )
    typer.echo(
        f"run it: rof run -m {market} -d {open_days[-1] if open_days else last}   "
        f"(bar interval {duration_text(profile.bar_interval)}, window {profile.window}, {profile.costs_text()})"
    )


# --- db -------------------------------------------------------------------------------------------


def _state_store(settings: Settings | None = None):  # type: ignore[no-untyped-def]
    """The configured state store (the embedded server started when that is the one); the caller
    disposes it."""
    from rof_pipelines.adapters.embedded_pg import ensure_state_store
    from rof_pipelines.adapters.state_store import StateStore

    settings = settings or load_settings()
    ensure_state_store(settings.state_storage)  # db_host: embedded -> the project's server runs
    return StateStore(settings.state_storage, settings.system_setup.circuit_breaker)


def _embedded_server():  # type: ignore[no-untyped-def]
    from rof_pipelines.adapters.embedded_pg import server_for

    config = load_settings().state_storage
    if not config.embedded:
        _fail(
            f"state_storage.db_host is {config.db_host!r}, a server: there is no embedded PostgreSQL to "
            'manage (set db_host: "embedded" in config.yaml, or unset STATE_STORAGE_DB_HOST)'
        )
    return server_for(config)


@db_app.command("serve")
def db_serve(
    detach: Annotated[bool, typer.Option(help="start the holder in the background and return")] = False,
) -> None:
    """Run the embedded state-store PostgreSQL (state_storage.db_host: embedded) until Ctrl-C/SIGTERM,
    or with --detach in a background holder (pid file under state_storage.embedded_dir)."""
    from rof_pipelines.adapters.embedded_pg import ensure_state_store

    server = _embedded_server()
    if detach or server.is_serving():
        started = time.perf_counter()
        ensure_state_store(load_settings().state_storage)
        typer.echo(
            f"embedded PostgreSQL serving {server.socket_path} (holder pid {server.holder_pid()}, "
            f"ready in {time.perf_counter() - started:.1f}s); stop it with: rof db stop"
        )
        return
    typer.echo(f"embedded PostgreSQL in {server.root}: serving until Ctrl-C (or rof db stop)")
    raise typer.Exit(server.serve())


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL cleanly (its holder runs pg_ctl stop). A running `rof ui`, daemon
    or run starts it again on its next state-store access: stop those first."""
    server = _embedded_server()
    pid = server.holder_pid()
    if not server.stop():
        typer.echo(f"embedded PostgreSQL in {server.root}: not running")
        return
    typer.echo(f"embedded PostgreSQL in {server.root}: stopped (holder pid {pid})")


@db_app.command("status")
def db_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Whether the embedded PostgreSQL runs: holder and postmaster pids, socket, memory."""
    status = _embedded_server().status()
    if as_json:
        typer.echo(json.dumps(status))
    else:
        typer.echo("\n".join(f"{key}: {value}" for key, value in status.items()))
    if not status["running"]:
        raise typer.Exit(3)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the state store's migrations up to REVISION (default head)."""
    store = _state_store()
    try:
        store.upgrade(revision)
        typer.echo(f"{store.describe()}: at {store.current_revision()}")
    finally:
        store.dispose()


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Revert the state store's migrations down to REVISION (e.g. base)."""
    store = _state_store()
    try:
        store.downgrade(revision)
        typer.echo(f"{store.describe()}: at {store.current_revision()}")
    finally:
        store.dispose()


@db_app.command("current")
def db_current() -> None:
    """Print the state store's current migration revision."""
    store = _state_store()
    try:
        typer.echo(f"{store.describe()}: at {store.current_revision()}")
    finally:
        store.dispose()


# --- state ----------------------------------------------------------------------------------------


@state_app.command("backup")
def state_backup(
    directory: Annotated[
        str | None, typer.Option(help="a path or durable fsspec URL (default: destination 'default')")
    ] = None,
) -> None:
    """Write a consistent snapshot of every state-store table; prune backups past retention."""
    from rof_pipelines.adapters.backup import durable_directory, prune_backups, write_backup

    settings = load_settings()
    target = directory or settings.system_setup.backup.resolved_url()
    try:
        durable_directory(target)  # memory://, caches and read-only filesystems would lose the backup
    except RofError as exc:
        _fail(str(exc))
    store = _state_store()
    try:
        result = write_backup(store, target)
    finally:
        store.dispose()
    removed = prune_backups(target, settings.system_setup.backup.retention_days)
    typer.echo(f"{result.url}: revision {result.revision}, rows {result.tables}; pruned {len(removed)}")


@state_app.command("restore")
def state_restore(
    file: Annotated[str, typer.Argument(help="a backup archive (path or fsspec URL)")],
    schema: Annotated[str | None, typer.Option(help="restore into this (empty) schema instead")] = None,
) -> None:
    """Restore a backup into an empty schema (migrated to the backup's revision first)."""
    from rof_pipelines.adapters.backup import restore_backup

    overrides = {"state_storage": {"schema": schema}} if schema else {}
    store = _state_store(load_settings(overrides=overrides))
    try:
        rows = restore_backup(store, file)
    finally:
        store.dispose()
    typer.echo(f"restored into {store.describe()}: {rows}")


# --- publish --------------------------------------------------------------------------------------


def _utc_instant(value: str) -> datetime:
    """ISO 8601 date or date-time; without an offset it is UTC."""
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@app.command("publish")
def publish(
    kind: Annotated[str, typer.Argument(help="task | quotes-updated | backup")],
    market: Annotated[
        str | None, typer.Option("--market", "-m", help="exchange:PAIR (task, quotes-updated)")
    ] = None,
    day: Annotated[
        str | None,
        typer.Option("--date", help="YYYY-MM-DD: the task's day, or the whole UTC day for quotes-updated"),
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="quotes-updated: from, ISO 8601 (no offset = UTC)")
    ] = None,
    end: Annotated[str | None, typer.Option(help="quotes-updated: until (exclusive), ISO 8601")] = None,
    reason: Annotated[str | None, typer.Option(help="task: why it is wanted (default: manual)")] = None,
    experiment_id: Annotated[str | None, typer.Option(help="task: experiment to run it under")] = None,
    destination: Annotated[
        str | None, typer.Option(help="backup: a system_setup.backup destination's name (default: default)")
    ] = None,
    queue_prefix: Annotated[
        str | None,
        typer.Option(help="prefix of the exchange and queue names (default: storage.rabbitmq.queue_prefix)"),
    ] = None,
) -> None:
    """Publish one message to RabbitMQ (declaring the queues first, idempotently); prints its message_id.

    The queues are the ones the sensors read (``storage.rabbitmq.queue_prefix``), and a message they
    would dead-letter (a day outside the partitions, too many runs) is refused here with the reason.
    """
    from rof_pipelines.adapters.messages import MessageLimits, build_message, check_runnable
    from rof_pipelines.adapters.rabbitmq import RabbitMQ
    from rof_pipelines.partitions import HISTORY_START, daily_partitions

    kinds = {"task": "task", "quotes-updated": "quotes.updated", "backup": "backup"}
    allowed = {
        "task": {"--market", "--date", "--reason", "--experiment-id"},
        "quotes-updated": {"--market", "--date", "--start", "--end"},
        "backup": {"--destination"},
    }
    if kind not in kinds:
        _fail(f"KIND must be one of {', '.join(kinds)}, got {kind!r}")
    given = {"--market": market, "--date": day, "--start": start, "--end": end, "--reason": reason}
    given |= {"--experiment-id": experiment_id, "--destination": destination}
    extra = sorted(
        option for option, value in given.items() if value is not None and option not in allowed[kind]
    )
    if extra:
        _fail(f"{', '.join(extra)} does not apply to {kind}")
    if day and (start or end):
        _fail("give either --date or --start/--end, not both")
    fields: dict[str, Any] = {
        "market": market,
        "reason": reason,
        "experiment_id": experiment_id,
        "destination": destination,
    }
    try:
        if kind == "task" and day:
            fields["date"] = date.fromisoformat(day)
        elif day:
            fields["start"], fields["end"] = _utc_day(day), _utc_day(day) + timedelta(days=1)
        else:
            fields["start"] = _utc_instant(start) if start else None
            fields["end"] = _utc_instant(end) if end else None
    except ValueError as exc:
        _fail(f"bad date: {exc}")
    message = build_message(kinds[kind], **fields)
    settings = load_settings()
    config = settings.storage.rabbitmq
    last = daily_partitions.get_last_partition_key()
    limits = MessageLimits(
        first_day=HISTORY_START,
        last_day=date.fromisoformat(last) if last else HISTORY_START - timedelta(days=1),
        max_days_per_message=config.max_days_per_message,
        max_runs_per_message=config.max_runs_per_message,
    )
    try:
        check_runnable(message, limits)
    except UnrunnableMessage as exc:
        _fail(f"not published, the sensors would dead-letter it: {exc.reason}")
    rabbit = RabbitMQ(config, settings.system_setup.circuit_breaker, queue_prefix or config.queue_prefix)
    rabbit.declare_topology()
    rabbit.publish(message)
    where = (
        f"published {message.kind} message {message.message_id} to queue {rabbit.queue_name(message.kind)} "
        f"(exchange {rabbit.topology.exchange}, routing key {message.queue_suffix}) on {config.describe()}"
    )
    typer.secho(where, err=True)  # describe() stars the password
    typer.echo(message.message_id)


@instance_app.command("render")
def instance_render() -> None:
    """dagster.yaml for production, with the run-queue limits of system_setup.worker_pool."""
    from rof_pipelines.defs.instance_config import render_instance_yaml

    typer.echo(render_instance_yaml(load_settings()), nl=False)


# --- workers --------------------------------------------------------------------------------------

PoolsOption = Annotated[
    list[str], typer.Option("--pool", help="task_worker | ab_optimizer; repeat to serve both")
]


@workers_app.command("config")
def workers_config() -> None:
    """The worker -y file: the executor's broker, backend and Celery settings (adapters/celery_workers.py)."""
    from rof_pipelines.adapters.celery_workers import worker_yaml

    typer.echo(worker_yaml(load_settings()), nl=False)


@workers_app.command("start")
def workers_start(
    pool: PoolsOption,
    name: Annotated[str | None, typer.Option(help="worker name (default: the pools); @host is added")] = None,
    concurrency: Annotated[int, typer.Option(help="steps this worker runs at once")] = 1,
) -> None:
    """Exec the celery worker dagster-celery would start on the pools' queues, with the Celery
    settings from the configuration, so the worker always matches the executor. Restart workers on
    every deploy: they import the code."""
    import tempfile

    from rof_pipelines.adapters.celery_workers import worker_command, worker_environment, write_worker_config

    settings = load_settings()
    config_file = write_worker_config(settings, Path(tempfile.mkdtemp(prefix="rof-worker-")))
    command = worker_command(config_file, pool, name or "-".join(pool), concurrency)
    environment = worker_environment(config_file)
    typer.echo(" ".join(command), err=True)
    sys.stdout.flush()
    os.execve(command[0], command, environment)


def _decision_summary(record: Any) -> str:
    """What the experiment changed, in words (a buy-and-hold win is a warning, not a promotion)."""
    from rof_pipelines.core.abtest import decision_summary

    return decision_summary(
        record.winner,
        record.promoted,
        record.conflict,
        version=record.promoted_version,
        note=record.details.get("promotion"),
    )


@experiments_app.command("list")
def experiments_list(
    market: Annotated[str | None, typer.Option("--market", "-m", help="only this exchange:PAIR")] = None,
    limit: int = 20,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Recorded experiments, newest first: partition date, what changed, and the decision's reason."""
    store = _state_store()
    try:
        records = store.experiments.recent(market, limit)
    finally:
        store.dispose()
    for record in records:
        reason = record.decision.get("reason", "")
        outcome = "promoted" if record.promoted else ("conflict" if record.conflict else "kept active")
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "experiment_id": record.experiment_id,
                        "market": record.market,
                        "partition_date": record.partition_date,
                        "window_end": record.window_end,
                        "winner": record.winner,
                        "outcome": outcome,
                        "summary": _decision_summary(record),
                        "conflict": record.conflict,
                        "reason": reason,
                        "arms": [arm.arm for arm in record.arms],
                    },
                    default=str,
                )
            )
        else:
            typer.echo(
                f"{record.created_at:%Y-%m-%d %H:%M} {record.market:<18} {record.partition_date:%Y-%m-%d} "
                f"{_decision_summary(record)}  ({reason})"
            )
    if not records:
        typer.echo("no experiments recorded yet")


# Lineage an A/B experiment record should carry in ``details`` (written by the ab_report asset); a
# missing one is named by ``rof experiments show``.
LINEAGE_DETAILS = (
    "run_id",
    "partition_key",
    "partition_date",
    "upstream_runs",
    "ga_task_id",
    "ga_generations",
)


def _experiment_lineage(store: Any, record: Any) -> dict[str, Any]:
    """Everything ``rof experiments show`` prints, JSON-able: the decision with each arm's evidence,
    the promotion and whether it is still in force, the GA task and its generations, and the
    partitions and Dagster runs the experiment came from."""
    details = record.details
    day = record.partition_date
    current = store.configs.get_active(record.market)
    task_id = details.get("ga_task_id")
    progress = store.progress.get(task_id) if task_id else None
    checkpoints = store.checkpoints.generations(task_id) if task_id else []
    verdicts = {name: arm.get("reason") for name, arm in (record.decision.get("arms") or {}).items()}
    first_day = record.window_start.astimezone(UTC).date()
    days = [first_day + timedelta(days=i) for i in range((day - first_day).days + 1)]
    try:
        calendar = load_settings().market_profile(record.market).calendar
        open_days: int | None = sum(calendar.is_open_day(d) for d in days)
    except RofError:  # an unknown exchange: the day count alone
        open_days = None
    ga_generations = details.get("ga_generations") or {}
    if progress is not None:
        ga_generations = {
            "first": ga_generations.get("first", 0),
            "last": progress.generation,
            "total": progress.total_generations,
            **ga_generations,
        }
    return {
        "experiment_id": record.experiment_id,
        "label": record.label,
        "market": record.market,
        "created_at": record.created_at.astimezone(UTC) if record.created_at else None,
        "partition_date": day,
        "partition_key": details.get("partition_key") or f"{day.isoformat()}|{record.market}",
        "window": {"start": record.window_start.astimezone(UTC), "end": record.window_end.astimezone(UTC)},
        "decision": {
            "summary": _decision_summary(record),
            "winner": record.winner,
            "reason": record.decision.get("reason", ""),
            "rule": (record.decision.get("rule") or {}).get("text"),
            "held_out_periods": record.decision.get("n_periods"),
        },
        "arms": [
            {
                "arm": arm.arm,
                "role": arm.role,
                "sharpe": arm.metrics.get("sharpe"),
                "total_return": arm.metrics.get("total_return"),
                "p_values": arm.p_values,
                "verdict": verdicts.get(arm.arm) or ("the config in force" if arm.role == "active" else ""),
            }
            for arm in record.arms
        ],
        "promotion": {
            "promoted": record.promoted,
            "active_version_read": record.active_version,
            "promoted_version": record.promoted_version,
            "conflict": record.conflict,
            "note": details.get("promotion"),
            "in_force": bool(record.promoted and current and current.experiment_id == record.experiment_id),
            "active_now": None
            if current is None
            else {
                "version": current.version,
                "source": current.source,
                "experiment_id": current.experiment_id,
            },
        },
        "ga": {
            "task_id": task_id,
            "status": progress.status if progress else None,
            "generations": ga_generations or None,
            "checkpoints": [{"generation": g, "final": final} for g, final in checkpoints],
        },
        "inputs": {
            "assets": ["quote_snapshots", "indicator_frame"],
            "market": record.market,
            "first_day": first_day,
            "last_day": day,
            "days": len(days),
            "open_days": open_days,
        },
        "dagster_run_id": record.run_id,
        "upstream_runs": details.get("upstream_runs"),
        "not_recorded": [key for key in LINEAGE_DETAILS if not details.get(key)],
    }


def _p(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def _print_lineage(lineage: dict[str, Any]) -> None:
    decision, promotion, ga, inputs = (lineage[k] for k in ("decision", "promotion", "ga", "inputs"))
    window = lineage["window"]
    created = f", recorded {lineage['created_at']:%Y-%m-%d %H:%M %Z}" if lineage["created_at"] else ""
    lines = [
        f"experiment   {lineage['experiment_id']} ({lineage['label']}{created})",
        f"market       {lineage['market']}",
        f"partition    {lineage['partition_date']} (key {lineage['partition_key']})",
        f"window       {window['start']:%Y-%m-%d %H:%M} .. {window['end']:%Y-%m-%d %H:%M} UTC "
        f"({decision['held_out_periods'] or '?'} held-out periods)",
        f"decision     {decision['summary']}",
        f"reason       {decision['reason']}",
    ]
    if decision["rule"]:
        lines.append(f"rule         {decision['rule']}")
    lines.append(
        "arms         arm / role / Sharpe / p welch, mann-whitney, bootstrap, 1-DSR, Holm-adjusted / verdict"
    )
    for arm in lineage["arms"]:
        p = arm["p_values"]
        dsr = 1 - p["dsr"] if isinstance(p.get("dsr"), int | float) else None
        p_text = " ".join(_p(v) for v in (p.get("welch"), p.get("mann_whitney"), p.get("bootstrap"), dsr))
        lines.append(
            f"  {arm['arm']:<18} {arm['role']:<10} {_p(arm['sharpe']):>7}  "
            + (f"p {p_text} -> {_p(p.get('p_adjusted'))}  " if p else "")
            + arm["verdict"]
        )
    now = promotion["active_now"]
    if promotion["promoted"]:
        state = (
            "still in force"
            if promotion["in_force"]
            else f"since replaced: now v{now['version']} ({now['source']}, experiment {now['experiment_id'] or '-'})"
            if now
            else "no active config now"
        )
        lines.append(
            f"promotion    read active config v{promotion['active_version_read'] or 0}, wrote "
            f"v{promotion['promoted_version']}: {state}"
        )
    else:
        lines.append(
            f"promotion    none (read active config v{promotion['active_version_read'] or 0})"
            + (f": {promotion['conflict']}" if promotion["conflict"] else "")
            + (f"; {promotion['note']}" if promotion["note"] and not promotion["conflict"] else "")
        )
    if ga["task_id"]:
        gens = ga["generations"]
        span = (
            f"generations {gens.get('first', 0)}..{gens['last']} of {gens['total']}"
            if gens
            else "no progress"
        )
        kept = ", ".join(f"{c['generation']}" + (" (final)" if c["final"] else "") for c in ga["checkpoints"])
        lines.append(f"GA task      {ga['task_id']}")
        lines.append(
            f"             {ga['status'] or 'no progress recorded'}, {span}; checkpoints kept: {kept or 'none'}"
        )
    else:
        lines.append("GA task      not recorded")
    open_days = f", {inputs['open_days']} open" if inputs["open_days"] is not None else ""
    lines.append(
        f"inputs       {' and '.join(inputs['assets'])} of {inputs['market']}: {inputs['days']} day partition(s) "
        f"{inputs['first_day']} .. {inputs['last_day']}{open_days} (keys DAY|{inputs['market']}), "
        "read as one window from the quote store"
    )
    for asset_name, run in (lineage["upstream_runs"] or {}).items():
        lines.append(f"             {asset_name}: run {run}")
    run_id = lineage["dagster_run_id"]
    if run_id:
        lines.append(f"dagster run  {run_id}")
    else:
        prefix = lineage["experiment_id"].rsplit(":", 1)[-1]
        lines.append(
            f"dagster run  not recorded (the experiment id ends with the run id's first 8 characters: {prefix})"
        )
    if lineage["not_recorded"]:
        lines.append("not recorded " + ", ".join(f"details.{key}" for key in lineage["not_recorded"]))
    typer.echo("\n".join(lines))


@experiments_app.command("show")
def experiments_show(
    experiment_id: Annotated[str | None, typer.Argument(help="an id from `rof experiments list`")] = None,
    active: Annotated[
        str | None,
        typer.Option(
            "--active", metavar="MARKET", help="the experiment that promoted MARKET's active config"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
) -> None:
    """One experiment's lineage: market, partition, window, decision with each arm's p-values, the
    promotion, the GA task and its generations, and the partitions and Dagster run it came from."""
    if (experiment_id is None) == (active is None):
        _fail("give an experiment id or --active MARKET (one of them)")
    store = _state_store()
    try:
        if active is not None:
            config, record = store.experiments.promoting(active)
            if config is None:
                _fail(f"{active}: no active config recorded")
            if record is None:
                if config.experiment_id:
                    _fail(
                        f"{config.market}: active config v{config.version} names experiment "
                        f"{config.experiment_id}, which is not recorded"
                    )
                message = (
                    f"{config.market}: active config v{config.version} was set by source {config.source!r} "
                    f"({config.updated_by}, {config.updated_at.astimezone(UTC):%Y-%m-%d %H:%M %Z}), not by an experiment"
                )
                typer.echo(
                    json.dumps({"market": config.market, "experiment": None, "reason": message})
                    if as_json
                    else message
                )
                return
        else:
            record = store.experiments.get(experiment_id)
            if record is None:
                _fail(f"no experiment {experiment_id!r} recorded (see `rof experiments list`)")
        lineage = _experiment_lineage(store, record)
    finally:
        store.dispose()
    if as_json:
        typer.echo(json.dumps(lineage, default=str))
    else:
        _print_lineage(lineage)


# --- config ---------------------------------------------------------------------------------------


@config_app.command("show")
def config_show() -> None:
    """The effective configuration (file + environment), secrets starred."""
    typer.echo(json.dumps(load_settings().redacted(), indent=2, default=str))


# --- bench ----------------------------------------------------------------------------------------


def _emit(result: dict[str, Any]) -> None:
    typer.echo(json.dumps(result, default=float))


@bench_app.command("load-postgres")
def bench_load_postgres(rows: int = 1_000_000) -> None:
    """PostgreSQL store read into a DataFrame vs. psql \\copy over the same rows."""
    from rof_pipelines.bench.load import bench_load_postgres as run

    _emit(run(rows))


@bench_app.command("load-clickhouse")
def bench_load_clickhouse(rows: int = 1_000_000) -> None:
    """ClickHouse store write and read (chDB unless CLICKHOUSE_DB_HOST names a server)."""
    from rof_pipelines.bench.load import bench_load_clickhouse as run

    _emit(run(rows))


@bench_app.command("indicators")
def bench_indicators(rows: int = 1_000_000) -> None:
    """Indicator frame for ROWS one-minute bars."""
    from rof_pipelines.bench.indicators import bench_indicators as run

    _emit(run(rows))


@bench_app.command("window")
def bench_window(
    interval: Annotated[str, typer.Option(help="bar interval: 1m (crypto), 1h (FX), 1d (stocks)")] = "1h",
    days: Annotated[int, typer.Option(help="window length in days")] = 90,
) -> None:
    """Seconds to assemble the window frame the optimiser sees, against one store query of its rows."""
    from rof_pipelines.bench.window import run

    _emit(run(interval, days))


@bench_app.command("sensor")
def bench_sensor(messages: int = 20, spacing: float = 1.5, interval: int = 5) -> None:
    """Publish-to-run-request delay through the real dagster-daemon, RabbitMQ and state store."""
    from rof_pipelines.bench.sensor import bench_sensor as run

    _emit(run(messages, spacing, interval))


@bench_app.command("ga")
def bench_ga(
    workers: Annotated[int, typer.Option(help="worker processes to compare with 1")] = 2,
    repeats: Annotated[
        int, typer.Option(help="1-worker / K-worker runs alternated; each keeps its fastest")
    ] = 5,
) -> None:
    """Genetic optimiser: population 50 x 20 generations on 7 days of 1-minute bars, 1 vs K workers."""
    from rof_pipelines.bench.ga import bench_ga as run

    _emit(run(workers, repeats=repeats))


@bench_app.command("rl")
def bench_rl(bars: int = 1_000_000, episodes: int = 20) -> None:
    """RL training kernel steps/s, and the ratio to the C yardstick (bench/qlearn_ref.c, compiled here)."""
    from rof_pipelines.bench.rl import bench_rl as run

    _emit(run(bars, episodes))


@bench_app.command("ops")
def bench_ops(
    markets: int = 100,
    runs: Annotated[int, typer.Option(help="run records in the Dagster instance")] = 10_000,
    scrapes: int = 200,
    repeats: Annotated[int, typer.Option(help="GA runs with and without recording, alternated")] = 5,
) -> None:
    """The ops service's /metrics scrape latency (p50/p99) with MARKETS markets and RUNS runs in the
    instance (goal p99 < 1 s), and the wall-time overhead of recording metrics on a GA run (goal < 2 %)."""
    from rof_pipelines.bench.ops import bench_ops as run

    _emit(run(markets, runs, scrapes, repeats))


@bench_app.command("alerts")
def bench_alerts(markets: int = 1000, custom: int = 8, repeats: int = 5) -> None:
    """Seconds one alerts_sensor tick spends on the rules for MARKETS markets (the ready-made rules
    plus CUSTOM custom ones): evaluation, state transition, and the whole enqueue on the in-memory
    state store (a tick has 60 s)."""
    from rof_pipelines.bench.alerts import bench_alerts as run

    _emit(run(markets, custom, repeats))


@bench_app.command("backfill")
def bench_backfill(
    markets: Annotated[int, typer.Option(help="synthetic 24/7 markets")] = 10,
    days: Annotated[int, typer.Option(help="whole UTC days ending yesterday")] = 30,
    ga_population: Annotated[int | None, typer.Option(help="override ab_tests.experiment.ga")] = None,
    ga_generations: Annotated[int | None, typer.Option(help="override ab_tests.experiment.ga")] = None,
    max_concurrent_runs: Annotated[
        int | None, typer.Option(help="the queued run coordinator's limit (default: CPUs)")
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds the backfill may take")] = 3 * 3600,
    compute: Annotated[bool, typer.Option(help="also time the same work in one process")] = True,
    smoke: Annotated[bool, typer.Option(help="2 markets x 2 days, GA 8 x 2: a quick look")] = False,
    executor: Annotated[
        str | None, typer.Option(help="system_setup.executor for the runs: in_process | multiprocess")
    ] = None,
    partitions_per_run: Annotated[
        int | None, typer.Option(help="system_setup.backfill_partitions_per_run (1: a run per partition)")
    ] = None,
) -> None:
    """A partition backfill of every market-day asset over MARKETS x DAYS through the real
    dagster-daemon (PostgreSQL instance, queued coordinator), against the same partitions computed
    in one process: partitions per minute, runs per partition, every partition materialised once,
    compute / wall, and where a run's time goes (from its event log)."""
    from rof_pipelines.bench.backfill import SMOKE
    from rof_pipelines.bench.backfill import bench_backfill as run

    if smoke:
        markets, days = SMOKE["markets"], SMOKE["days"]
        ga_population = ga_population or SMOKE["ga_population"]
        ga_generations = ga_generations or SMOKE["ga_generations"]
    _emit(
        run(
            markets,
            days,
            ga_population,
            ga_generations,
            max_concurrent_runs,
            timeout,
            compute,
            executor,
            partitions_per_run,
        )
    )


@bench_app.command("scale")
def bench_scale(
    workers: Annotated[str, typer.Option(help="worker counts to compare, e.g. 1,2")] = "1,2",
    islands: Annotated[int, typer.Option(help="ab_tests.experiment.ga.islands")] = 4,
    population: Annotated[int, typer.Option(help="the whole GA population (split over the islands)")] = 1600,
    generations: Annotated[int, typer.Option(help="GA generations")] = 40,
    migration_interval: Annotated[int, typer.Option(help="generations per epoch")] = 10,
) -> None:
    """One partition's island GA on 1, 2, ... dagster-celery workers on the configured RabbitMQ:
    run seconds per worker count, speedup, same_result, island steps per worker, and peak memory per
    worker against one single-process GA step."""
    from rof_pipelines.bench.scale import bench_scale as run

    try:
        counts = [int(part) for part in workers.split(",") if part.strip()]
    except ValueError:
        _fail(f"--workers must be comma-separated counts such as 1,2; got {workers!r}")
    _emit(run(counts, islands, population, generations, migration_interval))


@bench_app.command("download")
def bench_download(
    candles: Annotated[int, typer.Option(help="1-minute candles to download (525600: a year)")] = 525_600,
) -> None:
    """A year of 1-minute candles from the stand-in exchange (its own process) through ccxt, its rate
    limiter and the breaker into a temporary Parquet store: wall seconds, candles/s, the limiter's
    floor, the stand-in's CPU apart, and the pages a download killed mid-page re-fetches (goal <= 1)."""
    from rof_pipelines.bench.download import bench_download as run

    _emit(run(candles))


# --- ops --------------------------------------------------------------------------------------------


@ops_app.command("serve")
def ops_serve(
    host: Annotated[str, typer.Option(help="bind address; loopback unless exposed on purpose")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="default: system_setup.metrics_port")] = None,
    critical: Annotated[
        list[str] | None,
        typer.Option(
            "--critical",
            help="a dependency whose failure makes /health 503 (repeatable; default state_store "
            "and dagster_instance; also quote_store, rabbitmq, dagster_daemon)",
        ),
    ] = None,
    probe_timeout: Annotated[
        float | None,
        typer.Option(help="seconds each /health probe may take (default: call_timeout, at most 3)"),
    ] = None,
) -> None:
    """Serve /metrics (Prometheus), /health, /health/live and /health/ready until stopped, and the
    profiler on pprof_port when system_setup.profiling_enabled."""
    from rof_pipelines.ops.app import build_app, serve
    from rof_pipelines.ops.health import DEFAULT_CRITICAL, DEPENDENCIES
    from rof_pipelines.ops.profiling import describe, ops_app_debug_routes, start_profiling_server

    settings = load_settings()
    unknown = sorted(set(critical or ()) - set(DEPENDENCIES))
    if unknown:
        _fail(f"--critical {', '.join(unknown)}: use one of {', '.join(DEPENDENCIES)}")
    os.environ.setdefault("DAGSTER_HOME", str(DEFAULT_DAGSTER_HOME))
    app_ = build_app(
        load_settings,
        critical=critical or DEFAULT_CRITICAL,
        timeout_s=probe_timeout,
        extra_routes=ops_app_debug_routes(settings),
    )
    port = port or settings.system_setup.metrics_port
    profiler = start_profiling_server(settings)
    typer.echo(
        f"rof ops: http://{host}:{port}/metrics /health  DAGSTER_HOME={os.environ['DAGSTER_HOME']}; "
        f"{describe(profiler)}",
        err=True,
    )
    try:
        serve(app_, host=host, port=port, log_level=settings.system_setup.log_level)
    finally:
        if profiler is not None:
            profiler.stop()


# --- demo and ui ----------------------------------------------------------------------------------


def _dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME)
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(
            "# Local instance for `rof demo` and `rof ui` (SQLite in this folder).\ntelemetry:\n  enabled: false\n"
        )
    return home


@app.command()
def demo(
    days: Annotated[int, typer.Option(help="whole UTC days ending yesterday")] = 3,
    seed: int = 0,
    market: Annotated[
        list[str] | None,
        typer.Option(
            "--market",
            "-m",
            help="exchange:PAIR=PATTERN (none | momentum), repeatable; default "
            "binance:SOLUSDT=momentum and binance:BTCUSDT=none",
        ),
    ] = None,
) -> None:
    """The main job end to end on two synthetic markets: one with a planted momentum pattern the
    optimiser can find, one pure random walk. Generates their quotes into the configured store (the
    embedded Parquet store by default) where it has none, then materialises every asset for each
    market and day through Dagster with the demo's config (config.yaml with 15-minute bars over a
    two-week window and a smaller GA: the summary names the file), recorded in a persistent local
    instance the UI shows afterwards."""
    from rof_pipelines.adapters.embedded_pg import ensure_state_store
    from rof_pipelines.core.market import Market
    from rof_pipelines.core.quotes import PATTERNS
    from rof_pipelines.demo import DEMO_MARKETS, DemoMarket, run_demo

    markets = list(DEMO_MARKETS)
    if market:
        markets = []
        for spec in market:
            key, _, pattern = spec.partition("=")
            if (pattern or "none") not in PATTERNS:
                _fail(f"--market {spec!r}: the pattern must be one of {', '.join(PATTERNS)}")
            try:
                markets.append(DemoMarket(Market.parse(key).key, pattern or "none"))
            except ValueError as exc:
                _fail(f"--market {spec!r}: {exc}")
    home = _dagster_home()
    started = time.perf_counter()
    settings = load_settings()
    try:
        if ensure_state_store(settings.state_storage):  # outlives the demo: the UI and the CLI see it
            typer.echo(f"embedded state store started in {time.perf_counter() - started:.1f}s")
    except RofError as exc:  # the demo still runs what needs no state store, and says so
        typer.echo(f"state store: could not be started ({exc})")
    summary = run_demo(settings, days=days, seed=seed, markets=markets)
    typer.echo(summary.render())
    typer.echo(
        f"\n{summary.runs} runs in {time.perf_counter() - started:.1f}s, recorded in DAGSTER_HOME={home}"
    )
    typer.echo("open the UI with: .venv/bin/rof ui   (then http://127.0.0.1:3000)")
    if summary.failed:
        raise typer.Exit(1)


@app.command("run")
def run_partitions(
    market: Annotated[list[str], typer.Option("--market", "-m", help="exchange:PAIR, repeatable")],
    date_: Annotated[
        list[str], typer.Option("--date", "-d", help="UTC day YYYY-MM-DD, repeatable; or FIRST..LAST")
    ],
    ga_generations: Annotated[int | None, typer.Option(help="override ab_tests.experiment.ga")] = None,
    ga_population: Annotated[int | None, typer.Option(help="override ab_tests.experiment.ga")] = None,
    job: str = "all_market_day_assets",
) -> None:
    """Materialise every asset (quotes -> indicators -> agent, optimiser -> A/B report -> knowledge)
    for the given markets and days through Dagster, in the local instance `rof ui` shows. Days the
    market's calendar is closed are skipped, not failed; a day outside the partitions is refused."""
    from dagster import DagsterInstance

    from rof_pipelines.adapters.quote_stores import open_quote_store
    from rof_pipelines.core.market import Market
    from rof_pipelines.demo import DemoSummary, run_market_days
    from rof_pipelines.errors import PartitionOutOfRange
    from rof_pipelines.partitions import check_partition_day

    settings = _settings()
    try:
        markets = [Market.parse(m) for m in market]
        days = sorted({day for spec in date_ for day in _day_range(spec)})
        for day in days:
            check_partition_day(day)
    except (ValueError, PartitionOutOfRange) as exc:
        _fail(str(exc))
    ga_config = {
        key: value
        for key, value in (("generations", ga_generations), ("population_size", ga_population))
        if value is not None
    }
    run_config = {"ops": {"ga_population": {"config": ga_config}}} if ga_config else None
    home = _dagster_home()
    started = time.perf_counter()
    outcomes = run_market_days(markets, days, DagsterInstance.get(), job_name=job, run_config=run_config)
    summary = DemoSummary(open_quote_store(settings).describe(), {}, outcomes)
    typer.echo(summary.render())
    typer.echo(
        f"\n{summary.runs} runs in {time.perf_counter() - started:.1f}s, recorded in DAGSTER_HOME={home}"
    )
    if summary.failed:
        raise typer.Exit(1)


def _day_range(spec: str) -> list[date]:
    first, sep, last = spec.partition("..")
    try:
        start = date.fromisoformat(first.strip())
        end = date.fromisoformat(last.strip()) if sep else start
    except ValueError:
        raise ValueError(f"--date {spec!r}: use YYYY-MM-DD or FIRST..LAST") from None
    if end < start:
        raise ValueError(f"--date {spec!r}: the last day is before the first")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


@app.command()
def ui(port: int = 3000, host: str = "127.0.0.1") -> None:
    """``dagster dev`` on the same local instance (and state store) as ``rof demo``."""
    from rof_pipelines.adapters.embedded_pg import ensure_state_store

    home = _dagster_home()
    settings = load_settings()
    ensure_state_store(settings.state_storage)  # its holder is not a child of dagster dev: it stays up
    typer.echo(f"DAGSTER_HOME={home}  state store: {settings.state_storage.describe()}")
    os.execvp(
        sys.executable,
        [
            sys.executable,
            # `dg dev` (dagster-dg-cli) is not installed; silence `dagster dev`'s "use dg dev" notice.
            "-W",
            "ignore:Function `dev_command` is superseded",
            "-m",
            "dagster",
            "dev",
            "-w",
            str(PROJECT_ROOT / "workspace.yaml"),
            "-h",
            host,
            "-p",
            str(port),
        ],
    )


if __name__ == "__main__":
    main()
