"""ab_experiments, ab_arms, knowledge_tasks: A/B experiments with their evidence, and the knowledge base

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 17:25:32.916590+00:00

Tables live in the configured state_storage schema: always pass ``schema=migration_schema()`` (never
a literal name, never the name pasted into SQL text). Mirror every change in
rof_pipelines/adapters/state_store/tables.py ``build_metadata`` so ``alembic check`` stays clean.

Every experiment is kept with its arms, statistics and decision (and a promotion conflict, if it lost
the optimistic-lock race), so promotions can be audited; knowledge_tasks are the finished optimisation
tasks meta/transfer learning seed from (pruned by ``meta_learning.knowledge_retention_days``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from rof_pipelines.adapters.state_store.tables import migration_schema

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    schema = migration_schema()
    tstz = sa.DateTime(timezone=True)
    op.create_table(
        "ab_experiments",
        sa.Column("experiment_id", sa.Text(), primary_key=True),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("window_start", tstz, nullable=False),
        sa.Column("window_end", tstz, nullable=False),
        sa.Column("decision", postgresql.JSONB(), nullable=False),
        sa.Column("winner", sa.Text(), nullable=True),
        sa.Column("promoted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("active_version", sa.Integer(), nullable=True),
        sa.Column("promoted_version", sa.Integer(), nullable=True),
        sa.Column("conflict", sa.Text(), nullable=True),
        sa.Column("details", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.Index("ix_ab_experiments_market_created_at", "market", "created_at"),
        schema=schema,
    )
    op.create_table(
        "ab_arms",
        sa.Column(
            "experiment_id",
            sa.Text(),
            sa.ForeignKey(f"{schema}.ab_experiments.experiment_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("arm", sa.Text(), primary_key=True),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("params", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("metrics", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("p_values", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.CheckConstraint("role IN ('active', 'challenger', 'baseline')", name="ck_ab_arms_role"),
        schema=schema,
    )
    op.create_table(
        "knowledge_tasks",
        sa.Column("task_id", sa.Text(), primary_key=True),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("finished_at", tstz, nullable=False),
        sa.Column("features", postgresql.JSONB(), nullable=False),
        sa.Column("best_params", postgresql.JSONB(), nullable=False),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("outcome", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("generations", sa.Integer(), nullable=True),
        sa.Column("artifact", sa.Text(), nullable=True),
        sa.Column("created_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.Index("ix_knowledge_tasks_finished_at", "finished_at"),
        schema=schema,
    )


def downgrade() -> None:
    schema = migration_schema()
    op.drop_table("knowledge_tasks", schema=schema)
    op.drop_table("ab_arms", schema=schema)
    op.drop_table("ab_experiments", schema=schema)
