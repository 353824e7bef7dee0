"""Worker processes that score one batch of genomes at a time, for :class:`engine.Evaluator`.

Why not ``concurrent.futures.ProcessPoolExecutor``: a genome costs 2-4 ms and each of the executor's
round trips (queue thread, feeder thread, result thread, pipe) about 0.45 ms on this 2-core VM, and
that parent-side work runs on the same two cores as the workers. Measured on the benchmark's
population 50 x 20 generations, the executor left a quarter of the workers' time idle. Here a batch
costs one pipe message per worker each way: every worker gets the whole batch, claims the next
unscored genome from a shared counter until none is left, and sends back what it scored. Workers
that finish early take more genomes, so slow genomes (new indicator windows, large tables) even out
by themselves, one genome at a time.

Fitness is a pure function of (genome, data), so which worker scores which genome never changes a
result. A worker that raises hands the exception to the parent (with its traceback as a note); a
worker that dies (OOM killer, SIGKILL) becomes :class:`WorkerLost` naming its pid and exit code.
"""

import contextlib
import multiprocessing
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from rof_pipelines.core.ga.fitness import FitnessData, evaluate_genome
from rof_pipelines.core.ga.space import Genome
from rof_pipelines.errors import WorkerLost

Fitness = tuple[float, float, float]


def _worker_main(conn: Connection, counter: Any, data: FitnessData, inherited: Sequence[Connection]) -> None:
    """A worker's life: announce itself, then score batches until the parent says stop or goes away."""
    for other in inherited:  # every pipe end but our own: EOF must reach us if the parent dies
        other.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        conn.send(("ready", None))
        while True:
            batch = conn.recv()
            if batch is None:
                return
            slice_name, genomes = batch
            scored: list[tuple[int, Fitness]] = []
            try:
                while True:
                    with counter.get_lock():
                        index = counter.value
                        counter.value = index + 1
                    if index >= len(genomes):
                        break
                    scored.append((index, evaluate_genome(data, slice_name, genomes[index])))
            except Exception as error:  # every failure goes back to the parent
                conn.send(("error", _portable(error)))
                continue
            conn.send(("ok", scored))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent is gone


def _portable(error: Exception) -> tuple[Exception, str]:
    """The exception (or a RuntimeError carrying its text, when it cannot be pickled) and its traceback."""
    text = "".join(traceback.format_exception(error))
    try:
        pickle.dumps(error)
    except Exception:
        error = RuntimeError(f"{type(error).__name__}: {error}")
    return error, text


class GenomePool:
    """``workers`` processes around one :class:`FitnessData` (fork: inherited; spawn: pickled once)."""

    def __init__(self, data: FitnessData, workers: int, start_method: str) -> None:
        if workers < 1:
            raise ValueError("a pool needs at least one worker")
        self.data = data
        self.workers = workers
        self.start_method = start_method
        self.start_seconds = 0.0
        self._procs: list[Any] = []
        self._conns: list[Connection] = []
        self._counter: Any = None

    def start(self) -> "GenomePool":
        began = time.perf_counter()
        ctx = multiprocessing.get_context(self.start_method)
        self._counter = ctx.Value("q", 0)
        pipes = [ctx.Pipe(duplex=True) for _ in range(self.workers)]
        self._conns = [parent for parent, _ in pipes]
        for number, (_, child) in enumerate(pipes):
            # Under fork a worker inherits every pipe end open in the parent; it closes all but its
            # own, so EOF reaches each side when the other dies.
            others = [c for c in self._conns] + [c for _, c in pipes[number + 1 :]]
            inherited = others if self.start_method == "fork" else []
            proc = ctx.Process(
                target=_worker_main,
                args=(child, self._counter, self.data, inherited),
                name=f"rof-ga-worker-{number}",
                daemon=True,
            )
            proc.start()
            child.close()
            self._procs.append(proc)
        for number in range(self.workers):
            self._receive(number)  # "ready": a worker that cannot start fails here, not mid-run
        self.start_seconds = time.perf_counter() - began
        return self

    def evaluate(self, slice_name: str, genomes: Sequence[Genome]) -> list[Fitness]:
        """Fitness of each genome, in order."""
        if not genomes:
            return []
        with self._counter.get_lock():
            self._counter.value = 0  # every worker is idle between batches
        batch = (slice_name, list(genomes))
        for number in range(self.workers):
            self._send(number, batch)
        results: list[Fitness | None] = [None] * len(genomes)
        failure: tuple[Exception, str] | None = None
        for number in range(self.workers):  # collect every reply, so no worker is left mid-batch
            status, payload = self._receive(number)
            if status == "error":
                failure = failure or payload
                continue
            for index, fitness in payload:
                results[index] = fitness
        if failure is not None:
            error, text = failure
            error.add_note(f"raised in a GA worker process:\n{text}")
            raise error
        missing = [i for i, f in enumerate(results) if f is None]
        if missing:
            raise RuntimeError(f"GA workers returned no fitness for genomes {missing[:5]}")
        return results  # type: ignore[return-value]

    def _send(self, number: int, message: Any) -> None:
        try:
            self._conns[number].send(message)
        except OSError as error:  # EPIPE: the worker is gone
            raise self._lost(number) from error

    def _receive(self, number: int) -> tuple[str, Any]:
        try:
            return self._conns[number].recv()
        except (EOFError, OSError) as error:
            raise self._lost(number) from error

    def _lost(self, number: int) -> WorkerLost:
        proc = self._procs[number]
        proc.join(timeout=1.0)
        self.close()
        return WorkerLost(
            f"GA worker process {proc.pid} died (exit code {proc.exitcode}); its genomes were not "
            "scored. Rerun the task: it resumes from its newest checkpoint."
        )

    def close(self, *, wait: bool = True) -> None:
        """Tell every worker to exit. ``wait=False`` reaps them on a background thread: a worker's exit
        (freeing a forked copy of the parent) takes ~10 ms that the caller's result does not need."""
        for conn in self._conns:
            with contextlib.suppress(OSError):  # a dead worker's pipe
                conn.send(None)
            conn.close()
        procs, self._procs, self._conns = self._procs, [], []
        if wait:
            _reap(procs)
        else:
            threading.Thread(target=_reap, args=(procs,), name="rof-ga-reaper", daemon=True).start()


def _reap(procs: list[Any]) -> None:
    for proc in procs:
        proc.join(timeout=5.0)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=1.0)
