"""Every Prometheus metric family of the project: names, help, labels and the route each takes.

:data:`FAMILIES` is the one table. Names start with the component that owns the number, so a
dashboard or an alert rule groups by prefix: ``workerpool_`` (runs per pool, and the message flow
that feeds them), ``rl_agent_``, ``ga_``, ``circuit_breaker_``, ``data_manager_`` and ``alerts_``.
Labels take a bounded set of values (:data:`BOUNDED_LABELS`: a pool, a market, a service, a process
kind, a status, a rule, a severity, a channel, a queue, an asset, a daemon, a sensor, a quantile),
never a run, an alert or a message id.

Each family takes one **route** (:data:`ROUTES`):

- ``instance``: built at scrape time by the ops service's collectors (``ops/collectors.py``) from the
  Dagster instance (run records by pool tag and status, the latest materialisation per market), so
  a queued or crashed run is counted;
- ``state_store``: built at scrape time from the state store (``worker_progress`` is written every
  GA generation, so a run killed mid-GA still shows its last generation; ``config_versions``);
- ``process``: a metric object in :data:`REGISTRY`, recorded by the process that does the work; the
  ops service exposes its own with ``process="ops"``, a run pushes its own with ``process="run"``
  (plus the grouping key ``pool``, ``market``, ``asset``);
- ``sensor``: a metric object in :data:`REGISTRY` recorded by a sensor tick, in the code-location
  process (the daemon's), which neither serves /metrics nor runs a step: each tick of the queue
  sensors and of ``config_reload_sensor`` pushes the registry when it ends, with the grouping key
  ``process="sensor"``, ``sensor`` (the sensor's name; ``adapters/pushgateway.py: pushed_tick``);
- ``pushgateway``: a metric object in :data:`RUN_REGISTRY`, recorded in a run's step process and
  pushed (``adapters/pushgateway.py``) with the grouping key ``process="run"``, ``pool``, ``market``,
  ``asset``: the figures only a run process knows.

The table below is the README's (``test_metrics.py`` holds the two to :data:`FAMILIES`). Counters are
listed with their ``_total`` suffix.

===========================================  =======  ===========  ============================
name                                         type     route        labels
===========================================  =======  ===========  ============================
``workerpool_runs_queued``                   gauge    instance     pool
``workerpool_runs_in_progress``              gauge    instance     pool
``workerpool_run_wait_seconds``              gauge    instance     pool, quantile
``workerpool_run_seconds``                   gauge    instance     pool, quantile
``workerpool_runs_finished_total``           counter  instance     pool, status
``workerpool_oldest_queued_seconds``         gauge    instance     pool
``workerpool_daemon_heartbeat_age_seconds``  gauge    instance     daemon
``workerpool_sensor_consecutive_failures``   gauge    instance     sensor
``workerpool_instance_up``                   gauge    instance     (none)
``workerpool_messages_published_total``      counter  sensor       queue, process
``workerpool_messages_received_total``       counter  sensor       queue, process
``workerpool_messages_acked_total``          counter  sensor       queue, process
``workerpool_messages_dead_lettered_total``  counter  sensor       queue, process
``workerpool_inbox_quarantined_total``       counter  sensor       kind, process
``rl_agent_episodes``                        gauge    instance     market
``rl_agent_episode_reward``                  gauge    instance     market
``rl_agent_state_coverage``                  gauge    instance     market
``rl_agent_trades``                          gauge    instance     market
``rl_agent_kelly_fraction``                  gauge    instance     market
``rl_agent_active_max_drawdown``             gauge    state_store  market
``rl_agent_trained_timestamp_seconds``       gauge    instance     market
``ga_generation``                            gauge    state_store  market
``ga_generations_planned``                   gauge    state_store  market
``ga_progress_ratio``                        gauge    state_store  market
``ga_champion_fitness``                      gauge    state_store  market
``ga_previous_champion_fitness``             gauge    state_store  market
``ga_eta_seconds``                           gauge    state_store  market
``ga_best_fitness``                          gauge    state_store  market
``ga_mean_fitness``                          gauge    state_store  market
``ga_evaluations_per_second``                gauge    state_store  market
``ga_cache_hit_ratio``                       gauge    state_store  market
``ga_progress_timestamp_seconds``            gauge    state_store  market
``ga_optimisations``                         gauge    state_store  status
``ga_state_store_up``                        gauge    state_store  (none)
``ga_trials``                                gauge    instance     market
``ga_evaluations_total``                     counter  pushgateway  process, pool, market, asset
``circuit_breaker_state``                    gauge    process      service, process
``circuit_breaker_transitions_total``        counter  process      service, process, state
``circuit_breaker_failures_total``           counter  process      service, process
``data_manager_rows_loaded``                 gauge    instance     market
``data_manager_bars_loaded``                 gauge    instance     market
``data_manager_freshness_seconds``           gauge    instance     market
``data_manager_stale_open_seconds``          gauge    instance     market
``data_manager_load_seconds``                gauge    pushgateway  process, pool, market, asset
``data_manager_load_bytes``                  gauge    pushgateway  process, pool, market, asset
``data_manager_loads_total``                 counter  pushgateway  process, pool, market, asset
``data_manager_ingest_candles_total``        counter  pushgateway  process, pool, market, asset
``data_manager_ingest_lag_seconds``          gauge    pushgateway  process, pool, market, asset
``data_manager_ingest_rate_limit_waits_total`` counter pushgateway process, pool, market, asset
``data_manager_config_reloads_total``        counter  sensor       status, process
``data_manager_config_versions``             gauge    state_store  status
``alerts_fired_total``                       counter  state_store  rule, channel
``alerts_resolved_total``                    counter  state_store  rule, channel
``alerts_deliveries_failed_total``           counter  state_store  rule, channel
``alerts_firing``                            gauge    state_store  rule, severity
``alerts_deliveries_pending``                gauge    state_store  channel
===========================================  =======  ===========  ============================

Values: ``pool`` a pool of ``system_setup.worker_pool`` (``task_worker``, ``ab_optimizer``; runs
without a ``rof/pool`` tag count as ``none``); ``market`` a key ``exchange:PAIR`` of the ``markets``
partitions; ``status`` a run status (``success``, ``failure``, ``canceled``), a GA task status
(``pending``, ``running``, ``completed``, ``failed``, ``cancelled``) or a config edit's (``applied``,
``refused``); ``quantile`` ``0.5``, ``0.9``, ``1`` (the maximum); ``queue`` the queue without its
prefix (``tasks``, ``quotes.updated``, ``backup``, ``dead_letter``); ``kind`` a message kind;
``process`` ``ops``, ``run`` or ``sensor``; ``sensor`` a sensor's name (a label of
``workerpool_sensor_consecutive_failures``, and the grouping key of sensor pushes); ``daemon`` a
Dagster daemon type (``SENSOR``, ``SCHEDULER``, ``QUEUED_RUN_COORDINATOR``, ...); ``state`` a breaker
state (``closed``, ``half_open``, ``open``); ``asset`` a market-day asset; ``rule`` an alert rule in
force (a ready-made one of ``alerting.rules`` such as ``run_failed``, or a name under
``alerting.custom``); ``channel`` a channel name under ``alerting.channels`` (``log`` by default);
``severity`` ``info``, ``warning`` or ``critical``. The ``alerts_*`` families count the outbox
(``alert_deliveries``: one row per notice and channel, kept ``alerting.retention_days``) and the
alerts firing (``alert_states``); see ``docs/alerting.md``.

Metric objects and metric families are built here only (a test refuses a ``Counter(`` or ``Gauge(``
anywhere else in the package, and any import of ``prometheus_client``); adapters import the object
they record to, collectors call :meth:`Family.build`.
"""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

COMPONENT_PREFIXES = ("workerpool_", "rl_agent_", "ga_", "circuit_breaker_", "data_manager_", "alerts_")

BOUNDED_LABELS = frozenset(
    {
        "pool",
        "market",
        "service",
        "process",
        "status",
        "rule",
        "channel",
        "queue",
        "kind",
        "sensor",
        "state",
        "asset",
        "quantile",
        "daemon",
        "severity",
    }
)

ROUTES = {
    "instance": "scrape-time collector reading the Dagster instance (ops service)",
    "state_store": "scrape-time collector reading the state store (ops service)",
    "process": "the recording process's registry: the ops service's own (process=ops), pushed by runs "
    "(process=run, with pool, market, asset)",
    "sensor": "recorded in a sensor tick (the code-location process) and pushed to the Pushgateway when "
    "the tick ends (grouping key process=sensor, sensor)",
    "pushgateway": "recorded in a run's step process and pushed to the Pushgateway (grouping key "
    "process=run, pool, market, asset)",
}
# Labels a route adds at exposition (process) or through the Pushgateway's grouping key.
GROUPING_LABELS = ("process", "pool", "market", "asset")
SENSOR_GROUPING_LABELS = ("process", "sensor")
ROUTE_ADDED_LABELS = {
    "instance": (),
    "state_store": (),
    "process": ("process",),
    "sensor": ("process",),
    "pushgateway": GROUPING_LABELS,
}

RUN_WAIT_QUANTILES = ("0.5", "0.9", "1")


@dataclass(frozen=True)
class Family:
    """One metric family: ``name`` as exposed (a counter with its ``_total``), ``labels`` as exposed."""

    name: str
    type: str  # "gauge" | "counter"
    labels: tuple[str, ...]
    help: str
    route: str

    @property
    def base_name(self) -> str:
        """The name prometheus_client takes (a counter without ``_total``)."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name

    @property
    def recorded_labels(self) -> tuple[str, ...]:
        """The labels a metric object records; the route adds the rest."""
        added = ROUTE_ADDED_LABELS[self.route]
        return tuple(label for label in self.labels if label not in added)

    def build(self, samples: Iterable[tuple[Mapping[str, str] | tuple[str, ...], float]] = ()) -> Metric:
        """A scrape-time family with ``samples`` (label values, value): what collectors yield."""
        cls = CounterMetricFamily if self.type == "counter" else GaugeMetricFamily
        family = cls(self.base_name, self.help, labels=list(self.labels))
        for labels, value in samples:
            values = [labels[name] for name in self.labels] if isinstance(labels, Mapping) else list(labels)
            family.add_metric([str(v) for v in values], float(value))
        return family


def _f(name: str, type_: str, labels: str, help_: str, route: str) -> Family:
    return Family(name, type_, tuple(label for label in labels.split(",") if label), help_, route)


_Q = "pool,quantile"
_PUSH = ",".join(GROUPING_LABELS)
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        # --- workerpool_: the run queue per pool, from the instance; the messages that feed it -------
        _f("workerpool_runs_queued", "gauge", "pool", "Runs waiting in the run queue, per pool", "instance"),
        _f("workerpool_runs_in_progress", "gauge", "pool", "Runs starting or started, per pool", "instance"),
        _f(
            "workerpool_run_wait_seconds",
            "gauge",
            _Q,
            "Seconds from enqueued to started, over the pool's recent runs (quantile 1 = max)",
            "instance",
        ),
        _f(
            "workerpool_run_seconds",
            "gauge",
            _Q,
            "Seconds from started to ended, over the pool's recent finished runs (quantile 1 = max)",
            "instance",
        ),
        _f(
            "workerpool_runs_finished_total",
            "counter",
            "pool,status",
            "Runs finished in the instance, per pool and final status",
            "instance",
        ),
        _f(
            "workerpool_oldest_queued_seconds",
            "gauge",
            "pool",
            "Seconds the pool's oldest queued run has waited (0 when none is queued)",
            "instance",
        ),
        _f(
            "workerpool_daemon_heartbeat_age_seconds",
            "gauge",
            "daemon",
            "Seconds since each Dagster daemon's last heartbeat",
            "instance",
        ),
        _f(
            "workerpool_sensor_consecutive_failures",
            "gauge",
            "sensor",
            "Failed ticks in a row of each sensor, newest first (0 after a good tick)",
            "instance",
        ),
        _f(
            "workerpool_instance_up",
            "gauge",
            "",
            "1 when the Dagster instance answered this scrape",
            "instance",
        ),
        _f(
            "workerpool_messages_published_total",
            "counter",
            "queue,process",
            "Messages published (confirmed by the broker)",
            "sensor",
        ),
        _f(
            "workerpool_messages_received_total",
            "counter",
            "queue,process",
            "Messages fetched with basic_get",
            "sensor",
        ),
        _f(
            "workerpool_messages_acked_total",
            "counter",
            "queue,process",
            "Messages acknowledged after the caller's commit",
            "sensor",
        ),
        _f(
            "workerpool_messages_dead_lettered_total",
            "counter",
            "queue,process",
            "Messages copied to the dead-letter queue, with reason",
            "sensor",
        ),
        _f(
            "workerpool_inbox_quarantined_total",
            "counter",
            "kind,process",
            "Inbox rows a sensor could not turn into run requests and set aside (alert on any increase)",
            "sensor",
        ),
        # --- rl_agent_: the latest q_table materialisation of each market ----------------------------
        _f(
            "rl_agent_episodes",
            "gauge",
            "market",
            "Training episodes of the market's latest agent",
            "instance",
        ),
        _f(
            "rl_agent_episode_reward",
            "gauge",
            "market",
            "Total reward of the latest agent's final episode",
            "instance",
        ),
        _f(
            "rl_agent_state_coverage",
            "gauge",
            "market",
            "Share of the Q-table's states the latest agent visited (0..1)",
            "instance",
        ),
        _f(
            "rl_agent_trades",
            "gauge",
            "market",
            "Trades of the latest agent's out-of-sample backtest",
            "instance",
        ),
        _f(
            "rl_agent_kelly_fraction",
            "gauge",
            "market",
            "Mean Kelly position size of the latest agent's out-of-sample trades",
            "instance",
        ),
        _f(
            "rl_agent_active_max_drawdown",
            "gauge",
            "market",
            "Max drawdown (0..1) of the config in force on the market's newest A/B test window",
            "state_store",
        ),
        _f(
            "rl_agent_trained_timestamp_seconds",
            "gauge",
            "market",
            "When the market's latest agent was materialised (unix seconds)",
            "instance",
        ),
        # --- ga_: the newest optimisation task of each market (worker_progress) -----------------------
        _f(
            "ga_generation",
            "gauge",
            "market",
            "Last generation the market's newest GA task reported",
            "state_store",
        ),
        _f(
            "ga_generations_planned",
            "gauge",
            "market",
            "Generations the newest GA task runs at most",
            "state_store",
        ),
        _f(
            "ga_progress_ratio",
            "gauge",
            "market",
            "generation / generations planned (1 when completed)",
            "state_store",
        ),
        _f(
            "ga_champion_fitness",
            "gauge",
            "market",
            "Best fitness of the market's newest completed GA task",
            "state_store",
        ),
        _f(
            "ga_previous_champion_fitness",
            "gauge",
            "market",
            "Best fitness of the completed GA task before it",
            "state_store",
        ),
        _f("ga_eta_seconds", "gauge", "market", "Estimated seconds left of a running GA task", "state_store"),
        _f(
            "ga_best_fitness",
            "gauge",
            "market",
            "Best Sharpe ratio in the last reported population",
            "state_store",
        ),
        _f(
            "ga_mean_fitness",
            "gauge",
            "market",
            "Mean Sharpe ratio of the last reported population",
            "state_store",
        ),
        _f(
            "ga_evaluations_per_second",
            "gauge",
            "market",
            "Fitness evaluations per second over the task's last reported generation",
            "state_store",
        ),
        _f(
            "ga_cache_hit_ratio",
            "gauge",
            "market",
            "Share of fitness lookups answered by the evaluation cache, whole task",
            "state_store",
        ),
        _f(
            "ga_progress_timestamp_seconds",
            "gauge",
            "market",
            "When the newest GA task last reported (unix seconds; a stale running task died)",
            "state_store",
        ),
        _f("ga_optimisations", "gauge", "status", "GA tasks in worker_progress per status", "state_store"),
        _f("ga_state_store_up", "gauge", "", "1 when the state store answered this scrape", "state_store"),
        _f(
            "ga_trials",
            "gauge",
            "market",
            "Trials in the ledger of the latest ga_population materialisation",
            "instance",
        ),
        _f(
            "ga_evaluations_total",
            "counter",
            _PUSH,
            "Fitness evaluations a run's GA step made",
            "pushgateway",
        ),
        # --- circuit_breaker_: one breaker per service, in each process -------------------------------
        _f(
            "circuit_breaker_state",
            "gauge",
            "service,process",
            "Circuit breaker state per service: 0 closed, 1 half-open, 2 open",
            "process",
        ),
        _f(
            "circuit_breaker_transitions_total",
            "counter",
            "service,process,state",
            "Circuit breaker state changes, by the state entered",
            "process",
        ),
        _f(
            "circuit_breaker_failures_total",
            "counter",
            "service,process",
            "Transient failures seen by a circuit breaker",
            "process",
        ),
        # --- data_manager_: the data the system loads and keeps ---------------------------------------
        _f(
            "data_manager_rows_loaded",
            "gauge",
            "market",
            "Clean quote snapshots of the market's latest quote_snapshots materialisation",
            "instance",
        ),
        _f(
            "data_manager_bars_loaded",
            "gauge",
            "market",
            "Bars of the market's latest indicator_frame materialisation",
            "instance",
        ),
        _f(
            "data_manager_freshness_seconds",
            "gauge",
            "market",
            "Seconds since the newest quote the market's latest quote_snapshots materialisation holds",
            "instance",
        ),
        _f(
            "data_manager_stale_open_seconds",
            "gauge",
            "market",
            "Seconds the market was open (by its trading calendar) since its newest stored quote",
            "instance",
        ),
        _f(
            "data_manager_load_seconds",
            "gauge",
            _PUSH,
            "Seconds the step's last data load took",
            "pushgateway",
        ),
        _f(
            "data_manager_load_bytes",
            "gauge",
            _PUSH,
            "In-memory bytes of the step's last data load",
            "pushgateway",
        ),
        _f(
            "data_manager_loads_total",
            "counter",
            _PUSH,
            "Data loads (store reads) the step made",
            "pushgateway",
        ),
        _f(
            "data_manager_ingest_candles_total",
            "counter",
            _PUSH,
            "Candles the exchange ingest wrote (ingest.markets)",
            "pushgateway",
        ),
        _f(
            "data_manager_ingest_lag_seconds",
            "gauge",
            _PUSH,
            "Seconds the newest stored candle's close is behind the exchange's clock, after a fetch",
            "pushgateway",
        ),
        _f(
            "data_manager_ingest_rate_limit_waits_total",
            "counter",
            _PUSH,
            "Waits on an exchange's rate limit (HTTP 429 / Retry-After) during ingest",
            "pushgateway",
        ),
        _f(
            "data_manager_config_reloads_total",
            "counter",
            "status,process",
            "config.yaml edits seen by the hot-reload sensor",
            "sensor",
        ),
        _f(
            "data_manager_config_versions",
            "gauge",
            "status",
            "config.yaml versions recorded by hot reload, per status",
            "state_store",
        ),
        # --- alerts_ ------------------------------------------------------------------------------------
        _f(
            "alerts_fired_total",
            "counter",
            "rule,channel",
            "Alerts fired, per rule and delivery channel",
            "state_store",
        ),
        _f(
            "alerts_resolved_total",
            "counter",
            "rule,channel",
            "Alerts resolved, per rule and channel",
            "state_store",
        ),
        _f(
            "alerts_deliveries_failed_total",
            "counter",
            "rule,channel",
            "Alert deliveries that failed, per rule and channel",
            "state_store",
        ),
        _f(
            "alerts_firing",
            "gauge",
            "rule,severity",
            "Alerts firing now, per rule and severity",
            "state_store",
        ),
        _f(
            "alerts_deliveries_pending",
            "gauge",
            "channel",
            "Notifications waiting in the outbox (or being retried), per channel",
            "state_store",
        ),
    )
}

# The ops service's, every run's and every sensor tick's registry (routes "process" and "sensor"), and a
# run step's own (route "pushgateway").
REGISTRY = CollectorRegistry(auto_describe=True)
RUN_REGISTRY = CollectorRegistry(auto_describe=True)


def _metric(name: str) -> Any:
    family = FAMILIES[name]
    registry = {"process": REGISTRY, "sensor": REGISTRY, "pushgateway": RUN_REGISTRY}[family.route]
    cls = Counter if family.type == "counter" else Gauge
    return cls(family.base_name, family.help, list(family.recorded_labels), registry=registry)


# --- route "process" ---------------------------------------------------------------------------------
BREAKER_STATE = _metric("circuit_breaker_state")
BREAKER_TRANSITIONS = _metric("circuit_breaker_transitions_total")
BREAKER_FAILURES = _metric("circuit_breaker_failures_total")
# --- route "sensor" (recorded by sensor ticks, in the process's registry, pushed by each tick) ----------
MESSAGES_PUBLISHED = _metric("workerpool_messages_published_total")
MESSAGES_RECEIVED = _metric("workerpool_messages_received_total")
MESSAGES_ACKED = _metric("workerpool_messages_acked_total")
MESSAGES_DEAD_LETTERED = _metric("workerpool_messages_dead_lettered_total")
INBOX_QUARANTINED = _metric("workerpool_inbox_quarantined_total")
CONFIG_RELOADS = _metric("data_manager_config_reloads_total")

# --- route "pushgateway" (a run's step process) ---------------------------------------------------------
GA_EVALUATIONS = _metric("ga_evaluations_total")
DATA_LOAD_SECONDS = _metric("data_manager_load_seconds")
DATA_LOAD_BYTES = _metric("data_manager_load_bytes")
DATA_LOADS = _metric("data_manager_loads_total")
INGEST_CANDLES = _metric("data_manager_ingest_candles_total")
INGEST_LAG = _metric("data_manager_ingest_lag_seconds")
INGEST_RATE_LIMIT_WAITS = _metric("data_manager_ingest_rate_limit_waits_total")


def families(route: str | None = None) -> list[Family]:
    return [f for f in FAMILIES.values() if route is None or f.route == route]


class WithLabels:
    """A collector re-exposing ``registry``'s families with constant labels added (``process="ops"``)."""

    def __init__(self, registry: CollectorRegistry, labels: Mapping[str, str]) -> None:
        self.registry = registry
        self.labels = dict(labels)

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                out.add_sample(sample.name, {**sample.labels, **self.labels}, sample.value, sample.timestamp)
            yield out


def new_registry(collectors: Iterable[Any] = ()) -> CollectorRegistry:
    """A registry holding ``collectors`` (anything with ``collect()``)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The Prometheus text exposition of ``registry`` and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def sample_value(
    name: str, labels: dict[str, str] | None = None, registry: CollectorRegistry | None = None
) -> float:
    """The current value of one series (0 when it was never recorded): for tests and health checks."""
    value = (registry or REGISTRY).get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def record_load(seconds: float, frame: Any) -> None:
    """One data load of this process (a quote-store read): its time, its in-memory bytes, +1 load."""
    DATA_LOAD_SECONDS.set(seconds)
    DATA_LOAD_BYTES.set(
        float(frame.memory_usage(index=True, deep=False).sum()) if len(frame.columns) else 0.0
    )
    DATA_LOADS.inc()


def record_ingest(candles: int, lag_seconds: float | None, rate_limit_waits: int) -> None:
    """One exchange fetch of this process; the ingest op pushes it under its market's group."""
    INGEST_CANDLES.inc(candles)
    if lag_seconds is not None:
        INGEST_LAG.set(lag_seconds)
    INGEST_RATE_LIMIT_WAITS.inc(rate_limit_waits)


ROUTE_NAMES = {
    "instance": "instance (scrape)",
    "state_store": "state store (scrape)",
    "process": "process (ops service; runs push theirs)",
    "sensor": "Pushgateway (sensor ticks)",
    "pushgateway": "Pushgateway (runs)",
}


def readme_table() -> str:
    """The README's metrics table, from :data:`FAMILIES` (``test_metrics.py`` keeps the two equal)."""
    lines = ["| name | type | labels | meaning | route |", "| --- | --- | --- | --- | --- |"]
    for f in FAMILIES.values():
        labels = ", ".join(f"`{label}`" for label in f.labels) or "none"
        lines.append(f"| `{f.name}` | {f.type} | {labels} | {f.help} | {ROUTE_NAMES[f.route]} |")
    return "\n".join(lines)
