"""ga_checkpoints: the genetic optimiser's saved generations

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 00:00:00+00:00

A task is (market, experiment_id, window_start, window_end, data_fingerprint, config_fingerprint);
one row per saved generation, ``payload`` being the engine's checkpoint (zlib-compressed JSON: the
population, fitness, adaptive state and seeds; bytes so floats, even -0.0, come back bit for bit).
Rows older than ``state_management.retention_days`` are pruned by ``created_at``.

Tables live in the configured state_storage schema: always pass ``schema=migration_schema()`` (never
a literal name, never the name pasted into SQL text). Mirror every change in
rof_pipelines/adapters/state_store/tables.py ``build_metadata`` so ``alembic check`` stays clean.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rof_pipelines.adapters.state_store.tables import migration_schema

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    schema = migration_schema()
    tstz = sa.DateTime(timezone=True)
    op.create_table(
        "ga_checkpoints",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("experiment_id", sa.Text(), nullable=False),
        sa.Column("window_start", tstz, nullable=False),
        sa.Column("window_end", tstz, nullable=False),
        sa.Column("data_fingerprint", sa.Text(), nullable=False),
        sa.Column("config_fingerprint", sa.Text(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("best_fitness", sa.Double(), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint(
            "market",
            "experiment_id",
            "window_start",
            "window_end",
            "data_fingerprint",
            "config_fingerprint",
            "generation",
            name="uq_ga_checkpoints_task_generation",
        ),
        sa.CheckConstraint("generation >= 0", name="ck_ga_checkpoints_generation"),
        sa.CheckConstraint("window_end > window_start", name="ck_ga_checkpoints_window"),
        schema=schema,
    )
    op.create_index("ix_ga_checkpoints_created_at", "ga_checkpoints", ["created_at"], schema=schema)


def downgrade() -> None:
    schema = migration_schema()
    op.drop_index("ix_ga_checkpoints_created_at", table_name="ga_checkpoints", schema=schema)
    op.drop_table("ga_checkpoints", schema=schema)
