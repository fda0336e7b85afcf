"""Products, rules with revisions, promotions, quotes and redemptions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "pricing_state",
        sa.Column("id", sa.SmallInteger, primary_key=True),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.CheckConstraint("id = 1", name="single_row"),
    )
    op.execute("INSERT INTO pricing_state (id, revision) VALUES (1, 0)")
    op.create_table(
        "products",
        sa.Column("sku", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("labels", JSONB, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("prices", JSONB, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_table(
        "pricing_rules",
        sa.Column("namespace", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("uid", sa.Text, nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("spec", JSONB, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_table(
        "rule_revisions",
        sa.Column("revision", sa.BigInteger, primary_key=True),
        sa.Column("namespace", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("spec", JSONB, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "promotions",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("rule_namespace", sa.Text, nullable=False),
        sa.Column("rule_name", sa.Text, nullable=False),
        sa.Column("max_redemptions", sa.Integer, nullable=True),
        sa.Column("per_customer_limit", sa.Integer, nullable=True),
        sa.Column("first_purchase_only", sa.Boolean, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_table(
        "quotes",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("customer_id", sa.Text, nullable=True),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("codes", JSONB, nullable=False),
        sa.Column("request", JSONB, nullable=False),
        sa.Column("result", JSONB, nullable=False),
        sa.Column("snapshot_revision", sa.BigInteger, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("accepted_at", _TS, nullable=True),
        sa.Column("accept_response", JSONB, nullable=True),
        sa.CheckConstraint("status IN ('open', 'accepted')", name="status"),
        sa.CheckConstraint("total >= 0", name="total_not_negative"),
    )
    op.create_index(
        "ix_quotes_accepted_customer",
        "quotes",
        ["customer_id"],
        postgresql_where=sa.text("status = 'accepted'"),
    )
    op.create_table(
        "redemptions",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("code", sa.Text, sa.ForeignKey("promotions.code"), nullable=False),
        sa.Column("quote_id", UUID(as_uuid=True), sa.ForeignKey("quotes.id"), nullable=False),
        sa.Column("customer_id", sa.Text, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("code", "quote_id", name="uq_redemptions_code_quote"),
    )
    op.create_index("ix_redemptions_code_customer", "redemptions", ["code", "customer_id"])


def downgrade() -> None:
    for table in (
        "redemptions",
        "quotes",
        "promotions",
        "rule_revisions",
        "pricing_rules",
        "products",
        "pricing_state",
    ):
        op.drop_table(table)
