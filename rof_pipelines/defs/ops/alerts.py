"""``alerts_sensor``: every ``alerting.evaluation_interval``, the rules over the figures the metrics
exporter reads, new notices into the state store's outbox, then the outbox out through the channels
(adapters/alerts/outbox.py). The rules, channels and routes come from the config in force at each
tick (hot reload); only the interval is fixed when the code location loads."""

import logging

from dagster import (
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from rof_pipelines.adapters.alerts.evaluation import AlertEvaluator
from rof_pipelines.adapters.pushgateway import pushed_tick
from rof_pipelines.adapters.resources import RofSettings, StateStoreResource
from rof_pipelines.errors import ConflictError, TransientError
from rof_pipelines.settings import Settings

log = logging.getLogger(__name__)

EVALUATOR = AlertEvaluator()  # one per process: the snapshot's instance cursors outlive the tick


def build_alerts_sensor(at_load: Settings) -> SensorDefinition:
    """The sensor, ticking at the loaded config's ``alerting.evaluation_interval``."""

    @sensor(
        name="alerts_sensor",
        minimum_interval_seconds=max(1, int(at_load.alerting.evaluation_interval.total_seconds())),
        default_status=DefaultSensorStatus.RUNNING,
        description="Alerting: evaluates the ready-made and custom rules (alerting.rules, "
        "alerting.custom) over the exported figures, records fired and resolved alerts with one "
        "delivery per routed channel in the state store (outbox), and delivers what is due with "
        "retries and backoff. `rof alerts list` shows what it did.",
    )
    @pushed_tick("alerts_sensor")
    def alerts_sensor(
        context: SensorEvaluationContext, settings: RofSettings, state_store: StateStoreResource
    ):
        config = settings.load()
        if not config.alerting.enabled:
            return SkipReason("alerting is disabled (alerting.enabled: false)")
        try:
            with state_store.open() as store:
                outcome = EVALUATOR.evaluate(context.instance, store, config)
        except ConflictError as exc:  # another evaluation wrote the same alerts first, twice in a row
            return SkipReason(f"another alerts evaluation wrote first; the next tick evaluates again: {exc}")
        except TransientError as exc:  # nothing was lost: the next tick evaluates again
            message = f"ALERT alerting cannot reach the state store, no alert is recorded or sent: {exc}"
            log.error(message)
            context.log.error(message)
            return SkipReason(message)
        if outcome.fired or outcome.resolved or outcome.failed:
            context.log.info(outcome.summary())
        return SkipReason(outcome.summary())

    return alerts_sensor
