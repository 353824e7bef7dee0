"""config_versions: every config.yaml edit the hot-reload sensor saw, applied or refused

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 00:00:00+00:00

Only key paths are recorded, never values: config.yaml holds passwords.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from rof_pipelines.adapters.state_store.tables import migration_schema

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    schema = migration_schema()
    op.create_table(
        "config_versions",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("changed_keys", postgresql.JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('applied', 'refused')", name="ck_config_versions_status"),
        schema=schema,
    )


def downgrade() -> None:
    op.drop_table("config_versions", schema=migration_schema())
