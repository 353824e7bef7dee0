"""Frames as Parquet files, one per asset partition: ``{base}/{asset}/{market}/{date}.parquet``."""

import os
from pathlib import Path
from typing import Optional

import pandas as pd
from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext

from rof_pipelines.adapters.resources import RofSettings
from rof_pipelines.errors import NotFoundError
from rof_pipelines.partitions import market_and_day


class ParquetFrameIOManager(ConfigurableIOManager):
    """Stores a partition's DataFrame as one Parquet file; an input spanning several partitions
    (a window) is their concatenation in time order, skipping days that were never materialised."""

    settings: RofSettings
    base_dir: Optional[str] = None  # noqa: UP045 - Dagster's config schema needs Optional

    def _root(self) -> Path:
        if self.base_dir:
            return Path(self.base_dir)
        return self.settings.load().storage.resolved_data_dir() / "frames"

    def _path(self, asset_key: list[str], partition_key: str) -> Path:
        market, day = market_and_day(partition_key)
        return self._root().joinpath(*asset_key) / market.key.replace(":", "=") / f"{day.isoformat()}.parquet"

    def handle_output(self, context: OutputContext, obj: pd.DataFrame) -> None:
        path = self._path(list(context.asset_key.path), context.asset_partition_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        obj.to_parquet(temp, compression="zstd")
        os.replace(temp, path)
        context.add_output_metadata(
            {"path": MetadataValue.path(str(path)), "file_bytes": path.stat().st_size}
        )

    def load_input(self, context: InputContext) -> pd.DataFrame:
        asset_key = list(context.asset_key.path)
        keys = context.asset_partition_keys
        paths = [self._path(asset_key, key) for key in sorted(keys, key=lambda k: market_and_day(k)[1])]
        present = [path for path in paths if path.exists()]
        if not present:
            raise NotFoundError(
                f"{'/'.join(asset_key)}: partition(s) {', '.join(sorted(keys))} not materialised "
                f"(looked for {paths[-1]})"
            )
        if len(present) < len(paths):
            missing = [str(path) for path in paths if not path.exists()]
            context.log.warning(f"{'/'.join(asset_key)}: window partly missing, skipped {missing}")
        frames = [pd.read_parquet(path) for path in present]
        return pd.concat(frames, ignore_index=isinstance(frames[0].index, pd.RangeIndex))
