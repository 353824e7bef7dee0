"""The seed's Hot Reload: a sensor that notices config.yaml edits, validates them and records them."""

from dagster import DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from rof_pipelines.adapters.config_versions import check_config
from rof_pipelines.adapters.resources import RofSettings, StateStoreResource
from rof_pipelines.errors import TransientError


@sensor(
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description="Hot reload: validates each config.yaml edit and records it (hash, time, changed keys) "
    "in the state store. Valid edits apply to runs started afterwards; an invalid edit is refused "
    "with its key path and reason (an alert), and the last valid version stays in force.",
)
def config_reload_sensor(
    context: SensorEvaluationContext, settings: RofSettings, state_store: StateStoreResource
):
    path = settings.path()
    if not path.exists():
        return SkipReason(f"no config file at {path}; defaults and environment are in force")
    unavailable = ""
    try:
        with state_store.open() as store:
            outcome = check_config(path, store, context.cursor)
    except TransientError as exc:  # the state store is down: apply/refuse now, record on a later tick
        unavailable = str(exc)
        outcome = check_config(path, None, context.cursor)
    if outcome.status == "unchanged":
        return SkipReason("config.yaml unchanged")
    if unavailable:  # the cursor stays put so that a later tick records this version
        return SkipReason(f"config {outcome.status} ({outcome.sha256[:12]}), not yet recorded: {unavailable}")
    context.update_cursor(outcome.sha256)
    if outcome.status == "refused":
        context.log.error(
            f"ALERT config.yaml refused, the last valid version stays in force: {outcome.error}"
        )
        return SkipReason(f"REFUSED {outcome.sha256[:12]}: {outcome.error}")
    context.log.info(f"config.yaml {outcome.sha256[:12]} applied; changed keys: {outcome.changed_keys}")
    return SkipReason(
        f"applied {outcome.sha256[:12]}; changed keys: {', '.join(outcome.changed_keys) or 'none'}"
    )
