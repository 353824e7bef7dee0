"""Run or resume one optimisation task against the state store.

A task is (market, window, experiment id) plus two fingerprints: of the data the GA sees and of the
settings that shape the run (GA knobs, search space, base agent). A restarted task with the same
four-plus-two finds its newest checkpoint and resumes from it; different data or settings start
afresh (an old checkpoint of another configuration is never mixed in). Checkpoints older than
``state_management.retention_days`` are pruned when a task starts. Progress (generation, best Sharpe,
ETA) goes to ``worker_progress`` after every generation.

The core's engine calls back into this module only through its ``CheckpointSink`` protocol; the
seeded run itself is ``core.ga.seeding``, the trial ledger's key ``core.experiment.trials_key``.

With ``ga.islands > 1`` a task is run as island-epochs (``core.ga.islands``), one step each:
:func:`start_islands` stores each island's share of the initial population as epoch 0,
:func:`run_island_step` reads its own and its ring neighbour's states of the previous epoch from
``store.islands``, runs the epoch (checkpointed like a single run, under a key of its own) and stores
the result, or reuses the stored one; :func:`finish_islands` merges the last epoch into one result.
"""

import hashlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from rof_pipelines.adapters import pushgateway
from rof_pipelines.adapters.metrics import GA_EVALUATIONS
from rof_pipelines.adapters.state_store import StateStore
from rof_pipelines.core.experiment import trials_key
from rof_pipelines.core.ga.engine import CheckpointSink, GAResult, GASettings, ProgressReport
from rof_pipelines.core.ga.fitness import FULL, FitnessData, build_fitness_data
from rof_pipelines.core.ga.islands import (
    IslandEpoch,
    IslandPlan,
    epoch_start,
    initial_populations,
    merge_islands,
    optimise_islands,
    run_island_epoch,
)
from rof_pipelines.core.ga.seeding import run_seeded
from rof_pipelines.core.ga.space import Genome, SearchSpace
from rof_pipelines.core.rl.agent import RLParams
from rof_pipelines.errors import NotFoundError
from rof_pipelines.settings import Settings, normalise_market

log = logging.getLogger(__name__)

ISLAND_SHAPE = ("islands", "migration_interval", "migrants")


@dataclass(frozen=True)
class TaskKey:
    market: str
    experiment_id: str
    window_start: datetime
    window_end: datetime
    data_fingerprint: str
    config_fingerprint: str

    @property
    def task_id(self) -> str:
        return (
            f"ga:{self.market}:{self.experiment_id}:{self.window_start.isoformat()}/"
            f"{self.window_end.isoformat()}:{self.data_fingerprint[:12]}:{self.config_fingerprint[:12]}"
        )

    def as_mapping(self) -> dict[str, Any]:
        return {**vars(self), "task_id": self.task_id}

    def island_epoch(self, island: int, epoch: int) -> "TaskKey":
        """The key of one island-epoch's own engine checkpoints (never mixed with another's)."""
        part = f"{self.config_fingerprint}|island={island}|epoch={epoch}"
        return replace(self, config_fingerprint=hashlib.sha256(part.encode()).hexdigest())


def trial_hashes(space: SearchSpace, trials: Mapping[Genome, float]) -> dict[str, float]:
    """Genome -> Sharpe as config hash -> Sharpe (the hash of the decoded genes by name)."""
    out = {}
    for genome, sharpe in trials.items():
        genes = json.dumps(dict(zip(space.names, genome, strict=True)), sort_keys=True, default=float)
        out[hashlib.sha256(genes.encode()).hexdigest()[:32]] = sharpe
    return out


def record_trials(store: StateStore, job: "Optimisation", result: GAResult) -> tuple[int, float | None]:
    """Add this run's scored configurations to the task's ledger; returns (trials ever, Sharpe
    variance) for the deflated Sharpe ratio."""
    key = job.key
    ledger = trials_key(key.market, key.experiment_id, key.window_start, key.window_end)
    store.trials.record(ledger, trial_hashes(result.space, result.trials))
    return store.trials.stats(ledger)


def encode_payload(payload: dict[str, Any]) -> bytes:
    """JSON (floats by repr, so they load bit for bit) compressed."""
    return zlib.compress(json.dumps(payload, allow_nan=False, sort_keys=True).encode("utf-8"), 6)


def decode_payload(blob: bytes) -> dict[str, Any]:
    return json.loads(zlib.decompress(blob).decode("utf-8"))


class StoreCheckpoints:
    """The engine's checkpoint sink on the state store."""

    records_metrics = True  # evaluations per second, ga_evaluations_total, the throttled push

    def __init__(
        self,
        store: StateStore,
        key: TaskKey,
        log_progress: Callable[[str], None] | None = None,
        *,
        progress_key: TaskKey | None = None,
    ) -> None:
        self.store = store
        self.key = key
        self.progress_key = progress_key or key  # an island-epoch reports as its task
        self.log_progress = log_progress
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._evaluations = 0  # where the last report left the task's evaluation count, and when
        self._reported_at = time.perf_counter()

    def latest(self) -> dict[str, Any] | None:
        found = self.store.checkpoints.latest(self.key.as_mapping())
        payload = decode_payload(found.payload) if found is not None else None
        self._evaluations = int((payload or {}).get("evaluations", 0))
        self._reported_at = time.perf_counter()
        return payload

    def save(self, generation: int, payload: dict[str, Any], *, final: bool) -> None:
        history = payload.get("history") or [{}]
        self.store.checkpoints.save(
            self.key.as_mapping(),
            generation,
            encode_payload(payload),
            final=final,
            best_fitness=history[-1].get("best_sharpe"),
        )

    def progress(self, report: ProgressReport) -> None:
        details = {**report.details, **self._rate(report.details)} if self.records_metrics else report.details
        key = self.progress_key
        self.store.progress.record(
            key.task_id,
            key.market,
            report.generation,
            report.total_generations,
            report.best_fitness,
            report.eta_seconds,
            "completed" if report.final and key == self.key else "running",
            details=details,
            worker_id=self.worker_id,
            experiment_id=key.experiment_id,
            window_start=key.window_start,
            window_end=key.window_end,
        )
        if self.records_metrics:
            pushgateway.push_active()  # throttled: at most one push per pushgateway_interval

    def _rate(self, details: Mapping[str, Any]) -> dict[str, float]:
        """Evaluations per second since the last report (O(1) per generation; ga_evaluations_*)."""
        now, evaluations = time.perf_counter(), int(details.get("evaluations", self._evaluations))
        done, seconds = evaluations - self._evaluations, now - self._reported_at
        self._evaluations, self._reported_at = evaluations, now
        if done > 0:
            GA_EVALUATIONS.inc(done)
        return {"evaluations_per_second": round(done / seconds, 3)} if seconds > 0 and done >= 0 else {}


@dataclass
class Optimisation:
    """Everything a run needs, built from the settings and the window's training part."""

    key: TaskKey
    data: FitnessData
    ga: GASettings
    workers: int
    retention_days: int
    seeds: tuple[dict[str, Any], ...] = field(default=())  # {gene: value}, from core.knowledge.plan_seeds


def evaluation_processes(workers: int | None, pool: int) -> int:
    """Processes that score genomes: the asked-for number (else the pool's), at most the pool and the
    CPUs. One in a daemonic process, which may not start children (a celery worker's prefork child
    runs the step): the GA then scores in the step's own process instead of failing on its pool."""
    if multiprocessing.current_process().daemon:
        return 1
    return max(1, min(workers or pool, pool, os.cpu_count() or 1))


def prepare_optimisation(
    settings: Settings,
    market: str,
    train_frame: pd.DataFrame,
    window_start: datetime,
    window_end: datetime,
    *,
    base: RLParams | None = None,
    workers: int | None = None,
    ga_overrides: dict[str, Any] | None = None,
    seeds: Sequence[Mapping[str, Any]] = (),
) -> Optimisation:
    """``train_frame`` is ``split_train_test(window).train``: the GA never sees the held-out part.
    ``seeds`` (meta/transfer learning) replace the first random members of the initial population;
    they are part of the task's identity, so a seeded and a cold run never share checkpoints."""
    ga_config = settings.ab_tests.experiment.ga
    ga = GASettings.from_config(
        ga_config, settings.ab_tests.state_management.checkpoint_interval, **(ga_overrides or {})
    )
    space = SearchSpace.from_mapping(ga_config.search_space)
    base = base or RLParams.from_settings(settings.ai_config)
    data = build_fitness_data(
        train_frame,
        base,
        space,
        validation_fraction=ga.validation_fraction,
        sample_fraction=ga.sample_fraction,
    )
    shape = {"ga": ga.to_dict(), "space": space.to_dict(), "base": base.to_dict()}
    # How often to save and how many processes score do not change the result; one island is the
    # single GA (whose fingerprints, and checkpoints, stay what they were).
    for name in ("checkpoint_interval", "island_workers", *(() if ga.islands > 1 else ISLAND_SHAPE)):
        shape["ga"].pop(name)
    seeds = tuple(dict(seed) for seed in seeds)
    if seeds:  # only then: cold runs keep the fingerprints (and checkpoints) they always had
        shape["seeds"] = [sorted(seed.items()) for seed in seeds]
    config_fingerprint = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()
    key = TaskKey(
        market=normalise_market(market),
        experiment_id=settings.ab_tests.experiment.id,
        window_start=window_start,
        window_end=window_end,
        data_fingerprint=hashlib.sha256(data.fingerprint(FULL).encode()).hexdigest(),
        config_fingerprint=config_fingerprint,
    )
    pool = settings.system_setup.worker_pool.ab_optimizer.max_workers
    if ga.islands > 1:  # a step is one island: its own process pool only when configured
        pool = workers or ga.island_workers
    return Optimisation(
        key=key,
        data=data,
        ga=ga,
        workers=evaluation_processes(workers, pool),
        retention_days=settings.ab_tests.state_management.retention_days,
        seeds=seeds,
    )


@contextmanager
def stop_on_sigterm() -> Iterator[Callable[[], bool]]:
    """While the optimisation runs, SIGTERM (a run being terminated, a pod being stopped) asks it to
    stop after the current generation with a checkpoint, instead of dying mid-generation. Only the
    main thread can own signal handlers; elsewhere this asks nothing and the process dies as before."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        log.warning("SIGTERM: stopping after this generation with a checkpoint")
        requested.set()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_optimisation(
    job: Optimisation,
    store: StateStore | None,
    *,
    on_generation: Callable[[dict[str, Any]], None] | None = None,
) -> GAResult:
    """Run the task, resuming from its newest checkpoint when ``store`` holds one; without a store the
    run is not checkpointed (it still works, it just cannot resume). An island task runs all its
    island-epochs here, in this process and without checkpoints (the A/B uplift's cold run, benches);
    the Dagster graph runs them as steps (:func:`run_island_step`)."""
    if job.ga.islands > 1:
        return optimise_islands(job.data, job.ga, job.seeds, workers=job.workers)
    sink: CheckpointSink | None = None
    if store is not None:
        pruned = store.checkpoints.prune(job.retention_days)
        if pruned:
            log.info("pruned %d GA checkpoints older than %d days", pruned, job.retention_days)
        sink = StoreCheckpoints(store, job.key)
    try:
        with stop_on_sigterm() as stop_requested:
            return run_seeded(
                job.data,
                job.ga,
                job.seeds,
                workers=job.workers,
                checkpoints=sink,
                on_generation=on_generation,
                stop_requested=stop_requested,
            )
    except Exception:
        if store is not None:
            latest = store.progress.get(job.key.task_id)
            store.progress.record(
                job.key.task_id,
                job.key.market,
                latest.generation if latest else 0,
                job.ga.generations,
                latest.best_fitness if latest else None,
                None,
                "failed",
            )
        raise


# --- the island GA, one step per island-epoch ---------------------------------------------------------


def start_islands(job: Optimisation, store: StateStore) -> int:
    """Store each island's share of the initial population as its epoch 0 (kept if stored already);
    returns the number of islands. Prunes island epochs older than the retention."""
    pruned = store.islands.prune(job.retention_days) + store.checkpoints.prune(job.retention_days)
    if pruned:
        log.info("pruned %d GA island epochs and checkpoints older than %d days", pruned, job.retention_days)
    populations = initial_populations(job.data.space, job.ga, job.seeds)
    for island, units in enumerate(populations):
        store.islands.save(job.key.task_id, island, 0, encode_payload({"initial": [list(u) for u in units]}))
    return len(populations)


def stored_island_epoch(store: StateStore, job: Optimisation, island: int, epoch: int) -> IslandEpoch | None:
    found = store.islands.get(job.key.task_id, island, epoch)
    return IslandEpoch.from_payload(decode_payload(found.payload)) if found is not None else None


def _stored_start(store: StateStore, job: Optimisation, island: int, epoch: int) -> dict[str, Any]:
    """What the island-epoch starts from, read from the previous epoch's stored rows."""
    plan = IslandPlan.from_settings(job.ga)
    needed = [island] if epoch == 1 else sorted({island, plan.sender(island)})
    rows = {i: store.islands.get(job.key.task_id, i, epoch - 1) for i in needed}
    missing = [i for i, row in rows.items() if row is None]
    if missing:
        raise NotFoundError(
            f"{job.key.task_id}: island(s) {missing} of epoch {epoch - 1} are not stored; island {island} "
            f"of epoch {epoch} cannot start"
        )
    decoded = {i: decode_payload(row.payload) for i, row in rows.items() if row is not None}
    if epoch == 1:
        return epoch_start(job.ga, island, 1, {island: decoded[island]["initial"]}, {})
    previous = {i: IslandEpoch.from_payload(payload) for i, payload in decoded.items()}
    return epoch_start(job.ga, island, epoch, {}, previous)


def run_island_step(
    job: Optimisation,
    store: StateStore,
    island: int,
    epoch: int,
    *,
    on_generation: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[IslandEpoch, bool]:
    """One island-epoch: the stored result when there is one (``True``: reused), else computed from
    the stored previous epoch, checkpointed under the island-epoch's own key, and stored."""
    stored = stored_island_epoch(store, job, island, epoch)
    if stored is not None:
        return stored, True
    start = _stored_start(store, job, island, epoch)
    sink = StoreCheckpoints(store, job.key.island_epoch(island, epoch), progress_key=job.key)
    with stop_on_sigterm() as stop_requested:
        result = run_island_epoch(
            job.data,
            job.ga,
            island,
            epoch,
            start,
            workers=job.workers,
            checkpoints=sink,
            on_generation=on_generation,
            stop_requested=stop_requested,
        )
    store.islands.save(job.key.task_id, island, epoch, encode_payload(result.to_payload()))
    return result, False


def finish_islands(job: Optimisation, store: StateStore) -> GAResult:
    """Every stored island-epoch of the task merged into one result (the last epoch's populations);
    the task's progress marked completed."""
    plan = IslandPlan.from_settings(job.ga)
    results = []
    for epoch in range(1, plan.epochs + 1):
        rows = store.islands.epoch(job.key.task_id, epoch)
        if len(rows) != plan.islands:
            raise NotFoundError(
                f"{job.key.task_id}: epoch {epoch} has {len(rows)} of {plan.islands} islands stored"
            )
        results.extend(IslandEpoch.from_payload(decode_payload(row.payload)) for row in rows)
    result = merge_islands(job.data.space, results)
    store.progress.record(
        job.key.task_id,
        job.key.market,
        result.generations_run,
        job.ga.generations,
        float(np.max(result.fitness[:, 1])),
        0.0,
        "completed",
        details={"islands": plan.islands, "epochs": plan.epochs, "evaluations": result.evaluations},
        worker_id=f"{socket.gethostname()}:{os.getpid()}",
        experiment_id=job.key.experiment_id,
        window_start=job.key.window_start,
        window_end=job.key.window_end,
    )
    return result
