"""HTTP routes of azora-orchestrator."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
