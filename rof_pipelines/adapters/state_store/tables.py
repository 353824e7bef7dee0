"""The state store's tables, as the Alembic migrations in ``migrations/`` leave them at head, and the
value lists their CHECK constraints freeze.

:func:`build_metadata` is what every SQL repository queries; ``alembic check`` (and
``test_code_tables_match_migrations``) compares it with the migrations, so a new migration changes
this module too. Migration scripts read their target schema with :func:`migration_schema`.
"""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from rof_pipelines.core.alerts.model import ALERT_STATUSES, DELIVERY_STATUSES, NOTICE_EVENTS, SEVERITIES

# Mirrored by the CHECK constraints of migrations 0001 and 0005; widen both together (in a new migration).
PROGRESS_STATUSES: tuple[str, ...] = ("pending", "running", "completed", "failed", "cancelled")
CONFIG_SOURCES: tuple[str, ...] = ("default", "ga", "ab_test", "manual")
ARM_ROLES: tuple[str, ...] = ("active", "challenger", "baseline")
# Migration 0008 freezes rof_pipelines.core.alerts.model's SEVERITIES, ALERT_STATUSES, NOTICE_EVENTS
# and DELIVERY_STATUSES in its CHECK constraints (test_alert_outbox.py holds the two together).


def _one_of(column: str, values: tuple[str, ...]) -> str:
    """The CHECK text admitting exactly ``values`` in ``column``."""
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def migration_schema() -> str:
    """Inside a migration script: the configured state_storage schema (``migrations/env.py`` puts the
    version table there, and every table goes beside it)."""
    from alembic import op

    schema = op.get_context().version_table_schema
    if not schema:
        raise RuntimeError("migrations/env.py must configure version_table_schema")
    return schema


def build_metadata(schema: str) -> sa.MetaData:
    """The state store's tables at migration head, in ``schema``.

    Keep in step with ``migrations/versions``: every new migration changes this too.
    """
    metadata = sa.MetaData(schema=schema)
    tstz = sa.DateTime(timezone=True)
    sa.Table(
        "worker_progress",
        metadata,
        sa.Column("task_id", sa.Text(), primary_key=True),
        sa.Column("worker_id", sa.Text(), nullable=True),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("experiment_id", sa.Text(), nullable=True),
        sa.Column("window_start", tstz, nullable=True),
        sa.Column("window_end", tstz, nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("total_generations", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("best_fitness", sa.Double(), nullable=True),
        sa.Column("eta_seconds", sa.Double(), nullable=True),
        sa.Column("details", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("started_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.Index("ix_worker_progress_market_status", "market", "status"),
    )
    sa.Table(
        "active_strategy_configs",
        metadata,
        sa.Column("market", sa.Text(), primary_key=True),
        sa.Column("params", postgresql.JSONB(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("experiment_id", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("updated_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_by", sa.Text(), nullable=False),
    )
    sa.Table(  # 0002: see rof_pipelines/adapters/inbox.py
        "message_inbox",
        metadata,
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("market", sa.Text(), nullable=True),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("redelivered", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("received_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.Column("quarantined_at", tstz, nullable=True),  # 0007
        sa.Column("quarantine_reason", sa.Text(), nullable=True),  # 0007
        sa.UniqueConstraint("message_id", name="uq_message_inbox_message_id"),
        sa.Index("ix_message_inbox_kind_seq", "kind", "seq"),
    )
    sa.Table(  # 0003: the genetic optimiser's checkpoints, see rof_pipelines/adapters/optimisation.py
        "ga_checkpoints",
        metadata,
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
        sa.Index("ix_ga_checkpoints_created_at", "created_at"),
    )
    sa.Table(  # 0009: the island GA's epochs, see islands.py
        "ga_island_epochs",
        metadata,
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("island", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("task_id", "island", "epoch", name="uq_ga_island_epochs_task_island_epoch"),
        sa.CheckConstraint("island >= 0 AND epoch >= 0", name="ck_ga_island_epochs_numbers"),
        sa.Index("ix_ga_island_epochs_created_at", "created_at"),
    )
    sa.Table(  # 0010: ranges an exchange served no candles for, see quote_gaps.py
        "quote_gaps",
        metadata,
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("interval", sa.Text(), nullable=False),
        sa.Column("gap_from", tstz, nullable=False),
        sa.Column("gap_to", tstz, nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("recorded_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("market", "interval", "gap_from", name="uq_quote_gaps_market_interval_from"),
        sa.CheckConstraint("gap_to > gap_from", name="ck_quote_gaps_range"),
    )
    sa.Table(  # 0004: see rof_pipelines/adapters/config_versions.py
        "config_versions",
        metadata,
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), primary_key=True),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("changed_keys", postgresql.JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("recorded_at", tstz, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('applied', 'refused')", name="ck_config_versions_status"),
    )
    sa.Table(  # 0005: A/B experiments (defs/experiments) and the meta/transfer knowledge base
        "ab_experiments",
        metadata,
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
    )
    sa.Table(
        "ab_arms",
        metadata,
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
    )
    sa.Table(
        "knowledge_tasks",
        metadata,
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
    )
    sa.Table(
        "experiment_trials",
        metadata,
        sa.Column("task_key", sa.Text(), primary_key=True),
        sa.Column("config_hash", sa.Text(), primary_key=True),
        sa.Column("sharpe", sa.Double(), nullable=False),
        sa.Column("created_at", tstz, nullable=False, server_default=sa.func.now()),
    )
    sa.Table(  # 0008: the alerting engine's state and outbox, see alerts.py
        "alert_states",
        metadata,
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
        sa.CheckConstraint(_one_of("severity", SEVERITIES), name="ck_alert_states_severity"),
        sa.CheckConstraint(_one_of("status", ALERT_STATUSES), name="ck_alert_states_status"),
        sa.CheckConstraint("version >= 1", name="ck_alert_states_version"),
        sa.CheckConstraint("jsonb_typeof(labels) = 'object'", name="ck_alert_states_labels"),
        sa.CheckConstraint("jsonb_typeof(\"values\") = 'object'", name="ck_alert_states_values"),
        sa.Index("ix_alert_states_status", "status"),
    )
    sa.Table(
        "alert_deliveries",
        metadata,
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
        sa.CheckConstraint(_one_of("event", NOTICE_EVENTS), name="ck_alert_deliveries_event"),
        sa.CheckConstraint(_one_of("severity", SEVERITIES), name="ck_alert_deliveries_severity"),
        sa.CheckConstraint(_one_of("status", DELIVERY_STATUSES), name="ck_alert_deliveries_status"),
        sa.CheckConstraint("attempts >= 0 AND failures >= 0", name="ck_alert_deliveries_counts"),
        sa.CheckConstraint("jsonb_typeof(labels) = 'object'", name="ck_alert_deliveries_labels"),
        sa.CheckConstraint("jsonb_typeof(\"values\") = 'object'", name="ck_alert_deliveries_values"),
        sa.Index("ix_alert_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )
    return metadata
