"""One alerting evaluation for a process: the snapshot (with the instance cursors it keeps between
ticks), the rules into the outbox, the outbox out through the channels, and, hourly, the pruning of
what is finished. ``alerts_sensor`` calls :meth:`AlertEvaluator.evaluate` once per tick."""

import time
from typing import Any

from rof_pipelines.adapters.alerts.channels import build_channel
from rof_pipelines.adapters.alerts.outbox import Outcome, deliver_due, enqueue
from rof_pipelines.adapters.alerts.snapshot import SnapshotSource
from rof_pipelines.settings import Settings

PRUNE_EVERY_S = 3600.0


class AlertEvaluator:
    """Keeps one :class:`SnapshotSource` per Dagster instance (its incremental cursors outlive the
    tick) and reads pools, calendars and worker limits from the config of the current tick."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._sources: dict[str, SnapshotSource] = {}
        self._pruned_at: float | None = None

    def _source(self, instance: Any) -> SnapshotSource:
        key = str(getattr(instance, "root_directory", None) or id(instance))
        if key not in self._sources:
            self._sources[key] = SnapshotSource(
                pools=lambda: list(type(self._config().system_setup.worker_pool).model_fields),
                calendar_of=lambda market: self._config().market_profile(market).calendar,
                max_workers=lambda pool: getattr(self._config().system_setup.worker_pool, pool).max_workers,
            )
        return self._sources[key]

    def _config(self) -> Settings:
        assert self._settings is not None, "evaluate() sets the config first"
        return self._settings

    def evaluate(self, instance: Any, store: Any, config: Settings) -> Outcome:
        """Snapshot, rules, outbox, delivery (and pruning, hourly) with ``config``'s alerting."""
        self._settings = config
        alerting = config.alerting
        rules = alerting.compiled_rules()
        breaker = config.system_setup.circuit_breaker
        channels = {
            name: build_channel(name, channel, breaker) for name, channel in alerting.channels.items()
        }
        outcome = Outcome()
        snapshot = self._source(instance).snapshot(
            instance, store, promotion_window=alerting.rules.promotion.within
        )
        enqueue(store, rules, snapshot, alerting.route_list(), list(channels), outcome)
        deliver_due(store, channels, alerting.retry, alerting.delivery_budget.total_seconds(), outcome)
        if self._pruned_at is None or time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
            store.alerts.prune(alerting.retention_days)  # sent/given-up deliveries, resolved alerts
            self._pruned_at = time.monotonic()
        return outcome
