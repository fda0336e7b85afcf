"""SQLAlchemy tables of azora-orchestrator."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
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
