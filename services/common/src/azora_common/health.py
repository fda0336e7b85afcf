"""Liveness and readiness.

``/healthz`` says the process serves HTTP. ``/readyz`` says it can do its job: the database
answers and its schema is at the migration head this code expects.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from starlette.responses import Response

from azora_common.db import Database
from azora_common.idempotency import json_response

router = APIRouter(tags=["health"])

READY_TIMEOUT_S = 2.0


async def check_database(db: Database, expected_head: str | None) -> dict[str, Any]:
    try:
        async with asyncio.timeout(READY_TIMEOUT_S), db.engine.connect() as conn:
            version = (
                await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            ).scalar_one_or_none()
    except Exception as exc:  # any failure to reach the database means "not ready"
        return {"ok": False, "reason": f"database unreachable: {type(exc).__name__}"}
    if expected_head is not None and version != expected_head:
        return {"ok": False, "reason": f"schema at {version}, expected {expected_head}"}
    return {"ok": True, "schema": version}


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database reachable and migrations at head")
async def readyz(request: Request) -> Response:
    db: Database = request.app.state.db
    checks: dict[str, Any] = {"database": await check_database(db, request.app.state.expected_head)}
    for name, probe in getattr(request.app.state, "readiness_probes", {}).items():
        checks[name] = await probe()
    ready = all(c.get("ok") for c in checks.values())
    return json_response(200 if ready else 503, {"ready": ready, "checks": checks})
