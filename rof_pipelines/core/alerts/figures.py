"""The documented snapshot: every figure an alert rule may read, per entity kind.

A rule with ``each: market`` is evaluated once per market with that market's figures as variables
(plus the ``global`` ones); ``each: global`` once, with the global figures and one map per kind
(``markets``, ``pools``, ``jobs``, ``sensors``, ``daemons``, ``services``, ``promotions``: key ->
figures), so ``markets.exists(m, markets[m].ga_best_fitness < 0.1)`` works too. Names that also
exist as Prometheus families carry the family's name and mean the same value (the exporter and the
rules read the same collectors). A figure missing for an entity (an asset never materialised, say)
is simply not set: a rule that reads it cannot decide for that entity, and its alert stays as it was.

Config load refuses a rule naming anything not listed here (:func:`variables_for`).
"""

from collections.abc import Mapping

# kind -> figure -> (CEL type, meaning)
FIGURES: dict[str, dict[str, tuple[str, str]]] = {
    "global": {
        "now": ("double", "evaluation time, unix seconds"),
        "instance_up": ("double", "1 when the Dagster instance answered"),
        "state_store_up": ("double", "1 when the state store answered"),
        "config_refused": ("bool", "the newest config.yaml edit was refused and none applied since"),
        "config_refused_error": ("string", "why it was refused (key path and reason), '' when not"),
        "markets_known": ("int", "markets in the `markets` dynamic partitions"),
    },
    "market": {
        "market": ("string", "the market key, exchange:PAIR"),
        "exchange": ("string", "the exchange part of the key"),
        "calendar": ("string", "the market's trading calendar"),
        "rl_agent_episodes": ("double", "training episodes of the latest agent"),
        "rl_agent_episode_reward": ("double", "total reward of the latest agent's final episode"),
        "rl_agent_state_coverage": ("double", "share of Q-table states visited (0..1)"),
        "rl_agent_trades": ("double", "trades of the latest agent's out-of-sample backtest"),
        "rl_agent_kelly_fraction": ("double", "mean Kelly size of those trades"),
        "rl_agent_trained_timestamp_seconds": ("double", "when the latest agent was materialised"),
        "ga_generation": ("double", "last generation of the newest GA task"),
        "ga_generations_planned": ("double", "generations that task runs at most"),
        "ga_progress_ratio": ("double", "generation / planned (1 when completed)"),
        "ga_eta_seconds": ("double", "seconds left of a running GA task"),
        "ga_best_fitness": ("double", "best Sharpe in the last reported population"),
        "ga_mean_fitness": ("double", "mean Sharpe of that population"),
        "ga_evaluations_per_second": ("double", "fitness evaluations per second"),
        "ga_cache_hit_ratio": ("double", "share of fitness lookups served by the cache"),
        "ga_progress_timestamp_seconds": ("double", "when the newest GA task last reported"),
        "ga_trials": ("double", "configurations the latest A/B population scored"),
        "data_manager_rows_loaded": ("double", "quote rows of the latest quote_snapshots"),
        "data_manager_bars_loaded": ("double", "bars of the latest indicator_frame"),
        "data_manager_freshness_seconds": ("double", "seconds since the newest stored quote"),
        "last_quote_timestamp_seconds": ("double", "the newest stored quote, unix seconds"),
        "data_manager_stale_open_seconds": (
            "double",
            "seconds the market was open (by its calendar) since the newest stored quote",
        ),
        "ga_champion_fitness": ("double", "best fitness of the newest completed GA task"),
        "ga_previous_champion_fitness": ("double", "best fitness of the completed GA task before it"),
        "rl_agent_active_max_drawdown": (
            "double",
            "max drawdown (0..1) of the config in force on the newest A/B test window",
        ),
    },
    "pool": {
        "pool": ("string", "the worker pool (run tag rof/pool; 'none' without one)"),
        "workerpool_runs_queued": ("double", "runs waiting in the run queue"),
        "workerpool_runs_in_progress": ("double", "runs starting or started"),
        "workerpool_oldest_queued_seconds": ("double", "how long the oldest queued run has waited (0: none)"),
        "max_workers": ("double", "the pool's max_workers (0 for 'none')"),
        "runs_failed_recent": ("double", "failed runs among the pool's recent finished runs"),
    },
    "job": {
        "job": ("string", "the job's name"),
        "pool": ("string", "its pool tag ('none' without one)"),
        "market": ("string", "the market of a partitioned run, '' otherwise"),
        "last_status": ("string", "SUCCESS, FAILURE or CANCELED: the newest finished run's"),
        "last_run_id": ("string", "that run's id"),
        "last_finished_seconds": ("double", "when it finished, unix seconds"),
        "last_error": ("string", "the failed step's error, first line ('' when none)"),
        "failures_in_a_row": ("int", "consecutive failed runs, newest first"),
    },
    "sensor": {
        "sensor": ("string", "the sensor's name"),
        "workerpool_sensor_consecutive_failures": ("int", "failed ticks in a row, newest first"),
        "last_tick_status": ("string", "SUCCESS, SKIPPED, FAILURE or STARTED"),
        "last_error": ("string", "the newest failed tick's error, first line"),
        "last_tick_seconds": ("double", "when the newest tick ran, unix seconds"),
    },
    "daemon": {
        "daemon": ("string", "the daemon type (SENSOR, SCHEDULER, QUEUED_RUN_COORDINATOR, ...)"),
        "workerpool_daemon_heartbeat_age_seconds": ("double", "seconds since its last heartbeat"),
    },
    "service": {
        "service": ("string", "the breaker's service (state_store, rabbitmq, postgres, ...)"),
        "process": ("string", "where the breaker lives: sensor (this process) or run (Pushgateway)"),
        "state": ("string", "closed, half_open or open"),
        "open_seconds": ("double", "how long it has been open (0 unless open)"),
        "circuit_breaker_failures_total": ("double", "failures counted by the breaker"),
    },
    "promotion": {
        "experiment_id": ("string", "the A/B experiment whose winner was promoted"),
        "market": ("string", "its market"),
        "winner": ("string", "the promoted arm"),
        "promoted_seconds": ("double", "when the experiment was recorded, unix seconds"),
        "age_seconds": ("double", "seconds since"),
    },
}

KINDS: tuple[str, ...] = tuple(FIGURES)
# each: KIND -> the name of that kind's map among the global variables
COLLECTIONS: dict[str, str] = {kind: f"{kind}s" for kind in KINDS if kind != "global"}


def variables_for(each: str) -> Mapping[str, str]:
    """The variables a rule evaluated per ``each`` may read, with their CEL types."""
    if each not in FIGURES:
        raise KeyError(each)
    out = {name: kind for name, (kind, _doc) in FIGURES["global"].items()}
    out.update({collection: "map" for collection in COLLECTIONS.values()})
    if each != "global":
        out.update({name: kind for name, (kind, _doc) in FIGURES[each].items()})
    return out
