"""Sensor ticks and daemon heartbeats planted in a Dagster instance, as the daemon records them, for
tests whose subject reads them (the collectors, the alert snapshot, Prometheus) without a daemon
running. Instigator states and ticks have no public constructor API: these are Dagster's own."""

import sys

from dagster._core.errors import SensorExecutionError
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteRepositoryOrigin
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    TickData,
    TickStatus,
)
from dagster._daemon.types import DaemonHeartbeat
from dagster._utils.error import serializable_error_info_from_exc_info

REPOSITORY = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("rof"), "__repository__")


def sensor_state(instance, name: str) -> InstigatorState:
    """A running sensor called ``name``, as the daemon registers it."""
    state = InstigatorState(
        REPOSITORY.get_instigator_origin(name), InstigatorType.SENSOR, InstigatorStatus.RUNNING
    )
    instance.add_instigator_state(state)
    return state


def tick(instance, state: InstigatorState, status: TickStatus, at: float, failures: int = 0) -> float:
    """One tick of ``state``'s sensor; a failed one carries a real error and ``failures`` in a row."""
    error = None
    if status == TickStatus.FAILURE:
        try:  # as the daemon records it: Dagster's wrapper around the sensor's own exception
            try:
                raise ConnectionError("planted sensor failure")
            except ConnectionError as exc:
                raise SensorExecutionError(
                    f"Error occurred during the evaluation of sensor {state.instigator_name}",
                    user_exception=exc,
                    original_exc_info=sys.exc_info(),
                ) from exc
        except SensorExecutionError:
            error = serializable_error_info_from_exc_info(sys.exc_info())
    instance.create_tick(
        TickData(
            instigator_origin_id=state.instigator_origin_id,
            instigator_name=state.instigator_name,
            instigator_type=InstigatorType.SENSOR,
            status=status,
            timestamp=at,
            run_ids=[],
            error=error,
            selector_id=state.selector_id,
            consecutive_failure_count=failures,
        )
    )
    return at


def heartbeat(instance, daemon: str, at: float) -> None:
    instance.add_daemon_heartbeat(DaemonHeartbeat(at, daemon, "d-1", None))
