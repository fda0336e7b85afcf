"""SQLAlchemy tables of azora-ledger."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from azora_common.db import make_metadata


class Base(DeclarativeBase):
    metadata = make_metadata()
