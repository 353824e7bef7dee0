"""message_inbox: every accepted RabbitMQ message, once, in arrival order

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 00:00:00+00:00

The queue sensors insert what a tick drained in one transaction and ack only after COMMIT; the unique
``message_id`` makes a redelivered message a no-op, and ``seq`` orders the rows for the sensors'
cursors (runs are requested from rows after the cursor, with the message id as run key).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from rof_pipelines.adapters.state_store.tables import migration_schema

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    schema = migration_schema()
    op.create_table(
        "message_inbox",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("market", sa.Text(), nullable=True),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("redelivered", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("message_id", name="uq_message_inbox_message_id"),
        schema=schema,
    )
    op.create_index("ix_message_inbox_kind_seq", "message_inbox", ["kind", "seq"], schema=schema)


def downgrade() -> None:
    schema = migration_schema()
    op.drop_index("ix_message_inbox_kind_seq", table_name="message_inbox", schema=schema)
    op.drop_table("message_inbox", schema=schema)
