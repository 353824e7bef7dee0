"""One file per asset partition: ``{base}/{asset}/{exchange=PAIR}/{date}.{parquet|bin}``.

DataFrames are stored as Parquet; ``bytes`` (a serialised Q-table, say) as they are. An input that
spans several partitions (a window) is their concatenation in time order, skipping days that were
never materialised; for ``bytes`` inputs it is a dict keyed by partition.
"""

import os
from pathlib import Path
from typing import Any, Optional

import pandas as pd
from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext

from rof_pipelines.adapters.resources import RofSettings
from rof_pipelines.errors import NotFoundError
from rof_pipelines.partitions import market_and_day

SUFFIXES = (".parquet", ".bin")


class ParquetFrameIOManager(ConfigurableIOManager):
    settings: RofSettings
    base_dir: Optional[str] = None  # noqa: UP045 - Dagster's config schema needs Optional

    def _root(self) -> Path:
        if self.base_dir:
            return Path(self.base_dir)
        return self.settings.load().storage.resolved_data_dir() / "frames"

    def _stem(self, asset_key: list[str], partition_key: str) -> Path:
        market, day = market_and_day(partition_key)
        return self._root().joinpath(*asset_key) / market.key.replace(":", "=") / day.isoformat()

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        stem = self._stem(list(context.asset_key.path), context.asset_partition_key)
        stem.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, bytes):
            path = stem.with_suffix(".bin")
        elif isinstance(obj, pd.DataFrame):
            path = stem.with_suffix(".parquet")
        else:
            raise TypeError(f"{context.asset_key.to_user_string()}: cannot store a {type(obj).__name__}")
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        if isinstance(obj, bytes):
            temp.write_bytes(obj)
        else:
            obj.to_parquet(temp, compression="zstd")
        os.replace(temp, path)  # readers never see half a file
        context.add_output_metadata(
            {"path": MetadataValue.path(str(path)), "file_bytes": path.stat().st_size}
        )

    def _existing(self, stem: Path) -> Path | None:
        return next((stem.with_suffix(s) for s in SUFFIXES if stem.with_suffix(s).exists()), None)

    def load_input(self, context: InputContext) -> Any:
        asset_key = list(context.asset_key.path)
        keys = sorted(context.asset_partition_keys, key=lambda k: market_and_day(k)[1])
        found = {key: self._existing(self._stem(asset_key, key)) for key in keys}
        present = {key: path for key, path in found.items() if path is not None}
        name = "/".join(asset_key)
        if not present:
            raise NotFoundError(f"{name}: partition(s) {', '.join(keys)} not materialised")
        if len(present) < len(found):
            # Normal at the start of a history or when a window reaches further back than needed;
            # the consuming asset judges whether what arrived covers its window.
            context.log.info(f"{name}: not materialised, skipped {sorted(set(found) - set(present))}")
        if all(path.suffix == ".bin" for path in present.values()):
            return {key: path.read_bytes() for key, path in present.items()}
        frames = [pd.read_parquet(path) for path in present.values()]
        return pd.concat(frames, ignore_index=isinstance(frames[0].index, pd.RangeIndex))
