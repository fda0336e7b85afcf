"""Routes of pending transactions: they call ``pending.service`` only."""

from __future__ import annotations

from fastapi import APIRouter

from azora_ledger.http import transaction_action
from azora_ledger.pending import service
from azora_ledger.schemas import PostPendingIn, VoidPendingIn

router = APIRouter(tags=["transactions"])

transaction_action(
    router,
    "post",
    PostPendingIn,
    lambda session, tx_id, body: service.post_pending(session, tx_id, body.amount),
    name="post_pending",
    summary="Post a pending transaction, fully or partly (the rest is released)",
    status_code=201,
)
# The body has no fields (an empty object or none): the request stored under a key is {}.
transaction_action(
    router,
    "void",
    VoidPendingIn,
    lambda session, tx_id, _: service.void_pending(session, tx_id),
    name="void_pending",
    summary="Void a pending transaction: the reserved amounts are released",
)
