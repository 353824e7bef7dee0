"""Per-run profiling of market-day asset steps: the run tag ``rof/profile: cpu|memory`` makes each
market-day step run its body under pyinstrument (``cpu``) or tracemalloc (``memory``).

:func:`profiled_step` wraps every asset body once, in ``market_day_asset`` (defs/market_day.py), and
each op of the island GA (one artifact per step: ``ga_population.ga_island_epoch_2.island_1.html``).
Without the tag the wrapper costs one tag lookup and calls the body unchanged. With it, the profile
covers the body from its start until it yields its ``Output`` (the IO manager's write comes after);
the artifact goes to ``storage.data_dir/profiles/{run_id}/{asset}.html`` (cpu: pyinstrument's HTML)
or ``.txt`` (memory: the top allocation sites); a retry writes ``{asset}.retry{n}.*`` beside it.
The Output's metadata gains ``profile/top`` (a markdown table), ``profile/top_functions`` (project
functions, JSON), ``profile/top_frames`` (cpu: raw self time, JSON), ``profile/path``,
``profile/mode`` and ``profile/wall_seconds``. A profile that cannot start or be written is logged
as a warning; it never fails the step or hides the body's own error.

Only a run tag selects it: Dagster validates run config against each job's schema, so a free
``rof/profile`` key there would be refused. pyinstrument samples the step's own thread: with GA
``workers`` > 1 the fitness work runs in worker processes and shows as waiting on their pipes;
profile with ``workers: 1`` to see it.
"""

import functools
import inspect
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import MetadataValue, Output

from rof_pipelines.adapters.resources import RofSettings

PROFILE_TAG = "rof/profile"
PROFILE_MODES = ("cpu", "memory")
TOP = 10  # rows in the metadata
ARTIFACT_TOP = 50  # allocation sites in the memory artifact
CPU_INTERVAL = 0.001  # pyinstrument's sampling interval, seconds


def _context(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if args:
        return args[0]
    return kwargs.get("context")


def requested_profile(context: Any) -> str | None:
    """The run's ``rof/profile`` tag, or None (also for a directly invoked asset, which has no run)."""
    try:
        mode = context.run.tags.get(PROFILE_TAG)
    except Exception:  # no run (a directly invoked asset) or no context: no profile
        return None
    if mode is None:
        return None
    mode = str(mode).strip().lower()
    if mode not in PROFILE_MODES:
        context.log.warning(
            f"run tag {PROFILE_TAG}={mode!r} ignored: use one of {', '.join(PROFILE_MODES)}; not profiling"
        )
        return None
    return mode


def step_name(context: Any, fallback: str) -> str:
    """A name for the step's artifact: its node's path in the job plus its mapping key
    (``ga_population.ga_island_epoch_2.island_1``), so the steps of one op do not share a file."""
    try:
        handle = str(context.node_handle)
        mapping = context.get_mapping_key()
    except Exception:  # a directly invoked op has no step
        return fallback
    return f"{handle}.{mapping}" if mapping else handle


def profiled_step(fn: Callable[..., Any], per_step: bool = False) -> Callable[..., Any]:
    """``fn`` with per-run profiling; signature, name, docstring and generator-ness kept, so Dagster
    sees the same context, config and resource parameters. ``per_step``: the artifact is named after
    the step (:func:`step_name`), for an op that runs as many steps (the island GA's), instead of
    after the asset body."""

    def name(context: Any) -> str:
        return step_name(context, fn.__name__) if per_step else fn.__name__

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def step_generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            context = _context(args, kwargs)
            mode = requested_profile(context)
            if mode is None:
                return (yield from fn(*args, **kwargs))
            return (yield from _profiled_events(mode, context, fn, name(context), args, kwargs))

        return step_generator

    @functools.wraps(fn)
    def step(*args: Any, **kwargs: Any) -> Any:
        context = _context(args, kwargs)
        mode = requested_profile(context)
        probe = None if mode is None else _Probe.start(mode, context, name(context), kwargs)
        if probe is None:
            return fn(*args, **kwargs)
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            probe.finish()
            raise
        metadata = probe.finish()
        if isinstance(result, Output):
            return result.with_metadata({**result.metadata, **metadata})
        return result if result is None else Output(result, metadata=metadata)

    return step


def _profiled_events(
    mode: str,
    context: Any,
    fn: Callable[..., Any],
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Iterator[Any]:
    probe = _Probe.start(mode, context, name, kwargs)
    if probe is None:
        return (yield from fn(*args, **kwargs))
    events = fn(*args, **kwargs)
    finished = False
    try:
        for event in events:
            if not finished and isinstance(event, Output):
                finished = True
                event = event.with_metadata({**event.metadata, **probe.finish()})
            yield event
    finally:
        events.close()
        if not finished:  # no Output (a closed day) or the body failed: the artifact still helps
            probe.finish()
    return None


# --- the probes -------------------------------------------------------------------------------------


@dataclass
class _Probe:
    mode: str
    context: Any
    asset: str
    kwargs: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    profiler: Any = None
    baseline: Any = None
    started_tracing: bool = False

    @classmethod
    def start(cls, mode: str, context: Any, asset: str, kwargs: dict[str, Any]) -> "_Probe | None":
        """The running probe, or None (logged) when it cannot start, e.g. another profiler already
        runs on this thread: a diagnostic never fails the step."""
        try:
            return cls._start(mode, context, asset, kwargs)
        except Exception as exc:  # the step runs unprofiled
            context.log.warning(f"{asset}: the {mode} profile could not start ({exc}); not profiling")
            return None

    @classmethod
    def _start(cls, mode: str, context: Any, asset: str, kwargs: dict[str, Any]) -> "_Probe":
        probe = cls(mode, context, asset, kwargs)
        if mode == "cpu":
            from pyinstrument import Profiler

            probe.profiler = Profiler(interval=CPU_INTERVAL, async_mode="disabled")
            probe.profiler.start()
        else:
            probe.started_tracing = not tracemalloc.is_tracing()
            if probe.started_tracing:
                tracemalloc.start(1)
            tracemalloc.reset_peak()
            probe.baseline = tracemalloc.take_snapshot()
        probe.started = time.perf_counter()
        return probe

    def finish(self) -> dict[str, Any]:
        """Stop, write the artifact, log where; the metadata for the Output. A profiling error is
        logged, never raised over the step's result or its own error (then no metadata)."""
        try:
            return self._finish()
        except Exception as exc:
            self.context.log.warning(f"{self.asset}: the {self.mode} profile could not be written: {exc}")
            return {}
        finally:
            if self.profiler is not None and self.profiler.is_running:
                self.profiler.stop()
            if self.started_tracing and tracemalloc.is_tracing():
                tracemalloc.stop()

    def _finish(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.started
        extra: dict[str, Any] = {}
        if self.mode == "cpu":
            session = self.profiler.stop()
            rows = top_functions(session, TOP)
            frames = top_functions(session, TOP, project=False)
            path = self._path(".html")
            from pyinstrument.renderers import HTMLRenderer

            path.write_text(HTMLRenderer().render(session), encoding="utf-8")
            table = cpu_table(rows, frames)
            extra["profile/top_frames"] = MetadataValue.json(frames)
        else:
            rows, summary = self._memory()
            path = self._path(".txt")
            path.write_text(memory_text(rows, summary), encoding="utf-8")
            table = memory_table(rows[:TOP], summary)
            rows = rows[:TOP]
        wall = round(wall, 3)  # the log and the metadata say the same figure
        self.context.log.info(f"{self.asset}: {self.mode} profile of {wall:.2f} s written to {path}")
        return {
            "profile/mode": self.mode,
            "profile/wall_seconds": wall,
            "profile/path": MetadataValue.path(str(path)),
            "profile/top": MetadataValue.md(table),
            "profile/top_functions": MetadataValue.json(rows),
            **extra,
        }

    def _memory(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        try:
            snapshot = tracemalloc.take_snapshot()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            if self.started_tracing:
                tracemalloc.stop()
        ignored = (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>"))
        stats = snapshot.filter_traces(ignored).compare_to(self.baseline.filter_traces(ignored), "lineno")
        rows = [
            {
                "location": f"{s.traceback[0].filename}:{s.traceback[0].lineno}",
                "size_diff_kib": round(s.size_diff / 1024, 1),
                "count_diff": s.count_diff,
            }
            for s in stats
            if s.size_diff > 0
        ][:ARTIFACT_TOP]
        return rows, {"peak_mib": round(peak / 2**20, 2)}

    def _path(self, suffix: str) -> Path:
        directory = self._data_dir() / "profiles" / self.context.run.run_id
        directory.mkdir(parents=True, exist_ok=True)
        attempt = getattr(self.context, "retry_number", 0) or 0  # a retry keeps the first attempt's
        return directory / (
            f"{self.asset}{suffix}" if not attempt else f"{self.asset}.retry{attempt}{suffix}"
        )

    def _data_dir(self) -> Path:
        for value in self.kwargs.values():
            if isinstance(value, RofSettings):
                return value.load().storage.resolved_data_dir()
        return Path(self.context.instance.storage_directory())


# --- summaries --------------------------------------------------------------------------------------


def _label(identifier: str) -> tuple[str, str]:
    """(function, file:first line) of a pyinstrument frame identifier."""
    parts = identifier.split("\x00")
    function = parts[0]
    location = f"{_short(parts[1])}:{parts[2]}" if len(parts) > 2 else ""
    return function, location


def _short(path: str) -> str:
    for marker in ("/site-packages/", "/rof_pipelines/"):
        index = path.rfind(marker)
        if index >= 0:
            head = "rof_pipelines/" if marker == "/rof_pipelines/" else ""
            return head + path[index + len(marker) :]
    return path


_PACKAGE = str(Path(__file__).resolve().parents[1])  # .../rof_pipelines
_SELF = str(Path(__file__).resolve())


def _in_project(identifier: str) -> bool:
    parts = identifier.split("\x00")
    return len(parts) > 1 and parts[1].startswith(_PACKAGE) and parts[1] != _SELF


def top_functions(session: Any, limit: int = TOP, *, project: bool = True) -> list[dict[str, Any]]:
    """The ``limit`` functions with the most time of their own, with their total time (samples
    where they are anywhere on the stack, recursion counted once).

    ``project=True``: a sample counts for the innermost frame of this package's code, so a project
    function's time includes the libraries and built-ins it calls directly (pandas, matplotlib, and
    the numba kernels, which have no Python frame of their own: ``train_kernel`` is ``train``'s
    time); samples without project code (Dagster's own) count for their innermost frame.
    ``project=False``: the innermost frame, whatever it is (pyinstrument's "self time")."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for stack, seconds in session.frame_records:
        if not stack:
            continue
        identifiers = [info.split("\x01", 1)[0] for info in stack]
        innermost = identifiers[-1]
        if project:
            innermost = next((i for i in reversed(identifiers) if _in_project(i)), innermost)
        own[innermost] += seconds
        for identifier in set(identifiers):
            total[identifier] += seconds
    duration = sum(seconds for _, seconds in session.frame_records) or 1.0
    rows = []
    for identifier, seconds in own.most_common(limit):
        function, location = _label(identifier)
        rows.append(
            {
                "function": function,
                "location": location,
                "own_seconds": round(seconds, 4),
                "own_pct": round(100 * seconds / duration, 1),
                "total_seconds": round(total[identifier], 4),
                "total_pct": round(100 * total[identifier] / duration, 1),
            }
        )
    return rows


def cpu_table(project: list[dict[str, Any]], frames: list[dict[str, Any]]) -> str:
    def table(rows: list[dict[str, Any]], own: str) -> list[str]:
        lines = [
            f"| function | where | {own} s | {own} % | total s | total % |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in rows:
            lines.append(
                f"| `{r['function']}` | {r['location']} | {r['own_seconds']:.3f} | {r['own_pct']:.1f} | "
                f"{r['total_seconds']:.3f} | {r['total_pct']:.1f} |"
            )
        return lines

    return "\n".join(
        [
            "Project functions (own time includes the library calls they make directly):",
            "",
            *table(project, "own"),
            "",
            "All frames by self time:",
            "",
            *table(frames, "self"),
        ]
    )


def memory_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = [
        f"peak traced memory {summary['peak_mib']} MiB; net allocations still held at the Output:",
        "",
        "| where | net KiB | net blocks |",
        "| --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {_short(r['location'])} | {r['size_diff_kib']:.1f} | {r['count_diff']} |")
    return "\n".join(lines)


def memory_text(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = [
        f"peak traced memory: {summary['peak_mib']} MiB",
        f"{'net KiB':>12} {'net blocks':>11}  location",
    ]
    for r in rows:
        lines.append(f"{r['size_diff_kib']:>12.1f} {r['count_diff']:>11d}  {r['location']}")
    return "\n".join(lines) + "\n"
