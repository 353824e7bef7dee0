"""quote_gaps: ranges an exchange served no candles for

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 18:00:00+00:00

One row per (market, interval, gap_from): a half-open range [gap_from, gap_to) of candle open times
a download asked the exchange for and got no candles (an outage, a listing date). A later download
of an overlapping range replaces the rows it overlaps with what it found (see
rof_pipelines/adapters/state_store/quote_gaps.py). Mirrored in
rof_pipelines/adapters/state_store/tables.py ``build_metadata``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rof_pipelines.adapters.state_store.tables import migration_schema

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    schema = migration_schema()
    op.create_table(
        "quote_gaps",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("interval", sa.Text(), nullable=False),
        sa.Column("gap_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gap_to", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("market", "interval", "gap_from", name="uq_quote_gaps_market_interval_from"),
        sa.CheckConstraint("gap_to > gap_from", name="ck_quote_gaps_range"),
        schema=schema,
    )


def downgrade() -> None:
    op.drop_table("quote_gaps", schema=migration_schema())
