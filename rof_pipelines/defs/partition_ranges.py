"""Several market-day partitions in one step: how a backfill run of a range is executed.

Every market-day asset has ``BackfillPolicy.multi_run`` (``market_day_asset``), so a backfill of
weeks of one market is a few runs rather than one run per day; a run worker's start and the code
location's imports (~5 s per run here) were most of a per-partition backfill's wall time. Dagster
hands such a run's step every key of the range (``context.partition_keys``); :func:`ranged_step`
calls the asset body once per key with a context scoped to it, so the bodies stay written for one
partition:

- each key's ``Output`` value is collected into :class:`PartitionValues` for the frame IO manager,
  its metadata recorded on that partition's materialisation (``add_asset_metadata``);
- each key's ``AssetCheckResult`` becomes that partition's check evaluation;
- a closed day yields nothing, so nothing is stored for it; its materialisation records
  ``market_closed`` (Dagster records every key of a range it ran);
- a key whose body raises ``Failure(allow_retries=False)`` (bad data, too short a window) does not
  sink the others: they are stored and materialised, then the step fails naming each failed key and
  why, and the backfill counts only those as failed. Any other error fails the step at once, and
  the retry policy re-runs the range (writes are idempotent).

In a run of one partition (not a range) the body is called unchanged.
"""

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckResult,
    AssetExecutionContext,
    AssetMaterialization,
    Failure,
    MetadataValue,
    Output,
)

from rof_pipelines.adapters.io_managers import PartitionValues
from rof_pipelines.partitions import market_and_day

CLOSED_METADATA = "market_closed"


class PartitionScope:
    """The step's context seen from one key of its range: ``partition_key`` is that key, output
    metadata goes to that partition; everything else is the step's own context."""

    def __init__(self, context: AssetExecutionContext, partition_key: str) -> None:
        self._context = context
        self._key = partition_key

    @property
    def partition_key(self) -> str:
        return self._key

    @property
    def partition_keys(self) -> list[str]:
        return [self._key]

    @property
    def has_partition_key(self) -> bool:
        return True

    @property
    def has_partition_key_range(self) -> bool:
        return False

    def add_output_metadata(self, metadata: Mapping[str, Any], output_name: str | None = None) -> None:
        self._context.add_asset_metadata(dict(metadata), partition_key=self._key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def ranged_step(fn: Callable[..., Any], inputs: Iterable[str] = ()) -> Callable[..., Iterator[Any]]:
    """``fn`` (a market-day asset body, generator or not) run once per key of a ranged step; the
    signature is kept, so Dagster sees the same context, config, resource and input parameters,
    except that the ``inputs`` are typed ``Any``: a ranged step receives them as
    :class:`PartitionValues`, and the body still gets its own day's frame."""

    @functools.wraps(fn)
    def step(context: AssetExecutionContext, *args: Any, **kwargs: Any) -> Iterator[Any]:
        if not context.has_partition_key_range:  # a run of one partition
            yield from _events(fn(context, *args, **kwargs))
            return
        # A range, even of one key (a backfill's last run, or runs of one partition each): its
        # inputs arrive as PartitionValues and its output is stored per key.
        yield from _run_range(context, fn, list(context.partition_keys), args, kwargs)

    # Dagster reads the parameters (context, config, resources, inputs) from the signature.
    signature = inspect.signature(fn)
    names = set(inputs)
    step.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[
            p.replace(annotation=Any) if p.name in names else p for p in signature.parameters.values()
        ]
    )
    return step


def _events(result: Any) -> Iterator[Any]:
    if inspect.isgenerator(result):
        yield from result
    elif result is not None:
        yield result


def _run_range(
    context: AssetExecutionContext,
    fn: Callable[..., Any],
    keys: list[str],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Iterator[Any]:
    values: dict[str, Any] = {}
    metadata: dict[str, dict[str, Any]] = {}
    failures: dict[str, Failure] = {}
    for key in sorted(keys, key=lambda k: (market_and_day(k)[0].key, market_and_day(k)[1])):
        scope = PartitionScope(context, key)
        try:
            for event in _events(fn(scope, *_for_key(args, key), **_for_key(kwargs, key))):
                if isinstance(event, Output):
                    values[key] = event.value
                    metadata[key] = dict(event.metadata)
                elif isinstance(event, AssetCheckResult):
                    context.log_event(_evaluation(context, event, key))
                else:
                    yield event
        except Failure as exc:
            if exc.allow_retries:
                raise
            failures[key] = exc
            context.log.error(f"{key}: {exc.description}")
    closed = [key for key in keys if key not in values and key not in failures]
    if failures:
        _materialise_directly(context, values, metadata)
        raise Failure(
            description=_failure_text(context, failures, len(keys)),
            metadata={"failed_partitions": MetadataValue.json(sorted(failures))},
            allow_retries=False,
        )
    if not values:  # every day closed: nothing materialised, later steps skipped
        return
    for key, entries in metadata.items():
        context.add_asset_metadata(entries, partition_key=key)
    for key in closed:
        context.add_asset_metadata({CLOSED_METADATA: True}, partition_key=key)
    yield Output(PartitionValues(values))
    yield from _unevaluated_checks(context)


def _for_key(params: Any, key: str) -> Any:
    """Inputs loaded for the whole range arrive as :class:`PartitionValues`: each call gets its
    key's value (``None`` where the upstream day stored nothing, i.e. a closed day)."""
    if isinstance(params, dict):
        return {
            name: value.get(key) if isinstance(value, PartitionValues) else value
            for name, value in params.items()
        }
    return tuple(value.get(key) if isinstance(value, PartitionValues) else value for value in params)


def _evaluation(context: AssetExecutionContext, result: AssetCheckResult, key: str) -> AssetCheckEvaluation:
    return AssetCheckEvaluation(
        asset_key=result.asset_key or context.asset_key,
        check_name=str(result.check_name),
        passed=result.passed,
        metadata=result.metadata,
        severity=result.severity,
        description=result.description,
        partition=key,
    )


def _unevaluated_checks(context: AssetExecutionContext) -> Iterator[Output]:
    """Each check's output of the step, empty: the evaluations were logged per partition above, and
    Dagster requires every check output of a step to be yielded once."""
    for spec in context.assets_def.check_specs:
        name = context.assets_def.get_output_name_for_asset_check_key(
            AssetCheckKey(spec.asset_key, spec.name)
        )
        yield Output(None, output_name=name)


def _materialise_directly(
    context: AssetExecutionContext, values: dict[str, Any], metadata: dict[str, dict[str, Any]]
) -> None:
    """The keys that succeeded in a range that will fail: stored and materialised one by one (the
    step's output would claim the whole range), so a failed day does not cost its neighbours."""
    io_manager = context.resources.frame_io_manager
    for key, value in values.items():
        written = io_manager.write_partition(list(context.asset_key.path), key, value)
        context.log_event(
            AssetMaterialization(
                asset_key=context.asset_key, partition=key, metadata={**metadata[key], **written}
            )
        )


def _failure_text(context: AssetExecutionContext, failures: dict[str, Failure], total: int) -> str:
    name = context.asset_key.to_user_string()
    lines = [f"{name}: {len(failures)} of {total} partitions failed (the others are stored):"]
    lines += [f"- {key}: {exc.description}" for key, exc in sorted(failures.items())]
    return "\n".join(lines)
