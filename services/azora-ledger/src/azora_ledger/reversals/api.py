"""Routes of reversals: they call ``reversals.service`` only."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body
from starlette.responses import Response

from azora_common.db import SessionDep
from azora_common.idempotency import IdempotencyKeyDep
from azora_ledger.http import WriteDep, idempotent
from azora_ledger.reversals import service
from azora_ledger.schemas import ReverseIn, TransactionOut

router = APIRouter(tags=["transactions"])


@router.post(
    "/v1/transactions/{tx_id}/reverse",
    status_code=201,
    summary="Reverse a transaction, fully or partly (never more than what is left)",
    responses={201: {"model": TransactionOut}},
)
async def reverse_transaction(
    tx_id: uuid.UUID,
    session: SessionDep,
    _: WriteDep,
    key: IdempotencyKeyDep = None,
    body: Annotated[ReverseIn | None, Body()] = None,
) -> Response:
    body = body or ReverseIn()
    return await idempotent(
        session,
        key,
        f"POST /v1/transactions/{tx_id}/reverse",
        body.model_dump(mode="json"),
        lambda: service.reverse_transaction(
            session,
            tx_id,
            body.amount,
            description=body.description,
            reference=body.reference,
            effective_at=body.effective_at,
        ),
    )
