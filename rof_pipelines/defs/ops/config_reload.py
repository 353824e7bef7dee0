"""Hot reload: a sensor that notices config.yaml edits, validates them and records them."""

import hashlib
import logging
from pathlib import Path

from dagster import DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from rof_pipelines.adapters.config_versions import check_config, last_valid_path
from rof_pipelines.adapters.resources import RofSettings, StateStoreResource
from rof_pipelines.core.redaction import scrub, secret_values
from rof_pipelines.errors import ConfigError, TransientError
from rof_pipelines.settings import parse_config_yaml, read_config_file

log = logging.getLogger(__name__)


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
    if not path.exists() and not path.is_symlink():
        return SkipReason(f"no config file at {path}; defaults and environment are in force")
    unavailable = ""
    try:
        try:
            with state_store.open() as store:
                outcome = check_config(path, store, context.cursor)
        except TransientError as exc:  # the state store is down: apply/refuse now, record on a later tick
            unavailable = str(exc)
            outcome = check_config(path, None, context.cursor)
    except ConfigError as exc:  # no configuration loads, so there is no state store to record in
        return _nothing_in_force(context, path, exc)
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


def _nothing_in_force(context: SensorEvaluationContext, path: Path, exc: ConfigError) -> SkipReason:
    """Skip, saying why nothing can be recorded: the file is unreadable, or invalid with no last valid
    version yet (a first deployment with a broken file). Alerts once per version, not every tick."""
    try:
        raw = read_config_file(path)
    except ConfigError as unreadable:
        return SkipReason(f"REFUSED: {unreadable}")
    try:
        data = parse_config_yaml(raw, path)
    except ConfigError:
        data = None
    error = scrub(str(exc), *secret_values(data))
    digest = hashlib.sha256(raw).hexdigest()
    if last_valid_path(path).is_file():
        reason = "neither it nor its last valid version loads"
    else:
        reason = "no last valid version exists yet"
    message = (
        f"REFUSED {digest[:12]}: {path.name} is invalid and {reason}, so no configuration is in force "
        f"(runs refuse to start) and nothing is recorded (the state store is configured there): {error}"
    )
    if digest != context.cursor:
        log.error("ALERT %s", message)  # the process log, as check_config alerts
        context.log.error(f"ALERT {message}")
        context.update_cursor(digest)
    return SkipReason(message)
