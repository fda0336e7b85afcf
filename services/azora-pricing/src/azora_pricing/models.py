"""SQLAlchemy tables of azora-pricing."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase

from azora_common.db import make_metadata


class Base(DeclarativeBase):
    metadata = make_metadata()


metadata = Base.metadata

# One row: the service-wide revision. Every product or rule write bumps it with an UPDATE,
# whose row lock orders writers, so revision order is commit order (a sequence would not be).
pricing_state = sa.Table(
    "pricing_state",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.CheckConstraint("id = 1", name="single_row"),
)

products = sa.Table(
    "products",
    metadata,
    sa.Column("sku", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("labels", JSONB, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("prices", JSONB, nullable=False),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


def _config_table(name: str) -> sa.Table:
    """A table of the shared generation-stamped admin store (azora_common.admin_store)."""
    return sa.Table(
        name,
        metadata,
        sa.Column("namespace", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("uid", sa.Text, nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("spec", JSONB, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


pricing_rules = _config_table("pricing_rules")
# Platform-wide pricing settings an operator changes without a redeploy (PricingPolicy
# resources): today the rounding mode per currency. A currency is set by at most one policy.
pricing_policies = _config_table("pricing_policies")

# Every stored change, so a quote's recorded revisions can be looked up later (spec NULL means
# the rule was deleted at that revision).
rule_revisions = sa.Table(
    "rule_revisions",
    metadata,
    sa.Column("revision", sa.BigInteger, primary_key=True),
    sa.Column("namespace", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("spec", JSONB, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# The lock and the limits of a promotion code. Kept after its rule is deleted so quotes issued
# before the deletion can still be accepted and counts stay truthful.
promotions = sa.Table(
    "promotions",
    metadata,
    sa.Column("code", sa.Text, primary_key=True),  # lower case
    sa.Column("rule_namespace", sa.Text, nullable=False),
    sa.Column("rule_name", sa.Text, nullable=False),
    sa.Column("max_redemptions", sa.Integer, nullable=True),
    sa.Column("per_customer_limit", sa.Integer, nullable=True),
    sa.Column("first_purchase_only", sa.Boolean, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

quotes = sa.Table(
    "quotes",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("customer_id", sa.Text, nullable=True),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("codes", JSONB, nullable=False),  # applied promotion codes, lower case
    sa.Column("request", JSONB, nullable=False),
    sa.Column("result", JSONB, nullable=False),
    sa.Column("snapshot_revision", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("accept_response", JSONB, nullable=True),
    sa.CheckConstraint("status IN ('open', 'accepted')", name="status"),
    sa.CheckConstraint("total >= 0", name="total_not_negative"),
)
sa.Index(
    "ix_quotes_accepted_customer",
    quotes.c.customer_id,
    postgresql_where=quotes.c.status == "accepted",
)

redemptions = sa.Table(
    "redemptions",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("code", sa.Text, sa.ForeignKey("promotions.code"), nullable=False),
    sa.Column("quote_id", UUID(as_uuid=True), sa.ForeignKey("quotes.id"), nullable=False),
    sa.Column("customer_id", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # One redemption per code and quote, whatever the retries.
    sa.UniqueConstraint("code", "quote_id", name="uq_redemptions_code_quote"),
)
sa.Index("ix_redemptions_code_customer", redemptions.c.code, redemptions.c.customer_id)
