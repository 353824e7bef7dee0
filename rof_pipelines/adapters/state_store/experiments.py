"""A/B experiments: each finished experiment with its arms (tables ``ab_experiments``, ``ab_arms``),
and which experiment promoted a market's active config."""

from typing import Any

import sqlalchemy as sa

from rof_pipelines.adapters.state_store.records import ActiveConfig, ArmRecord, ExperimentRecord
from rof_pipelines.adapters.state_store.repository import SqlRepository
from rof_pipelines.adapters.state_store.tables import ARM_ROLES
from rof_pipelines.adapters.state_store.values import check_choice, json_safe, market_key


def experiment_rows(experiment: ExperimentRecord) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The experiment's row and its arms' rows, checked and JSON-safe."""
    for arm in experiment.arms:
        check_choice("role", arm.role, ARM_ROLES)
    row = {
        "experiment_id": experiment.experiment_id,
        "market": market_key(experiment.market),
        "label": experiment.label,
        "window_start": experiment.window_start,
        "window_end": experiment.window_end,
        "decision": json_safe(experiment.decision),
        "winner": experiment.winner,
        "promoted": bool(experiment.promoted),
        "active_version": experiment.active_version,
        "promoted_version": experiment.promoted_version,
        "conflict": experiment.conflict,
        "details": json_safe(experiment.details),
    }
    arm_rows = [
        {
            "experiment_id": experiment.experiment_id,
            "arm": arm.arm,
            "role": arm.role,
            "params": json_safe(arm.params),
            "metrics": json_safe(arm.metrics),
            "p_values": json_safe(arm.p_values),
        }
        for arm in experiment.arms
    ]
    return row, arm_rows


class SqlExperiments(SqlRepository):
    """``store.experiments``: finished A/B experiments, kept for audit and for ``rof experiments``."""

    def record(self, experiment: ExperimentRecord) -> None:
        """Store a finished experiment and its arms in one transaction (PermanentError if the id exists:
        experiment ids are unique per run, so a duplicate is a bug, not a retry)."""
        row, arm_rows = experiment_rows(experiment)
        exp, arms = self._store.table("ab_experiments"), self._store.table("ab_arms")

        def run() -> None:
            with self._engine.begin() as conn:
                conn.execute(sa.insert(exp).values(**row))
                if arm_rows:
                    conn.execute(sa.insert(arms), arm_rows)

        self._write(run)

    def recent(self, market: str | None = None, limit: int = 100) -> list[ExperimentRecord]:
        """Experiments, newest first (optionally of one market), each with its arms."""
        exp = self._store.table("ab_experiments")
        query = sa.select(exp).order_by(exp.c.created_at.desc(), exp.c.experiment_id.desc()).limit(limit)
        if market is not None:
            query = query.where(exp.c.market == market_key(market))

        def run() -> list[ExperimentRecord]:
            with self._engine.connect() as conn:
                return self._with_arms(conn, query)

        return self._read(run)

    def get(self, experiment_id: str) -> ExperimentRecord | None:
        """One experiment with its arms, or None."""
        exp = self._store.table("ab_experiments")
        query = sa.select(exp).where(exp.c.experiment_id == experiment_id)

        def run() -> ExperimentRecord | None:
            with self._engine.connect() as conn:
                found = self._with_arms(conn, query)
            return found[0] if found else None

        return self._read(run)

    def promoting(self, market: str) -> tuple[ActiveConfig | None, ExperimentRecord | None]:
        """The market's active config and the experiment that promoted it, read together: (None, None)
        without a config; (config, None) when it was set otherwise (``source`` says how) or when the
        promoting experiment's record is missing (``config.experiment_id`` still names it)."""
        configs, exp = self._store.table("active_strategy_configs"), self._store.table("ab_experiments")
        key = market_key(market)

        def run() -> tuple[ActiveConfig | None, ExperimentRecord | None]:
            with self._engine.connect() as conn:
                row = conn.execute(sa.select(configs).where(configs.c.market == key)).mappings().first()
                if row is None:
                    return None, None
                config = ActiveConfig(**row)
                if config.experiment_id is None:
                    return config, None
                query = sa.select(exp).where(exp.c.experiment_id == config.experiment_id)
                found = self._with_arms(conn, query)
            return config, found[0] if found else None

        return self._read(run)

    def _with_arms(self, conn: sa.Connection, query: sa.Select) -> list[ExperimentRecord]:
        """The experiments ``query`` selects, in its order, each with its arms (two statements)."""
        arms = self._store.table("ab_arms")
        rows = list(conn.execute(query).mappings())
        ids = [row["experiment_id"] for row in rows]
        by_id: dict[str, list[ArmRecord]] = {i: [] for i in ids}
        if ids:
            arm_query = sa.select(arms).where(arms.c.experiment_id.in_(ids)).order_by(arms.c.arm)
            for arm in conn.execute(arm_query).mappings():
                values = {k: v for k, v in arm.items() if k != "experiment_id"}
                by_id[arm["experiment_id"]].append(ArmRecord(**values))
        return [ExperimentRecord(**row, arms=tuple(by_id[row["experiment_id"]])) for row in rows]
