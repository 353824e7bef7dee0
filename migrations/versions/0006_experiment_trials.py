"""experiment_trials: every configuration ever evaluated for an A/B task

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:00:00+00:00

A task is (market, experiment label, window start, window end). Each distinct configuration the
optimiser scored for it, in any run (resumed, rerun, seeded or cold), is one row keyed by its
genome's hash, with the Sharpe it scored. The deflated Sharpe ratio and Holm count these trials,
so a decision does not depend on how many times it was computed.

Tables live in the configured state_storage schema: always pass ``schema=migration_schema()``.
Mirror every change in rof_pipelines/adapters/state_store/tables.py ``build_metadata``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rof_pipelines.adapters.state_store.tables import migration_schema

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "experiment_trials",
        sa.Column("task_key", sa.Text(), primary_key=True),
        sa.Column("config_hash", sa.Text(), primary_key=True),
        sa.Column("sharpe", sa.Double(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=migration_schema(),
    )


def downgrade() -> None:
    op.drop_table("experiment_trials", schema=migration_schema())
