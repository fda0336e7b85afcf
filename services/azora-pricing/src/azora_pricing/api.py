"""HTTP routes of azora-pricing."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
