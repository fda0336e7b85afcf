"""SQLAlchemy tables of azora-ledger (the schema itself is in migrations/versions/0002).

Hot paths speak SQL through asyncpg in ``repository.py``; these declarations document the
shape for Alembic and for ad-hoc tooling.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase

from azora_common.db import make_metadata


class Base(DeclarativeBase):
    metadata = make_metadata()


accounts = sa.Table(
    "accounts",
    Base.metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("code", sa.Text, nullable=False, unique=True),
    sa.Column("name", sa.Text),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("scale", sa.SmallInteger, nullable=False),
    sa.Column("debits_must_not_exceed_credits", sa.Boolean, nullable=False),
    sa.Column("credits_must_not_exceed_debits", sa.Boolean, nullable=False),
    sa.Column("overdraft_limit", sa.BigInteger),
    sa.Column("posted_debits", sa.BigInteger, nullable=False),
    sa.Column("posted_credits", sa.BigInteger, nullable=False),
    sa.Column("pending_debits", sa.BigInteger, nullable=False),
    sa.Column("pending_credits", sa.BigInteger, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("closed", sa.Boolean, nullable=False),
    sa.Column("metadata", JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

categories = sa.Table(
    "categories",
    Base.metadata,
    sa.Column("code", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

transactions = sa.Table(
    "transactions",
    Base.metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reference", sa.Text, unique=True),
    sa.Column("category", sa.Text, sa.ForeignKey("categories.code")),
    sa.Column("tags", ARRAY(sa.Text), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("metadata", JSONB, nullable=False),
    sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
    sa.Column("parent_id", UUID(as_uuid=True), sa.ForeignKey("transactions.id")),
    sa.Column("posting_count", sa.SmallInteger, nullable=False),
    sa.Column("request_hash", sa.Text),
    sa.Column("request", JSONB),
)

postings = sa.Table(
    "postings",
    Base.metadata,
    sa.Column("transaction_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("seq", sa.SmallInteger, primary_key=True),
    sa.Column("account_id", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("direction", sa.Text, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("pending", sa.Boolean, nullable=False),
    sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("account_version", sa.BigInteger, nullable=False),
    sa.Column("balance_debits", sa.BigInteger),
    sa.Column("balance_credits", sa.BigInteger),
)

account_daily_volumes = sa.Table(
    "account_daily_volumes",
    Base.metadata,
    sa.Column("account_id", sa.BigInteger, primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("debits", sa.BigInteger, nullable=False),
    sa.Column("credits", sa.BigInteger, nullable=False),
)
