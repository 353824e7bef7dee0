"""Scrape-time collectors: the ``instance`` and ``state_store`` routes of ``adapters/metrics.py``.

Each collector reads, when Prometheus scrapes, what runs left behind, so a queued run, a run that
crashed and a GA killed mid-run are still counted:

- :class:`InstanceCollector` - the Dagster instance: runs per pool (``rof/pool`` tag) and status as
  counts (one COUNT query each, no run loaded; queued and in progress every scrape, finished runs
  and the wait and run seconds over each pool's last :data:`RECENT_RUNS` runs every
  :data:`FINISHED_TTL_S`, since those queries grow with the history), the oldest queued run per
  pool, each daemon's heartbeat age and each sensor's failed ticks in a row, and the newest
  materialisation per market of ``q_table``, ``ga_population``, ``quote_snapshots`` and
  ``indicator_frame`` (read incrementally: each scrape fetches only the events after the last
  storage id it saw), with the open-market seconds since the newest quote by the market's calendar;
- :class:`StateStoreCollector` - the state store: the newest ``worker_progress`` row per market (one
  ``DISTINCT ON`` query), tasks per status, the newest two champions' fitness per market, the
  drawdown of the config in force on the newest A/B window, ``config_versions`` per status, and the
  alert outbox (``alerts_*``);
- :func:`process_collector` - this process's own metric objects with ``process="ops"``.

``collect()`` never raises: a source that does not answer yields its ``*_up`` gauge at 0 and what
else it can. Names, help and labels come from :data:`~rof_pipelines.adapters.metrics.FAMILIES`.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np

from rof_pipelines.adapters import metrics
from rof_pipelines.partitions import MARKETS_PARTITION, market_and_day
from rof_pipelines.settings import Settings

log = logging.getLogger(__name__)

POOL_TAG = "rof/pool"
NO_POOL = "none"
RECENT_RUNS = 200  # per pool, for the wait and run-time quantiles
FINISHED_TTL_S = 30.0  # finished-run counts and quantiles grow with history: refreshed this often
UNTAGGED_SCAN = 50  # queued runs looked at for the oldest one without a pool tag
EVENT_PAGE = 1000  # materialisation events per instance query
FIRST_FILL_EVENTS = 5000  # the first scrape reads at most this many of an asset's newest events
RUN_STATUSES_FINISHED = {"SUCCESS": "success", "FAILURE": "failure", "CANCELED": "canceled"}
ASSETS = ("q_table", "ga_population", "quote_snapshots", "indicator_frame")
_WARN_EVERY_S = 60.0


class _Throttled:
    """Logs a source's failure at most once a minute (a scrape every 15 s would flood the log)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def warn(self, source: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last.get(source, -_WARN_EVERY_S) >= _WARN_EVERY_S:
            self._last[source] = now
            log.warning(
                "metrics: %s did not answer (%s: %s); its families are skipped",
                source,
                type(exc).__name__,
                exc,
            )


def _quantiles(values: np.ndarray) -> list[tuple[str, float]]:
    if values.size == 0:
        return []
    qs = np.quantile(values, [0.5, 0.9, 1.0])
    return list(zip(metrics.RUN_WAIT_QUANTILES, (float(q) for q in qs), strict=True))


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


@dataclass
class _Latest:
    """The newest materialisation per market of one asset (by partition day, then storage id)."""

    cursor: int | None = None
    by_market: dict[str, tuple[date, int, float, dict[str, Any]]] = field(default_factory=dict)

    def add(self, record: Any) -> None:
        mat = record.asset_materialization
        if mat is None or mat.partition is None:
            return
        try:
            market, day = market_and_day(mat.partition)
        except Exception:  # a partition of another definition: not ours to count
            return
        key = (day, record.storage_id)
        held = self.by_market.get(market.key)
        if held is None or key > held[:2]:
            values = {name: getattr(value, "value", value) for name, value in mat.metadata.items()}
            self.by_market[market.key] = (day, record.storage_id, record.timestamp, values)


def _counts_per_pool(
    instance: Any, groups: Mapping[str, list[Any]], pools: list[str]
) -> dict[str, dict[str, int]]:
    """Runs per pool and status group: one COUNT per (pool, group) plus one per group for the runs
    without a pool tag (the total less the pools'); no run is loaded."""
    from dagster import RunsFilter

    def count(statuses: list[Any], pool: str | None) -> int:
        tags = {POOL_TAG: pool} if pool is not None else None
        return instance.get_runs_count(filters=RunsFilter(statuses=statuses, tags=tags))

    per_pool = {pool: {name: count(statuses, pool) for name, statuses in groups.items()} for pool in pools}
    totals = {name: count(statuses, None) for name, statuses in groups.items()}
    per_pool[NO_POOL] = {
        name: max(0, totals[name] - sum(p[name] for p in per_pool.values())) for name in groups
    }
    return per_pool


class InstanceCollector:
    """``instance`` route: runs and materialisations the Dagster instance holds."""

    def __init__(
        self,
        instance: Any | Callable[[], Any],
        pools: Callable[[], list[str]],
        calendar_of: Callable[[str], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._instance = instance
        self._pools = pools
        self._calendar_of = calendar_of  # market key -> its MarketCalendar (open-market staleness)
        self._clock = clock  # unix seconds the ages are measured at (tests plant a weekend)
        self._latest = {asset: _Latest() for asset in ASSETS}
        self._finished: tuple[Any, ...] | None = None
        self._lock = threading.Lock()
        self._warn = _Throttled()

    def use(self, instance: Any) -> None:
        """Read ``instance`` from now on (the alerts sensor gets one per tick; same storage, so the
        incremental cursors stay valid)."""
        with self._lock:
            self._instance = instance

    def instance(self) -> Any:
        if callable(self._instance) and not hasattr(self._instance, "get_run_records"):
            self._instance = self._instance()
        return self._instance

    def collect(self, now: float | None = None) -> Iterator[Any]:
        """The families; ages are measured at ``now`` (unix seconds; default the clock), so a snapshot
        taken "at" a moment gives the same ages as its other figures."""
        up = 1.0
        families: list[Any] = []
        moment = self._clock() if now is None else now
        try:
            with self._lock:
                instance = self.instance()
                families += self._runs(instance, moment)
                families += self._daemons_and_sensors(instance, moment)
                families += self._materialisations(instance, moment)
        except Exception as exc:
            up = 0.0
            self._warn.warn("the Dagster instance", exc)
        yield metrics.FAMILIES["workerpool_instance_up"].build([((), up)])
        yield from families

    # -- runs ------------------------------------------------------------------------------------------

    def _runs(self, instance: Any, now_s: float) -> list[Any]:
        from dagster import DagsterRunStatus

        pools = list(self._pools())
        active = {
            "queued": [DagsterRunStatus.QUEUED],
            "running": [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED],
        }
        counts = _counts_per_pool(instance, active, pools)
        now = time.monotonic()
        if self._finished is None or now - self._finished[0] >= FINISHED_TTL_S or self._finished[1] != pools:
            self._finished = (now, pools, *self._finished_runs(instance, pools))
        _at, _pools, finished, wait, run_s = self._finished
        f = metrics.FAMILIES
        return [
            f["workerpool_oldest_queued_seconds"].build(self._oldest_queued(instance, pools, now_s)),
            f["workerpool_runs_queued"].build([((pool,), c["queued"]) for pool, c in counts.items()]),
            f["workerpool_runs_in_progress"].build([((pool,), c["running"]) for pool, c in counts.items()]),
            f["workerpool_run_wait_seconds"].build(wait),
            f["workerpool_run_seconds"].build(run_s),
            f["workerpool_runs_finished_total"].build(finished),
        ]

    @staticmethod
    def _oldest_queued(instance: Any, pools: list[str], now: float) -> list[Any]:
        """Per pool, how long its oldest queued run has waited: one ``limit=1`` query each."""
        from dagster import DagsterRunStatus, RunsFilter

        out = []
        for pool in pools:
            oldest = instance.get_run_records(
                filters=RunsFilter(statuses=[DagsterRunStatus.QUEUED], tags={POOL_TAG: pool}),
                limit=1,
                ascending=True,
            )
            age = max(0.0, now - oldest[0].create_timestamp.timestamp()) if oldest else 0.0
            out.append(((pool,), age))
        # Runs without a pool tag cannot be filtered for: the oldest untagged among the oldest queued.
        queued = instance.get_run_records(
            filters=RunsFilter(statuses=[DagsterRunStatus.QUEUED]), limit=UNTAGGED_SCAN, ascending=True
        )
        untagged = [r for r in queued if POOL_TAG not in r.dagster_run.tags]
        age = max(0.0, now - untagged[0].create_timestamp.timestamp()) if untagged else 0.0
        out.append(((NO_POOL,), age))
        return out

    @staticmethod
    def _daemons_and_sensors(instance: Any, now: float) -> list[Any]:
        """Each daemon's heartbeat age, and each sensor's failed ticks in a row (its newest tick's
        ``consecutive_failure_count``: one ``limit=1`` query per sensor)."""
        # Ticks and instigator states have no public API (the UI reads them the same way).
        from dagster._core.scheduler.instigation import InstigatorType, TickStatus

        beats = [
            ((str(name),), max(0.0, now - beat.timestamp))
            for name, beat in sorted(instance.get_daemon_heartbeats().items())
        ]
        failing: dict[str, float] = {}
        # An instance without schedule storage (DagsterInstance.ephemeral()) has no sensors: no figure,
        # rather than losing every instance family to its "Schedule storage not available".
        states = (
            instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
            if instance.schedule_storage is not None
            else []
        )
        for state in states:
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
            if ticks:
                tick = ticks[0]
                failed = tick.status == TickStatus.FAILURE
                failing[state.instigator_name] = (
                    float(max(1, tick.consecutive_failure_count or 0)) if failed else 0.0
                )
        f = metrics.FAMILIES
        return [
            f["workerpool_daemon_heartbeat_age_seconds"].build(beats),
            f["workerpool_sensor_consecutive_failures"].build(
                [((name,), value) for name, value in sorted(failing.items())]
            ),
        ]

    @staticmethod
    def _finished_runs(instance: Any, pools: list[str]) -> tuple[list[Any], list[Any], list[Any]]:
        """Finished runs per pool and status, and the wait/run quantiles of each pool's recent runs:
        the queries that grow with the instance's history, refreshed every FINISHED_TTL_S."""
        from dagster import DagsterRunStatus, RunsFilter

        groups = {name: [DagsterRunStatus[status]] for status, name in RUN_STATUSES_FINISHED.items()}
        counts = _counts_per_pool(instance, groups, pools)
        finished = [((pool, name), c[name]) for pool, c in counts.items() for name in groups]
        wait, run_s = [], []
        recent = [DagsterRunStatus.STARTED, *(DagsterRunStatus[s] for s in RUN_STATUSES_FINISHED)]
        for pool in pools:
            records = instance.get_run_records(
                filters=RunsFilter(tags={POOL_TAG: pool}, statuses=recent), limit=RECENT_RUNS
            )
            created = np.array([r.create_timestamp.timestamp() for r in records], dtype=np.float64)
            started = np.array([np.nan if r.start_time is None else r.start_time for r in records])
            ended = np.array([np.nan if r.end_time is None else r.end_time for r in records])
            waited, ran = started - created, ended - started
            wait += [((pool, q), v) for q, v in _quantiles(waited[np.isfinite(waited)].clip(min=0))]
            run_s += [((pool, q), v) for q, v in _quantiles(ran[np.isfinite(ran)].clip(min=0))]
        return finished, wait, run_s

    # -- materialisations -------------------------------------------------------------------------------

    def _refresh(self, instance: Any, asset: str) -> dict[str, tuple[date, int, float, dict[str, Any]]]:
        from dagster import AssetKey, AssetRecordsFilter

        latest = self._latest[asset]
        key = AssetKey(asset)
        if latest.cursor is None:  # first scrape: the newest events only, newest first
            cursor, read = None, 0
            while read < FIRST_FILL_EVENTS:
                page = instance.fetch_materializations(key, limit=EVENT_PAGE, cursor=cursor, ascending=False)
                for record in page.records:
                    latest.add(record)
                    latest.cursor = max(latest.cursor or 0, record.storage_id)
                read += len(page.records)
                if not page.has_more:
                    break
                cursor = page.cursor
            latest.cursor = latest.cursor or 0
            return latest.by_market
        while True:  # later scrapes: what was stored since
            page = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=key, after_storage_id=latest.cursor),
                limit=EVENT_PAGE,
                ascending=True,
            )
            for record in page.records:
                latest.add(record)
                latest.cursor = max(latest.cursor, record.storage_id)
            if not page.has_more or not page.records:
                return latest.by_market

    def _materialisations(self, instance: Any, now: float) -> list[Any]:
        known = set(instance.get_dynamic_partitions(MARKETS_PARTITION))
        f = metrics.FAMILIES

        def series(asset: str, pick: Callable[[Mapping[str, Any], float], float | None]) -> list[Any]:
            out = []
            for market, (_day, _sid, ts, values) in sorted(self._refresh(instance, asset).items()):
                value = pick(values, ts) if market in known else None
                if value is not None:
                    out.append(((market,), value))
            return out

        def meta(name: str) -> Callable[[Mapping[str, Any], float], float | None]:
            return lambda values, _ts: _number(values.get(name))

        def last_quote(values: Mapping[str, Any]) -> datetime | None:
            try:
                stamp = datetime.fromisoformat(str(values.get("last_ts")))
            except ValueError:
                return None
            return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)

        def freshness(values: Mapping[str, Any], _ts: float) -> float | None:
            stamp = last_quote(values)
            return None if stamp is None else max(0.0, now - stamp.timestamp())

        def stale_open(market: str, values: Mapping[str, Any]) -> float | None:
            """Open-market seconds since the newest quote: a weekend does not make FX data stale."""
            stamp = last_quote(values)
            if stamp is None or self._calendar_of is None:
                return None
            moment = datetime.fromtimestamp(now, UTC)
            if stamp >= moment:
                return 0.0
            try:
                return float(self._calendar_of(market).open_seconds(stamp, moment))
            except Exception:  # a calendar that does not cover the span: no figure rather than a wrong one
                return None

        def kelly(values: Mapping[str, Any], _ts: float) -> float | None:
            return _number(values.get("test/kelly_fraction", values.get("kelly_max_fraction")))

        return [
            f["rl_agent_episodes"].build(series("q_table", meta("episodes"))),
            f["rl_agent_episode_reward"].build(series("q_table", meta("final_episode_reward"))),
            f["rl_agent_state_coverage"].build(series("q_table", meta("state_coverage"))),
            f["rl_agent_trades"].build(series("q_table", meta("test/n_trades"))),
            f["rl_agent_kelly_fraction"].build(series("q_table", kelly)),
            f["rl_agent_trained_timestamp_seconds"].build(series("q_table", lambda _v, ts: ts)),
            f["ga_trials"].build(series("ga_population", meta("trials"))),
            f["data_manager_rows_loaded"].build(series("quote_snapshots", meta("dagster/row_count"))),
            f["data_manager_bars_loaded"].build(series("indicator_frame", meta("dagster/row_count"))),
            f["data_manager_freshness_seconds"].build(series("quote_snapshots", freshness)),
            f["data_manager_stale_open_seconds"].build(
                [
                    ((market,), value)
                    for market, (_d, _s, _t, values) in sorted(
                        self._latest["quote_snapshots"].by_market.items()
                    )
                    if market in known and (value := stale_open(market, values)) is not None
                ]
            ),
        ]


# --- the state store -------------------------------------------------------------------------------------


def _progress_rows(store: Any) -> tuple[list[Any], dict[str, int]]:
    """The newest worker_progress row per market, and the tasks per status."""
    engine = getattr(store, "engine", None)
    if engine is None:  # the in-memory twin: its rows are few
        rows = store.progress.find()
        newest: dict[str, Any] = {}
        statuses: dict[str, int] = {}
        for row in rows:  # newest first
            newest.setdefault(row.market, row)
            statuses[row.status] = statuses.get(row.status, 0) + 1
        return list(newest.values()), statuses
    import sqlalchemy as sa

    from rof_pipelines.adapters.state_store.records import WorkerProgress

    table = store.table("worker_progress")
    newest_q = (
        sa.select(table)
        .distinct(table.c.market)
        .order_by(table.c.market, table.c.updated_at.desc(), table.c.task_id)
    )
    counts_q = sa.select(table.c.status, sa.func.count()).group_by(table.c.status)

    def run() -> tuple[list[Any], dict[str, int]]:
        with engine.connect() as conn:
            rows = [WorkerProgress(**row) for row in conn.execute(newest_q).mappings()]
            return rows, {status: n for status, n in conn.execute(counts_q)}

    return store.guarded_call(run, operation="read")


def config_version_summary(store: Any) -> tuple[dict[str, int], tuple[str, str | None] | None] | None:
    """config_versions rows per status, and the newest version's status and error (None: no row)."""
    engine = getattr(store, "engine", None)
    if engine is None:
        return None
    import sqlalchemy as sa

    table = store.table("config_versions")
    counts_q = sa.select(table.c.status, sa.func.count()).group_by(table.c.status)
    newest_q = sa.select(table.c.status, table.c.error).order_by(table.c.seq.desc()).limit(1)

    def run() -> tuple[dict[str, int], tuple[str, str | None] | None]:
        with engine.connect() as conn:
            counts = {status: n for status, n in conn.execute(counts_q)}
            newest = conn.execute(newest_q).first()
        return counts, (newest[0], newest[1]) if newest is not None else None

    return store.guarded_call(run, operation="read")


def _champions(store: Any) -> dict[str, tuple[float, float | None]]:
    """Per market, the best fitness of its newest completed GA task and of the one before."""
    engine = getattr(store, "engine", None)
    if engine is None:
        pairs: dict[str, list[float]] = {}
        for row in store.progress.find(status="completed"):  # newest first
            if row.best_fitness is not None and len(pairs.setdefault(row.market, [])) < 2:
                pairs[row.market].append(float(row.best_fitness))
        return {m: (v[0], v[1] if len(v) > 1 else None) for m, v in pairs.items()}
    import sqlalchemy as sa

    table = store.table("worker_progress")
    rank = (
        sa.func.row_number()
        .over(partition_by=table.c.market, order_by=(table.c.updated_at.desc(), table.c.task_id))
        .label("rank")
    )
    ranked = (
        sa.select(table.c.market, table.c.best_fitness, rank)
        .where(table.c.status == "completed", table.c.best_fitness.is_not(None))
        .subquery()
    )
    query = sa.select(ranked.c.market, ranked.c.best_fitness, ranked.c.rank).where(ranked.c.rank <= 2)

    def run() -> dict[str, tuple[float, float | None]]:
        out: dict[str, list[float | None]] = {}
        with engine.connect() as conn:
            for market, fitness, position in conn.execute(query):
                out.setdefault(market, [None, None])[position - 1] = float(fitness)
        return {m: (v[0], v[1]) for m, v in out.items() if v[0] is not None}

    return store.guarded_call(run, operation="read")


def _active_drawdowns(store: Any) -> dict[str, float]:
    """Per market, the max drawdown of the config in force (arm role ``active``) on its newest A/B
    test window."""
    engine = getattr(store, "engine", None)
    if engine is None:
        out: dict[str, float] = {}
        seen: set[str] = set()
        for record in store.experiments.recent(limit=1000):  # newest first
            if record.market in seen:  # only the newest window counts, as in the SQL query
                continue
            seen.add(record.market)
            for arm in record.arms:
                value = _number(arm.metrics.get("max_drawdown")) if arm.role == "active" else None
                if value is not None:
                    out[record.market] = value
        return out
    import sqlalchemy as sa

    experiments, arms = store.table("ab_experiments"), store.table("ab_arms")
    newest = (
        sa.select(experiments.c.experiment_id, experiments.c.market)
        .distinct(experiments.c.market)
        .order_by(experiments.c.market, experiments.c.created_at.desc(), experiments.c.experiment_id)
        .subquery()
    )
    query = sa.select(newest.c.market, arms.c.metrics["max_drawdown"].astext).join(
        arms, sa.and_(arms.c.experiment_id == newest.c.experiment_id, arms.c.role == "active")
    )

    def run() -> dict[str, float]:
        with engine.connect() as conn:
            rows = conn.execute(query).all()
        return {market: value for market, raw in rows if (value := _number(raw)) is not None}

    return store.guarded_call(run, operation="read")


def _alert_figures(store: Any) -> tuple[list[Any], list[Any], list[Any], list[Any], list[Any]]:
    """The outbox as families: fired/resolved notices and failed attempts per rule and channel, alerts
    firing per rule and severity, deliveries waiting per channel."""
    fired: dict[tuple[str, str], float] = {}
    resolved: dict[tuple[str, str], float] = {}
    failed: dict[tuple[str, str], float] = {}
    pending: dict[tuple[str], float] = {}
    for rule, channel, event, status, rows, failures in store.alerts.delivery_counts():
        key = (rule, channel)
        failed[key] = failed.get(key, 0.0) + failures
        if event == "firing":
            fired[key] = fired.get(key, 0.0) + rows
        elif event == "resolved":
            resolved[key] = resolved.get(key, 0.0) + rows
        if status == "pending":
            pending[(channel,)] = pending.get((channel,), 0.0) + rows
    firing: dict[tuple[str, str], float] = {}
    for state in store.alerts.states():
        if state.status == "firing":
            key = (state.rule, state.severity)
            firing[key] = firing.get(key, 0.0) + 1
    return (
        sorted(fired.items()),
        sorted(resolved.items()),
        sorted(failed.items()),
        sorted(firing.items()),
        sorted(pending.items()),
    )


class StateStoreCollector:
    """``state_store`` route: ``worker_progress`` (GA figures a crashed run leaves), the A/B tests'
    drawdowns, ``config_versions`` and the alert outbox."""

    def __init__(self, store: Any | Callable[[], Any]) -> None:
        self._store = store
        self._warn = _Throttled()

    def store(self) -> Any:
        if callable(self._store) and not hasattr(self._store, "progress"):
            self._store = self._store()
        return self._store

    def collect(self) -> Iterator[Any]:
        f = metrics.FAMILIES
        try:
            store = self.store()
            rows, statuses = _progress_rows(store)
            versions = config_version_summary(store)
            champions = _champions(store)
            drawdowns = _active_drawdowns(store)
            alerts = _alert_figures(store)
        except Exception as exc:
            self._warn.warn("the state store", exc)
            yield f["ga_state_store_up"].build([((), 0.0)])
            return
        yield f["ga_state_store_up"].build([((), 1.0)])
        yield from self._ga(rows, statuses)
        yield f["ga_champion_fitness"].build([((m,), c[0]) for m, c in sorted(champions.items())])
        yield f["ga_previous_champion_fitness"].build(
            [((m,), c[1]) for m, c in sorted(champions.items()) if c[1] is not None]
        )
        yield f["rl_agent_active_max_drawdown"].build([((m,), v) for m, v in sorted(drawdowns.items())])
        counts = versions[0] if versions is not None else {}
        yield f["data_manager_config_versions"].build(
            [((status,), counts.get(status, 0)) for status in ("applied", "refused")]
        )
        fired, resolved, failed, firing, pending = alerts
        yield f["alerts_fired_total"].build(fired)
        yield f["alerts_resolved_total"].build(resolved)
        yield f["alerts_deliveries_failed_total"].build(failed)
        yield f["alerts_firing"].build(firing)
        yield f["alerts_deliveries_pending"].build(pending)

    @staticmethod
    def _ga(rows: list[Any], statuses: Mapping[str, int]) -> Iterator[Any]:
        from rof_pipelines.adapters.state_store.tables import PROGRESS_STATUSES

        f = metrics.FAMILIES
        out: dict[str, list[Any]] = {name: [] for name in f if name.startswith("ga_")}
        for row in sorted(rows, key=lambda r: r.market):
            m = (row.market,)
            details = row.details or {}
            total = max(1, row.total_generations)
            out["ga_generation"].append((m, row.generation))
            out["ga_generations_planned"].append((m, row.total_generations))
            done = row.status == "completed"
            out["ga_progress_ratio"].append((m, 1.0 if done else min(1.0, row.generation / total)))
            if row.status == "running" and row.eta_seconds is not None:
                out["ga_eta_seconds"].append((m, row.eta_seconds))
            best = _number(details.get("best_sharpe", row.best_fitness))
            if best is not None:
                out["ga_best_fitness"].append((m, best))
            for name, key in (
                ("ga_mean_fitness", "mean_sharpe"),
                ("ga_evaluations_per_second", "evaluations_per_second"),
            ):
                value = _number(details.get(key))
                if value is not None:
                    out[name].append((m, value))
            evaluations, hits = _number(details.get("evaluations")), _number(details.get("cache_hits"))
            if evaluations is not None and hits is not None and evaluations + hits > 0:
                out["ga_cache_hit_ratio"].append((m, hits / (evaluations + hits)))
            out["ga_progress_timestamp_seconds"].append((m, row.updated_at.timestamp()))
        out["ga_optimisations"] = [((status,), statuses.get(status, 0)) for status in PROGRESS_STATUSES]
        for name, family in f.items():
            if family.route == "state_store" and name.startswith("ga_") and name != "ga_state_store_up":
                yield family.build(out[name])


def process_collector() -> Any:
    """This process's metric objects (breakers, ...) with ``process="ops"``."""
    return metrics.WithLabels(metrics.REGISTRY, {"process": "ops"})


def collectors(
    load_settings: Callable[[], Settings],
    *,
    instance: Any | Callable[[], Any] | None = None,
    store: Any | Callable[[], Any] | None = None,
) -> list[Any]:
    """The ops service's collectors: this process's own metrics, the instance's and the state store's.
    ``instance`` defaults to ``DagsterInstance.get()`` and ``store`` to the configured state store,
    both opened at the first scrape (never at import); pools come from the settings at each scrape."""

    def default_instance() -> Any:
        from dagster import DagsterInstance

        return DagsterInstance.get()

    def default_store() -> Any:
        from rof_pipelines.adapters.state_store import StateStore

        settings = load_settings()
        return StateStore(settings.state_storage, settings.system_setup.circuit_breaker)

    def pools() -> list[str]:
        return list(type(load_settings().system_setup.worker_pool).model_fields)

    return [
        process_collector(),
        InstanceCollector(
            instance if instance is not None else default_instance,
            pools,
            lambda market: load_settings().market_profile(market).calendar,
        ),
        StateStoreCollector(store if store is not None else default_store),
    ]
