"""worker_progress and active_strategy_configs

Revision ID: 0001
Revises:
Create Date: 2025-11-24 00:00:00+00:00

Both tables carry ``version`` for optimistic locking: a writer that read version N updates
``WHERE version = N`` and sets ``version = N + 1``; zero rows means someone else wrote first.
Value lists in the CHECK constraints are frozen here on purpose (a migration is a snapshot); widening
one is a later migration that drops and re-creates the named constraint.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from rof_pipelines.adapters.state_store.tables import migration_schema

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    schema = migration_schema()
    op.create_table(
        "worker_progress",
        sa.Column("task_id", sa.Text(), primary_key=True),
        sa.Column("worker_id", sa.Text(), nullable=True),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("experiment_id", sa.Text(), nullable=True),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("total_generations", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("best_fitness", sa.Double(), nullable=True),
        sa.Column("eta_seconds", sa.Double(), nullable=True),
        sa.Column("details", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed', 'cancelled')",
            name="ck_worker_progress_status",
        ),
        sa.CheckConstraint(
            "generation >= 0 AND total_generations >= 0", name="ck_worker_progress_generations"
        ),
        sa.CheckConstraint("version >= 1", name="ck_worker_progress_version"),
        sa.CheckConstraint("window_end > window_start", name="ck_worker_progress_window"),
        sa.CheckConstraint("jsonb_typeof(details) = 'object'", name="ck_worker_progress_details"),
        schema=schema,
    )
    op.create_index(
        "ix_worker_progress_market_status", "worker_progress", ["market", "status"], schema=schema
    )

    op.create_table(
        "active_strategy_configs",
        sa.Column("market", sa.Text(), primary_key=True),
        sa.Column("params", postgresql.JSONB(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("experiment_id", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "source IN ('default', 'ga', 'ab_test', 'manual')", name="ck_active_strategy_configs_source"
        ),
        sa.CheckConstraint("version >= 1", name="ck_active_strategy_configs_version"),
        sa.CheckConstraint("jsonb_typeof(params) = 'object'", name="ck_active_strategy_configs_params"),
        schema=schema,
    )


def downgrade() -> None:
    schema = migration_schema()
    op.drop_table("active_strategy_configs", schema=schema)
    op.drop_index("ix_worker_progress_market_status", table_name="worker_progress", schema=schema)
    op.drop_table("worker_progress", schema=schema)
