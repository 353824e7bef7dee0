"""The optimisation domain's sensor: the `tasks` queue, optimise a market now."""

from typing import Any

from dagster import RunRequest, SensorDefinition

from rof_pipelines.adapters.inbox import InboxRow
from rof_pipelines.adapters.messages import TaskMessage
from rof_pipelines.defs.messaging import message_tags, queue_sensor
from rof_pipelines.partitions import market_day_key
from rof_pipelines.settings import Settings


def task_requests(row: InboxRow) -> list[RunRequest]:
    """Optimise the market for the message's day, or the last complete day when it was sent."""
    payload = row.payload
    day = TaskMessage.model_validate(payload).run_day.isoformat()
    return [
        RunRequest(
            run_key=row.message_id,
            partition_key=market_day_key(payload["market"], day),
            tags=message_tags(row, **{"rof/market": payload["market"], "rof/date": day}),
        )
    ]


def build_tasks_sensor(at_load: Settings, nightly_optimisation_job: Any) -> SensorDefinition:
    """``task_messages_sensor``: one ``nightly_optimisation`` run per `tasks` message."""
    return queue_sensor(
        "task",
        nightly_optimisation_job,
        "ab_optimizer",
        task_requests,
        "`tasks` queue: optimise a market now, one run per message (run key = message id).",
        at_load,
    )
