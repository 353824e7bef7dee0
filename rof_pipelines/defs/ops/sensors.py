"""The ops domain's sensors: hot reload of config.yaml, and the `backup` queue."""

import hashlib
import logging
from pathlib import Path

from dagster import (
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from rof_pipelines.adapters.config_versions import check_config, last_valid_path
from rof_pipelines.adapters.inbox import InboxRow
from rof_pipelines.adapters.pushgateway import pushed_tick
from rof_pipelines.adapters.resources import RofSettings, StateStoreResource
from rof_pipelines.core.redaction import scrub, secret_values
from rof_pipelines.defs.messaging import message_tags, queue_sensor
from rof_pipelines.defs.resilience import state_store_optional
from rof_pipelines.errors import ConfigError
from rof_pipelines.settings import Settings, parse_config_yaml, read_config_file

log = logging.getLogger(__name__)


@sensor(
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description="Hot reload: validates each config.yaml edit and records it (hash, time, changed keys) "
    "in the state store. Valid edits apply to runs started afterwards; an invalid edit is refused "
    "with its key path and reason (an alert), and the last valid version stays in force.",
)
@pushed_tick("config_reload_sensor")  # data_manager_config_reloads_total, to the Pushgateway
def config_reload_sensor(
    context: SensorEvaluationContext, settings: RofSettings, state_store: StateStoreResource
):
    path = settings.path()
    if not path.exists() and not path.is_symlink():
        return SkipReason(f"no config file at {path}; defaults and environment are in force")
    try:
        with (
            state_store_optional(context.log, "recording the config.yaml version") as degraded,
            state_store.open() as store,
        ):
            outcome = check_config(path, store, context.cursor)
        if degraded:  # the state store is down: apply/refuse now, record on a later tick
            outcome = check_config(path, None, context.cursor)
    except ConfigError as exc:  # no configuration loads, so there is no state store to record in
        return _nothing_in_force(context, path, exc)
    if outcome.status == "unchanged":
        return SkipReason("config.yaml unchanged")
    if degraded:  # the cursor stays put so that a later tick records this version
        return SkipReason(
            f"config {outcome.status} ({outcome.sha256[:12]}), not yet recorded: {degraded.error}"
        )
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


def backup_requests(row: InboxRow) -> list[RunRequest]:
    """Back up to the destination the message names. A row inboxed before destinations existed
    carries a ``target`` URL instead: it is passed on as a name, so its run fails visibly with
    "no destination named ..." rather than writing there or silently to the default."""
    destination = row.payload.get("destination") or row.payload.get("target")
    run_config = (
        {"ops": {"backup_state_store": {"config": {"destination": destination}}}} if destination else {}
    )
    return [RunRequest(run_key=row.message_id, run_config=run_config, tags=message_tags(row))]


def build_backup_sensor(at_load: Settings, state_backup_job: JobDefinition) -> SensorDefinition:
    """``backup_messages_sensor``: one ``state_backup`` run per `backup` message."""
    return queue_sensor(
        "backup",
        state_backup_job,
        "task_worker",
        backup_requests,
        "`backup` queue: back up the state store now.",
        at_load,
    )
