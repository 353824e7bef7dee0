"""message_inbox quarantine: rows a sensor could not turn into run requests, set aside with the reason

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 22:30:00+00:00

A queue sensor that meets an error on one inbox row records it here and moves its cursor past the
row, instead of failing every later tick on it; the sensors skip quarantined rows. Mirrored in
rof_pipelines/adapters/state_store/tables.py ``build_metadata`` (message_inbox).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rof_pipelines.adapters.state_store.tables import migration_schema

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    schema = migration_schema()
    op.add_column(
        "message_inbox", sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=True), schema=schema
    )
    op.add_column("message_inbox", sa.Column("quarantine_reason", sa.Text(), nullable=True), schema=schema)


def downgrade() -> None:
    schema = migration_schema()
    op.drop_column("message_inbox", "quarantine_reason", schema=schema)
    op.drop_column("message_inbox", "quarantined_at", schema=schema)
