"""Routes of transactions and categories: they call ``transactions.service`` only.

``POST /v1/transactions`` and ``POST /v1/transactions:batch`` are plain routes (``FAST_ROUTES``,
placed first in the routing table and dispatched past the middleware stack by
``azora_common.fastpath.ServiceApp``): no dependency injection, orjson parsing, a precompiled
``TypeAdapter``. Each has this one handler; its OpenAPI operation is declared beside it
(``openapi_extra``) and the request models it refers to are published by ``app.py``
(``REQUEST_MODELS``).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response

from azora_common.db import Database, SessionDep, unit_of_work
from azora_common.fastpath import (
    FastRoute,
    authorize,
    plain_route_openapi,
    read_body,
    validate_request,
)
from azora_common.idempotency import json_response, run_idempotent
from azora_ledger.gate import WriteGate
from azora_ledger.http import Limit, ReadDep, SafeText, TransactionCursor, WriteDep, respond
from azora_ledger.schemas import (
    BatchIn,
    CategoryIn,
    CategoryList,
    CategoryOut,
    TransactionIn,
    TransactionList,
    TransactionOut,
)
from azora_ledger.transactions import service
from azora_ledger.transactions.coalescer import Coalescer
from azora_ledger.transactions.service import TransferRequest
from azora_ledger.work import Outcome

router = APIRouter(tags=["transactions"])

# The request models of the plain routes, for the OpenAPI document's components (app.py).
REQUEST_MODELS = (BatchIn, TransactionIn)
# ---- categories ----


@router.get(
    "/v1/categories", summary="The chart of categories", responses={200: {"model": CategoryList}}
)
async def list_categories(session: SessionDep, _: ReadDep) -> Response:
    return json_response(200, await service.list_categories(session))


@router.post(
    "/v1/categories",
    status_code=201,
    summary="Add a category",
    responses={
        201: {"model": CategoryOut},
        409: {"description": "conflict: a category with this code exists (`code`)"},
    },
)
async def create_category(body: CategoryIn, session: SessionDep, _: WriteDep) -> Response:
    return json_response(201, await service.create_category(session, body))


# ---- new transactions ----

_CHUNK = 100
TRANSACTION_IN: TypeAdapter[TransactionIn] = TypeAdapter(TransactionIn)
TRANSACTIONS_IN: TypeAdapter[list[TransactionIn]] = TypeAdapter(list[TransactionIn])
BATCH_IN: TypeAdapter[BatchIn] = TypeAdapter(BatchIn)


@router.post(
    "/v1/transactions:batch",
    summary="Up to 1,000 transactions: atomic (all or nothing) or independent (per item)",
    responses={422: {"description": "Validation Error"}},
    openapi_extra=plain_route_openapi(BatchIn.__name__),
)
async def create_batch(request: Request) -> Response:
    # Same order as FastAPI: body parsed (400 when malformed), then auth, then the header and
    # the body validated together. Without FastAPI's stdlib JSON parsing and dependency
    # solving: about a fifth of the service's CPU time for a 1,000-item batch.
    raw = await read_body(request)
    authorize(request, "ledger:write")
    body, key = await _validate_batch(request, raw)
    requests = [
        TransferRequest(t, path=f"/v1/transactions:batch#{i}")
        for i, t in enumerate(body.transactions)
    ]
    atomic = body.mode == "atomic"
    status = 201 if atomic else 200
    gate: WriteGate = request.app.state.write_gate
    if key is None:
        outcomes = await service.write_new(
            request.app.state.db.driver, gate, requests, atomic=atomic, source="batch"
        )
        # Committed and out of the gate: the next writer need not wait for this response.
        return json_response(status, batch_document(body.mode, outcomes))

    async def handler() -> tuple[int, Any]:
        outcomes = await service.write_in_session(
            session, requests, atomic=atomic, source="batch", turn=turn
        )
        return status, batch_document(body.mode, outcomes)

    # With a key the response is stored with the transactions, so it is built in the turn.
    request_body = body.model_dump(mode="json")
    db: Database = request.app.state.db
    async with gate.turn() as turn, unit_of_work(db) as session:
        return await run_idempotent(
            session,
            key=key,
            scope="POST /v1/transactions:batch",
            request_body=request_body,
            handler=handler,
            instance="/v1/transactions:batch",
        )


async def _validate_batch(request: Request, raw: Any) -> tuple[BatchIn, str | None]:
    """``validate_request(request, raw, BATCH_IN)``, yielding to the event loop every
    ``_CHUNK`` items: validating 1,000 items in one call holds the loop for ~8 ms, during which
    the writer holding the write gate cannot go on. Any error: the one-call validation runs
    again, so the problem lists exactly the errors it always listed."""
    items = raw.get("transactions") if isinstance(raw, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= 1000:
        return validate_request(request, raw, BATCH_IN)
    try:
        envelope, key = validate_request(request, {**raw, "transactions": items[:1]}, BATCH_IN)
        validated: list[TransactionIn] = []
        for start in range(0, len(items), _CHUNK):
            if start:
                await asyncio.sleep(0)
            validated += TRANSACTIONS_IN.validate_python(items[start : start + _CHUNK])
    except (RequestValidationError, ValidationError):
        return validate_request(request, raw, BATCH_IN)
    body = BatchIn.model_construct(
        envelope.model_fields_set, mode=envelope.mode, transactions=validated
    )
    return body, key


def batch_document(mode: str, outcomes: list[Outcome]) -> dict[str, Any]:
    return {
        "mode": mode,
        "results": [
            {"index": i, "status": o.status}
            | ({"transaction": o.body} if o.ok else {"error": o.body})
            for i, o in enumerate(outcomes)
        ],
    }


@router.post(
    "/v1/transactions",
    status_code=201,
    summary="Record a transaction (or a pending one); a known reference replays it (200)",
    responses={
        201: {"model": TransactionOut},
        200: {"model": TransactionOut},
        422: {"description": "Validation Error"},
    },
    openapi_extra=plain_route_openapi(TransactionIn.__name__),
)
async def create_transaction(request: Request) -> Response:
    # Same order as FastAPI: body parsed (400 when malformed), then auth, then the header and
    # the body validated together.
    raw = await read_body(request)
    authorize(request, "ledger:write")
    body, key = validate_request(request, raw, TRANSACTION_IN)
    transfer = TransferRequest(body, key=key)
    coalescer: Coalescer | None = request.app.state.coalescer
    if coalescer is not None:
        return respond(await coalescer.submit(transfer))
    [outcome] = await service.write_new(
        request.app.state.db.driver,
        request.app.state.write_gate,
        [transfer],
        atomic=False,
        source="request",
    )
    return respond(outcome)


FAST_ROUTES = [
    FastRoute("/v1/transactions", create_transaction, methods=["POST"]),
    FastRoute("/v1/transactions:batch", create_batch, methods=["POST"]),
]


# ---- reads ----


@router.get(
    "/v1/transactions",
    summary="List transactions, newest first",
    responses={200: {"model": TransactionList}},
)
async def list_transactions(
    session: SessionDep,
    _: ReadDep,
    reference: SafeText = None,
    account: SafeText = None,
    status: Literal["posted", "pending", "voided", "expired"] | None = None,
    cursor: TransactionCursor = None,
    limit: Limit = 100,
) -> Response:
    return json_response(
        200,
        await service.list_transactions(
            session,
            reference=reference,
            account=account,
            status=status,
            cursor=cursor,
            limit=limit,
        ),
    )


@router.get(
    "/v1/transactions/{tx_id}",
    summary="A transaction with its postings and linked (post/reversal) transactions",
    responses={200: {"model": TransactionOut}},
)
async def get_transaction(tx_id: uuid.UUID, session: SessionDep, _: ReadDep) -> Response:
    return json_response(200, await service.get_transaction(session, tx_id))
