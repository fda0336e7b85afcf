"""SQLAlchemy tables of azora-orchestrator."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase

from azora_common.db import make_metadata


class Base(DeclarativeBase):
    metadata = make_metadata()


# Service-wide revision: every stored change (put or delete) takes the next value.
route_revision = sa.Sequence("route_revision_seq", metadata=Base.metadata)

routes = sa.Table(
    "routes",
    Base.metadata,
    sa.Column("namespace", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("uid", sa.Text, nullable=False),
    sa.Column("generation", sa.BigInteger, nullable=False),
    # The public model name is unique across routes; the index, not a Python check, enforces
    # it, so two concurrent PUTs for different routes cannot both claim one model.
    sa.Column("model", sa.Text, nullable=False, unique=True),
    sa.Column("spec", JSONB, nullable=False),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# Virtual keys: the description (admin API) and the hot enforcement state, apart.
key_revision = sa.Sequence("key_revision_seq", metadata=Base.metadata)

virtual_keys = sa.Table(
    "virtual_keys",
    Base.metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("secret_hash", sa.LargeBinary, nullable=False, unique=True),
    sa.Column("prefix", sa.Text, nullable=False),
    sa.Column("team", sa.Text, nullable=False),
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("models", ARRAY(sa.Text), nullable=False),
    sa.Column("requests_per_minute", sa.Integer),
    sa.Column("tokens_per_minute", sa.Integer),
    sa.Column("budget_amount", sa.BigInteger),
    sa.Column("budget_unit", sa.Text),
    sa.Column("budget_period_s", sa.BigInteger),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("metadata", JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("rotated_at", sa.DateTime(timezone=True)),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("revision", sa.BigInteger, nullable=False),
)

key_state = sa.Table(
    "key_state",
    Base.metadata,
    sa.Column("key_id", sa.Text, primary_key=True),
    sa.Column("stamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("rq_level", sa.Float, nullable=False),
    sa.Column("tk_level", sa.Float, nullable=False),
    sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("spent", sa.BigInteger, nullable=False),
    sa.Column("reserved", sa.BigInteger, nullable=False),
    sa.Column("total_spent", sa.BigInteger, nullable=False),
)
