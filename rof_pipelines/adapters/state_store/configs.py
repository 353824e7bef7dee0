"""Active strategy configs: the parameters in force per market (table ``active_strategy_configs``).

The active config is shared truth: it is only ever created or replaced at the version a writer read,
never overwritten blind.
"""

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from rof_pipelines.adapters.state_store.records import ActiveConfig
from rof_pipelines.adapters.state_store.repository import SqlRepository
from rof_pipelines.adapters.state_store.tables import CONFIG_SOURCES
from rof_pipelines.adapters.state_store.values import DEFAULT_UPDATED_BY, as_object, check_choice, market_key
from rof_pipelines.adapters.state_store.versioned import check_expected, write_versioned


def config_values(
    params: Mapping[str, Any], source: str, experiment_id: str | None, updated_by: str
) -> dict[str, Any]:
    """The columns a replacement writes, checked (a replacement is whole)."""
    return {
        "params": as_object("params", params),
        "source": check_choice("source", source, CONFIG_SOURCES),
        "experiment_id": experiment_id,
        "updated_by": updated_by,
    }


class SqlActiveConfigs(SqlRepository):
    """``store.configs``: the strategy parameters in force for each market."""

    def get_active(self, market: str) -> ActiveConfig | None:
        """The parameters in force for ``market``, or None if none were ever set."""
        table = self._store.table("active_strategy_configs")
        key = market_key(market)

        def run() -> ActiveConfig | None:
            with self._engine.connect() as conn:
                row = conn.execute(sa.select(table).where(table.c.market == key)).mappings().first()
            return ActiveConfig(**row) if row is not None else None

        return self._read(run)

    def set_active(
        self,
        market: str,
        params: Mapping[str, Any],
        source: str,
        experiment_id: str | None = None,
        expected_version: int | None = None,
        updated_by: str = DEFAULT_UPDATED_BY,
    ) -> ActiveConfig:
        """Put ``params`` in force for ``market`` and return the stored row.

        ``expected_version`` None (or 0): create - ConflictError if the market already has a config;
        N: replace the config read at version N - ConflictError if it is now at another version (or
        gone). A replacement is whole: ``experiment_id`` left None clears the previous one.
        """
        check_expected(expected_version)
        key = market_key(market)
        values = config_values(params, source, experiment_id, updated_by)
        table = self._store.table("active_strategy_configs")
        row = write_versioned(self._store, table, {"market": key}, values, expected_version)
        return ActiveConfig(**row)

    def list_active(self) -> list[ActiveConfig]:
        """Every market's config in force, by market."""
        table = self._store.table("active_strategy_configs")

        def run() -> list[ActiveConfig]:
            with self._engine.connect() as conn:
                rows = conn.execute(sa.select(table).order_by(table.c.market)).mappings()
                return [ActiveConfig(**row) for row in rows]

        return self._read(run)
