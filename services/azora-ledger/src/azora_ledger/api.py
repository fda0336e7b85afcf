"""HTTP routes of azora-ledger."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
