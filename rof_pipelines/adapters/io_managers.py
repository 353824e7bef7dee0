"""One file per asset partition: ``{root}/{asset}/{exchange=PAIR}/{date}.{parquet|bin}``.

The root is ``storage.frames_url``: a local directory (default ``storage.data_dir/frames``) or an
fsspec URL (``s3://bucket/rof/frames``, ``gs://...``, ``file:///shared/frames``), so steps of one
run on different machines (the celery executor) hand frames to each other through storage every
worker sees. Object-store URLs need the filesystem's fsspec package (s3fs, gcsfs) installed.

Op outputs that are not assets (the island GA's tickets) go to the same storage, pickled
(:class:`StepOutputIOManager`, the ``io_manager`` of every job).

DataFrames are stored as Parquet; ``bytes`` (a serialised Q-table, say) as they are. An input of a
one-partition step that spans several partitions is their concatenation in time order, skipping days
never materialised (for ``bytes``: a dict keyed by partition). A step that runs a range of partitions
(a backfill run, defs/partition_ranges.py) hands over and receives :class:`PartitionValues`, one
value per partition key.
"""

import io
import os
import pickle
from typing import Any, Optional

import pandas as pd
from dagster import (
    ConfigurableIOManager,
    ConfigurableIOManagerFactory,
    InitResourceContext,
    InputContext,
    MetadataValue,
    OutputContext,
    UPathIOManager,
)
from upath import UPath

from rof_pipelines.adapters.resources import RofSettings
from rof_pipelines.errors import NotFoundError
from rof_pipelines.partitions import market_and_day

SUFFIXES = (".parquet", ".bin")
LOCAL_PROTOCOLS = ("", "file", "local")


class PartitionValues(dict):
    """A ranged step's output or input: partition key -> value; a key absent stored nothing."""


class ParquetFrameIOManager(ConfigurableIOManager):
    settings: RofSettings
    base_dir: Optional[str] = None  # noqa: UP045 - Dagster's config schema needs Optional

    def _root(self) -> UPath:
        if self.base_dir:
            return UPath(self.base_dir)
        return UPath(self.settings.load().storage.resolved_frames_url())

    def _stem(self, asset_key: list[str], partition_key: str) -> UPath:
        market, day = market_and_day(partition_key)
        return self._root().joinpath(*asset_key, market.key.replace(":", "="), day.isoformat())

    def write_partition(self, asset_key: list[str], partition_key: str, obj: Any) -> dict[str, Any]:
        """Store one partition's value whole (a reader never sees half a file); the metadata to
        record with its materialisation."""
        stem = self._stem(asset_key, partition_key)
        if isinstance(obj, bytes):
            path, payload = stem.with_suffix(".bin"), obj
        elif isinstance(obj, pd.DataFrame):
            buffer = io.BytesIO()
            obj.to_parquet(buffer, compression="zstd")
            path, payload = stem.with_suffix(".parquet"), buffer.getvalue()
        else:
            raise TypeError(f"{'/'.join(asset_key)}: cannot store a {type(obj).__name__}")
        if path.protocol in LOCAL_PROTOCOLS:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            temp.write_bytes(payload)
            os.replace(temp.path, path.path)
        else:  # an object store's put is atomic per object
            path.write_bytes(payload)
        return {"path": MetadataValue.path(str(path)), "file_bytes": len(payload)}

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        asset_key = list(context.asset_key.path)
        if isinstance(obj, PartitionValues):
            written = [self.write_partition(asset_key, key, value) for key, value in obj.items()]
            context.add_output_metadata(
                {"partitions_stored": len(written), "file_bytes": sum(w["file_bytes"] for w in written)}
            )
            return
        context.add_output_metadata(self.write_partition(asset_key, context.asset_partition_key, obj))

    def _existing(self, stem: UPath) -> UPath | None:
        return next((stem.with_suffix(s) for s in SUFFIXES if stem.with_suffix(s).exists()), None)

    def load_input(self, context: InputContext) -> Any:
        asset_key = list(context.asset_key.path)
        keys = sorted(context.asset_partition_keys, key=lambda k: market_and_day(k)[1])
        found = {key: self._existing(self._stem(asset_key, key)) for key in keys}
        present = {key: path for key, path in found.items() if path is not None}
        name = "/".join(asset_key)
        if not present:
            raise NotFoundError(f"{name}: partition(s) {', '.join(keys)} not materialised")
        if not context.has_partition_key:  # a ranged step: each of its partitions gets its own value
            return PartitionValues({key: _read(path) for key, path in present.items()})
        if len(present) < len(found):
            # Normal at the start of a history or when a window reaches further back than needed;
            # the consuming asset judges whether what arrived covers its window.
            context.log.info(f"{name}: not materialised, skipped {sorted(set(found) - set(present))}")
        if all(path.suffix == ".bin" for path in present.values()):
            return {key: path.read_bytes() for key, path in present.items()}
        frames = [_read(path) for path in present.values()]
        return pd.concat(frames, ignore_index=isinstance(frames[0].index, pd.RangeIndex))


def _read(path: UPath) -> Any:
    if path.suffix == ".bin":
        return path.read_bytes()
    with path.open("rb") as handle:
        return pd.read_parquet(handle)


class _PickledUPathIOManager(UPathIOManager):
    extension = ".pickle"

    def dump_to_path(self, context: OutputContext, obj: Any, path: UPath) -> None:
        payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        if path.protocol in LOCAL_PROTOCOLS:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)

    def load_from_path(self, context: InputContext, path: UPath) -> Any:
        return pickle.loads(path.read_bytes())


class StepOutputIOManager(ConfigurableIOManagerFactory):
    """Op outputs that are not assets (the island GA's tickets between its steps), pickled under
    ``{frames_url}/_step_outputs/{run}/{step}/{output}``: on the storage every worker sees, where
    Dagster's own default would write into the local DAGSTER_HOME of the machine that ran the step."""

    settings: RofSettings

    def create_io_manager(self, context: InitResourceContext) -> UPathIOManager:
        root = UPath(self.settings.load().storage.resolved_frames_url())
        return _PickledUPathIOManager(base_path=root / "_step_outputs")
