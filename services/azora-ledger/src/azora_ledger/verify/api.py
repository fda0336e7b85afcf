"""The verification route (admin token): it calls ``verify.service`` only."""

from __future__ import annotations

import asyncpg
from fastapi import APIRouter, Request
from starlette.responses import Response

from azora_common.auth import AdminDep
from azora_common.idempotency import json_response
from azora_ledger.verify import service

router = APIRouter(tags=["admin"])


@router.post(
    "/admin/v1/verify",
    summary="Recompute all balances from postings and check every invariant",
)
async def admin_verify(request: Request, _: AdminDep) -> Response:
    pool: asyncpg.Pool = request.app.state.ledger_pool
    result = await service.verify_pooled(pool)
    return json_response(200 if result["ok"] else 409, result)
