"""Usage events (written in batches), the ledger outbox, and each replica's published status.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_events",
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.Text),
        sa.Column("team", sa.Text),
        sa.Column("route", sa.Text, nullable=False),
        sa.Column("backend", sa.Text),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.Text),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("ttft_ms", sa.Float),
        sa.Column("replica", sa.Text, nullable=False),
    )
    op.create_index("ix_usage_events_ts", "usage_events", ["ts"])
    op.create_index("ix_usage_events_key_id_ts", "usage_events", ["key_id", "ts"])
    op.create_index("ix_usage_events_team_ts", "usage_events", ["team", "ts"])
    # Spend to book in azora-ledger: one row per usage batch with a cost, written in the same
    # transaction as the batch's usage events; sent with Idempotency-Key orchestrator-spend-<id>.
    op.create_table(
        "ledger_outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lines", JSONB, nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_outbox"),
    )
    op.create_index(
        "ix_ledger_outbox_unsent",
        "ledger_outbox",
        ["id"],
        postgresql_where=sa.text("sent_at IS NULL"),
    )
    op.create_table(
        "replica_status",
        sa.Column("replica", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("routes", JSONB, nullable=False),
        sa.PrimaryKeyConstraint("replica", name="pk_replica_status"),
    )


def downgrade() -> None:
    op.drop_table("replica_status")
    op.drop_table("ledger_outbox")
    op.drop_table("usage_events")
