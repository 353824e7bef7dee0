"""What the state store hands out and takes in: frozen records, the same from the PostgreSQL store and
from the in-memory one."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class ActiveConfig:
    """The strategy parameters currently in force for one market."""

    market: str
    params: dict[str, Any]
    source: str
    experiment_id: str | None
    version: int
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True)
class GACheckpoint:
    """One saved generation of an optimisation task; ``payload`` is opaque to the store."""

    task_id: str
    market: str
    experiment_id: str
    window_start: datetime
    window_end: datetime
    data_fingerprint: str
    config_fingerprint: str
    generation: int
    final: bool
    best_fitness: float | None
    payload: bytes
    created_at: datetime


@dataclass(frozen=True)
class IslandEpochRecord:
    """One island's state at the end of one epoch of an island GA task; ``payload`` is opaque."""

    task_id: str
    island: int
    epoch: int
    payload: bytes
    created_at: datetime


@dataclass(frozen=True)
class QuoteGapRecord:
    """A range ``[gap_from, gap_to)`` of candle open times the exchange served no candles for."""

    market: str
    interval: str
    gap_from: datetime
    gap_to: datetime
    source: str  # what recorded it: ``download`` (rof quotes download) or ``ingest`` (the schedule)
    recorded_at: datetime


@dataclass(frozen=True)
class WorkerProgress:
    """The last progress report of one optimisation task."""

    task_id: str
    market: str
    status: str
    generation: int
    total_generations: int
    best_fitness: float | None
    eta_seconds: float | None
    details: dict[str, Any]
    version: int
    started_at: datetime
    updated_at: datetime
    worker_id: str | None = None
    experiment_id: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None


@dataclass(frozen=True)
class ArmRecord:
    """One arm of a stored experiment: its parameters, held-out metrics and p-values."""

    arm: str
    role: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    p_values: dict[str, Any]


@dataclass(frozen=True)
class ExperimentRecord:
    """A finished A/B experiment: the decision, whether it was promoted, and any promotion conflict."""

    experiment_id: str
    market: str
    label: str
    window_start: datetime
    window_end: datetime
    decision: dict[str, Any]
    winner: str | None
    promoted: bool
    active_version: int | None
    promoted_version: int | None
    conflict: str | None
    details: dict[str, Any]
    created_at: datetime | None = None
    arms: tuple[ArmRecord, ...] = ()

    @property
    def partition_date(self) -> date:
        """The day whose window ended the experiment: ``details["partition_date"]`` when recorded,
        else the UTC day of the window's last instant (a day's window ends at the next midnight, so
        ``window_end`` itself names the day after)."""
        recorded = self.details.get("partition_date")
        if recorded:
            return date.fromisoformat(str(recorded))
        return (self.window_end.astimezone(UTC) - timedelta(microseconds=1)).date()

    @property
    def run_id(self) -> str | None:
        """The Dagster run that ran the experiment, when ``details["run_id"]`` recorded it."""
        run_id = self.details.get("run_id")
        return str(run_id) if run_id else None
