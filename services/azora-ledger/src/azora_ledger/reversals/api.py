"""Routes of reversals: they call ``reversals.service`` only."""

from __future__ import annotations

from fastapi import APIRouter

from azora_ledger.http import transaction_action
from azora_ledger.reversals import service
from azora_ledger.schemas import ReverseIn

router = APIRouter(tags=["transactions"])

transaction_action(
    router,
    "reverse",
    ReverseIn,
    lambda session, tx_id, body: service.reverse_transaction(
        session,
        tx_id,
        body.amount,
        description=body.description,
        reference=body.reference,
        effective_at=body.effective_at,
    ),
    name="reverse_transaction",
    summary="Reverse a transaction, fully or partly (never more than what is left)",
    status_code=201,
)
