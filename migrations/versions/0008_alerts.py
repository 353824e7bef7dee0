"""alert_states, alert_deliveries: the alerting engine's memory and its outbox

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:00:00+00:00

``alert_states`` holds one row per alert (rule + labels, keyed by its fingerprint) between
evaluations, under optimistic locking (``version``), so a restarted or second evaluator neither
re-fires nor forgets an alert. ``alert_deliveries`` is the outbox: each notice to each channel is a row
written in the same transaction as the state change that caused it, claimed with a lease, retried until
sent or given up (``dead``). Unique (notice_id, channel): a notice reaches a channel once.

Value lists in the CHECK constraints are frozen here (rof_pipelines/core/alerts/model.py names them);
widening one is a later migration. Mirrored in rof_pipelines/adapters/state_store/tables.py
``build_metadata``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from rof_pipelines.adapters.state_store.tables import migration_schema

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEVERITY_CHECK = "severity IN ('info', 'warning', 'critical')"


def upgrade() -> None:
    schema = migration_schema()
    tstz = sa.DateTime(timezone=True)
    op.create_table(
        "alert_states",
        sa.Column("fingerprint", sa.Text(), primary_key=True),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("labels", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("active_since", tstz, nullable=True),
        sa.Column("fired_at", tstz, nullable=True),
        sa.Column("resolved_at", tstz, nullable=True),
        sa.Column("last_notified_at", tstz, nullable=True),
        sa.Column("notified", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("summary", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("values", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("updated_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(SEVERITY_CHECK, name="ck_alert_states_severity"),
        sa.CheckConstraint("status IN ('pending', 'firing', 'resolved')", name="ck_alert_states_status"),
        sa.CheckConstraint("version >= 1", name="ck_alert_states_version"),
        sa.CheckConstraint("jsonb_typeof(labels) = 'object'", name="ck_alert_states_labels"),
        sa.CheckConstraint("jsonb_typeof(\"values\") = 'object'", name="ck_alert_states_values"),
        schema=schema,
    )
    op.create_index("ix_alert_states_status", "alert_states", ["status"], schema=schema)
    op.create_table(
        "alert_deliveries",
        sa.Column("delivery_id", sa.Text(), primary_key=True),
        sa.Column("notice_id", sa.Text(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("labels", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("values", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("notice_at", tstz, nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("failures", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", tstz, nullable=False),
        sa.Column("lease_until", tstz, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("created_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", tstz, nullable=True),
        sa.UniqueConstraint("notice_id", "channel", name="uq_alert_deliveries_notice_channel"),
        sa.CheckConstraint("event IN ('firing', 'resolved', 'test')", name="ck_alert_deliveries_event"),
        sa.CheckConstraint(SEVERITY_CHECK, name="ck_alert_deliveries_severity"),
        sa.CheckConstraint("status IN ('pending', 'sent', 'dead')", name="ck_alert_deliveries_status"),
        sa.CheckConstraint("attempts >= 0 AND failures >= 0", name="ck_alert_deliveries_counts"),
        sa.CheckConstraint("jsonb_typeof(labels) = 'object'", name="ck_alert_deliveries_labels"),
        sa.CheckConstraint("jsonb_typeof(\"values\") = 'object'", name="ck_alert_deliveries_values"),
        schema=schema,
    )
    op.create_index(
        "ix_alert_deliveries_status_next_attempt_at",
        "alert_deliveries",
        ["status", "next_attempt_at"],
        schema=schema,
    )


def downgrade() -> None:
    schema = migration_schema()
    op.drop_table("alert_deliveries", schema=schema)
    op.drop_table("alert_states", schema=schema)
