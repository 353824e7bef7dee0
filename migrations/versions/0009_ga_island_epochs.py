"""ga_island_epochs: the island GA's state per task, island and epoch

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 12:00:00+00:00

One row per (task_id, island, epoch): the island's population, fitness and adaptive state at the end
of the epoch (epoch 0: its share of the initial population), plus the trials and cost of computing
it; ``payload`` is zlib-compressed JSON (rof_pipelines/adapters/optimisation.py). The next epoch's
steps read their own row and their ring neighbour's (the immigrants); a re-executed step finds its
row and does not recompute it. Rows older than ``state_management.retention_days`` are pruned by
``created_at``. Mirrored in rof_pipelines/adapters/state_store/tables.py ``build_metadata``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rof_pipelines.adapters.state_store.tables import migration_schema

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    schema = migration_schema()
    op.create_table(
        "ga_island_epochs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("island", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("task_id", "island", "epoch", name="uq_ga_island_epochs_task_island_epoch"),
        sa.CheckConstraint("island >= 0 AND epoch >= 0", name="ck_ga_island_epochs_numbers"),
        schema=schema,
    )
    op.create_index("ix_ga_island_epochs_created_at", "ga_island_epochs", ["created_at"], schema=schema)


def downgrade() -> None:
    schema = migration_schema()
    op.drop_index("ix_ga_island_epochs_created_at", table_name="ga_island_epochs", schema=schema)
    op.drop_table("ga_island_epochs", schema=schema)
