"""Routes of pending transactions: they call ``pending.service`` only."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body
from starlette.responses import Response

from azora_common.db import SessionDep
from azora_common.idempotency import IdempotencyKeyDep
from azora_ledger.http import WriteDep, idempotent
from azora_ledger.pending import service
from azora_ledger.schemas import PostPendingIn, TransactionOut, VoidPendingIn

router = APIRouter(tags=["transactions"])


@router.post(
    "/v1/transactions/{tx_id}/post",
    status_code=201,
    summary="Post a pending transaction, fully or partly (the rest is released)",
    responses={201: {"model": TransactionOut}},
)
async def post_pending(
    tx_id: uuid.UUID,
    session: SessionDep,
    _: WriteDep,
    key: IdempotencyKeyDep = None,
    body: Annotated[PostPendingIn | None, Body()] = None,
) -> Response:
    body = body or PostPendingIn()
    return await idempotent(
        session,
        key,
        f"POST /v1/transactions/{tx_id}/post",
        body.model_dump(mode="json"),
        lambda: service.post_pending(session, tx_id, body.amount),
    )


@router.post(
    "/v1/transactions/{tx_id}/void",
    summary="Void a pending transaction: the reserved amounts are released",
    responses={200: {"model": TransactionOut}},
)
async def void_pending(
    tx_id: uuid.UUID,
    session: SessionDep,
    _: WriteDep,
    key: IdempotencyKeyDep = None,
    body: Annotated[VoidPendingIn | None, Body()] = None,
) -> Response:
    return await idempotent(
        session,
        key,
        f"POST /v1/transactions/{tx_id}/void",
        {},
        lambda: service.void_pending(session, tx_id),
    )
