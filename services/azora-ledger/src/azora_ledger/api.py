"""HTTP routes of azora-ledger."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import Response

from azora_common.auth import AdminDep, Principal, require_scope
from azora_common.db import Database, SessionDep, unit_of_work
from azora_common.errors import Conflict, InvalidField, problem_response
from azora_common.fastpath import FastRoute, authorize, read_body, validate_request
from azora_common.idempotency import (
    REPLAYED_HEADER,
    IdempotencyKeyDep,
    json_response,
    run_idempotent,
)
from azora_ledger import reports, service
from azora_ledger import repository as repo
from azora_ledger.coalescer import Coalescer
from azora_ledger.gate import WriteGate
from azora_ledger.schemas import (
    AccountIn,
    AccountOut,
    BatchIn,
    CategoryIn,
    PostPendingIn,
    ReverseIn,
    TransactionIn,
    TransactionOut,
    VoidPendingIn,
)
from azora_ledger.service import Outcome, TransferRequest, with_retries
from azora_ledger.verify import verify

router = APIRouter()

ReadDep = Annotated[Principal, require_scope("ledger:read")]
WriteDep = Annotated[Principal, require_scope("ledger:write")]
CodePath = Annotated[
    str, Path(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.@-]+(:[A-Za-z0-9_.@-]+)*$")
]
SafeText = Annotated[str | None, Query(max_length=255, pattern=r"^[^\x00]*$")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Instant = Annotated[AwareDatetime | None, Query(description="RFC 3339 with offset")]


def respond(outcome: Outcome) -> Response:
    headers = {REPLAYED_HEADER: "true"} if outcome.replayed else None
    if outcome.ok:
        return json_response(outcome.status, outcome.body, headers)
    return problem_response(outcome.body, headers)


def utc(value: datetime | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        # 0001-01-01T00:00:00+01:00 is valid RFC 3339 but before the first UTC instant Python
        # can represent (found by schemathesis): the client's error, not a 500.
        raise InvalidField(f"query.{field}", "out of range once converted to UTC") from exc


def wants_csv(request: Request) -> bool:
    return "text/csv" in request.headers.get("accept", "")


def report_response(request: Request, report: dict[str, Any]) -> Response:
    if wants_csv(request):
        return Response(reports.to_csv(report["rows"]), media_type="text/csv; charset=utf-8")
    return json_response(200, report)


# ---- accounts ----


@router.post(
    "/v1/accounts",
    status_code=201,
    tags=["accounts"],
    summary="Open an account (409 account-exists when the code is taken)",
    responses={201: {"model": AccountOut}},
)
async def create_account(
    body: AccountIn, session: SessionDep, _: WriteDep, key: IdempotencyKeyDep = None
) -> Response:
    async def handler() -> tuple[int, Any]:
        conn = await repo.driver_connection(session)
        return 201, await with_retries(conn, lambda: service.create_account(conn, body))

    return await run_idempotent(
        session,
        key=key,
        scope="POST /v1/accounts",
        request_body=body.model_dump(mode="json"),
        handler=handler,
    )


@router.get("/v1/accounts", tags=["accounts"], summary="List accounts by code")
async def list_accounts(
    session: SessionDep,
    _: ReadDep,
    prefix: SafeText = None,
    cursor: SafeText = None,
    limit: Limit = 100,
) -> Response:
    conn = await repo.driver_connection(session)
    rows = await repo.list_accounts(conn, prefix, cursor, limit + 1)
    items = [service.account_view(r) for r in rows[:limit]]
    return json_response(
        200, {"items": items, "next_cursor": items[-1]["code"] if len(rows) > limit else None}
    )


@router.get(
    "/v1/accounts/{code}",
    tags=["accounts"],
    summary="An account with its balances",
    responses={200: {"model": AccountOut}},
)
async def get_account(code: CodePath, session: SessionDep, _: ReadDep) -> Response:
    conn = await repo.driver_connection(session)
    return json_response(200, await service.get_account(conn, code))


@router.post(
    "/v1/accounts/{code}/close",
    tags=["accounts"],
    summary="Close an account (it must be empty); closed accounts take no new postings",
)
async def close_account(
    code: CodePath,
    session: SessionDep,
    _: WriteDep,
    key: IdempotencyKeyDep = None,
) -> Response:
    async def handler() -> tuple[int, Any]:
        conn = await repo.driver_connection(session)
        return 200, await with_retries(conn, lambda: service.close_account(conn, code))

    return await run_idempotent(
        session, key=key, scope=f"POST /v1/accounts/{code}/close", request_body={}, handler=handler
    )


@router.get(
    "/v1/accounts/{code}/balances",
    tags=["accounts"],
    summary="Posted, pending and available balances, or posted balances as of a time",
)
async def account_balances(
    code: CodePath, session: SessionDep, _: ReadDep, as_of: Instant = None
) -> Response:
    conn = await repo.driver_connection(session)
    return json_response(200, await service.balances(conn, code, utc(as_of, "as_of")))


@router.get(
    "/v1/accounts/{code}/statement",
    tags=["accounts"],
    summary="Posted entries in recording order, each with the running balance after it",
)
async def account_statement(
    code: CodePath,
    session: SessionDep,
    _: ReadDep,
    cursor: SafeText = None,
    limit: Limit = 100,
) -> Response:
    conn = await repo.driver_connection(session)
    return json_response(200, await service.statement(conn, code, cursor, limit))


# ---- categories ----


@router.get("/v1/categories", tags=["transactions"], summary="The chart of categories")
async def list_categories(session: SessionDep, _: ReadDep) -> Response:
    conn = await repo.driver_connection(session)
    rows = await repo.list_categories(conn)
    return json_response(200, {"items": [dict(r) for r in rows]})


@router.post("/v1/categories", status_code=201, tags=["transactions"], summary="Add a category")
async def create_category(body: CategoryIn, session: SessionDep, _: WriteDep) -> Response:
    conn = await repo.driver_connection(session)
    if not await repo.insert_category(conn, body.code, body.name, body.description):
        raise Conflict(f"category {body.code} already exists", code=body.code)
    return json_response(201, body.model_dump(mode="json"))


# ---- transactions ----


@router.post(
    "/v1/transactions:batch",
    tags=["transactions"],
    summary="Up to 1,000 transactions: atomic (all or nothing) or independent (per item)",
)
async def create_batch(
    body: BatchIn, request: Request, _: WriteDep, key: IdempotencyKeyDep = None
) -> Response:
    # Documents the endpoint (OpenAPI); requests are answered by create_batch_fast.
    return await _create_batch(request, body, key)


async def create_batch_fast(request: Request) -> Response:
    """``POST /v1/transactions:batch`` as a plain route (see fastpath.py): same answers as the
    FastAPI route above, without its stdlib JSON parsing and dependency solving (about a fifth
    of the service's CPU time for a 1,000-item batch)."""
    raw = await read_body(request)
    authorize(request, "ledger:write")
    body, key = await _validate_batch(request, raw)
    return await _create_batch(request, body, key)


_CHUNK = 100
TRANSACTIONS_IN: TypeAdapter[list[TransactionIn]] = TypeAdapter(list[TransactionIn])


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


async def _create_batch(request: Request, body: BatchIn, key: str | None) -> Response:
    db: Database = request.app.state.db
    requests = [
        TransferRequest(t, path=f"/v1/transactions:batch#{i}")
        for i, t in enumerate(body.transactions)
    ]
    atomic = body.mode == "atomic"
    status = 201 if atomic else 200
    if key is None:
        outcomes = await _write_new(request, requests, atomic=atomic, source="batch")
        # Committed and out of the gate: the next writer need not wait for this response.
        return json_response(status, batch_document(body.mode, outcomes))

    async def handler() -> tuple[int, Any]:
        conn = await repo.driver_connection(session)
        outcomes = await with_retries(
            conn,
            lambda: service.create_transactions(
                conn, requests, atomic=atomic, source="batch", turn=turn
            ),
        )
        return status, batch_document(body.mode, outcomes)

    # With a key the response is stored with the transactions, so it is built in the turn.
    request_body = body.model_dump(mode="json")
    gate: WriteGate = request.app.state.write_gate
    async with gate.turn() as turn, unit_of_work(db) as session:
        return await run_idempotent(
            session,
            key=key,
            scope="POST /v1/transactions:batch",
            request_body=request_body,
            handler=handler,
        )


def batch_document(mode: str, outcomes: list[Outcome]) -> dict[str, Any]:
    return {
        "mode": mode,
        "results": [
            {"index": i, "status": o.status}
            | ({"transaction": o.body} if o.ok else {"error": o.body})
            for i, o in enumerate(outcomes)
        ],
    }


TRANSACTION_IN: TypeAdapter[TransactionIn] = TypeAdapter(TransactionIn)
BATCH_IN: TypeAdapter[BatchIn] = TypeAdapter(BatchIn)
_KEY_DOC = "Makes the request safe to retry: same key and body replay the first response."
# The endpoint takes the raw request (see fastpath.py), so FastAPI cannot infer its contract;
# this is what it generated for the dependency-based signature, kept verbatim.
TRANSACTION_OPENAPI: dict[str, Any] = {
    "security": [{"HTTPBearer": []}],
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {
                "anyOf": [{"type": "string", "minLength": 1, "maxLength": 255}, {"type": "null"}],
                "description": _KEY_DOC,
                "title": "Idempotency-Key",
            },
            "description": _KEY_DOC,
        }
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TransactionIn"}}},
    },
}


@router.post(
    "/v1/transactions",
    status_code=201,
    tags=["transactions"],
    summary="Record a transaction (or a pending one); a known reference replays it (200)",
    responses={
        201: {"model": TransactionOut},
        200: {"model": TransactionOut},
        422: {"description": "Validation Error"},
    },
    openapi_extra=TRANSACTION_OPENAPI,
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
    [outcome] = await _write_new(request, [transfer], atomic=False, source="request")
    return respond(outcome)


async def _write_new(
    request: Request, requests: list[TransferRequest], *, atomic: bool, source: str
) -> list[Outcome]:
    """New transactions as one unit of work, committed before this returns (and before the
    write turn is given back: the transaction block ends first)."""
    db: Database = request.app.state.db
    gate: WriteGate = request.app.state.write_gate
    bind = db.sessionmaker.kw.get("bind")
    if isinstance(bind, AsyncEngine):
        # A pooled connection, no ORM session: the transaction is asyncpg's own (BEGIN ...
        # COMMIT, no savepoint to release inside the write turn).
        async with bind.connect() as pooled:
            conn = (await pooled.get_raw_connection()).driver_connection
            async with gate.turn() as turn:
                return await with_retries(
                    conn,
                    lambda: service.create_transactions(
                        conn, requests, atomic=atomic, source=source, turn=turn
                    ),
                )
    # Sessions bound to something else (tests join them to one outer transaction).
    async with gate.turn() as turn, unit_of_work(db) as session:
        conn = await repo.driver_connection(session)
        return await with_retries(
            conn,
            lambda: service.create_transactions(
                conn, requests, atomic=atomic, source=source, turn=turn
            ),
        )


FAST_ROUTES = [
    FastRoute("/v1/transactions", create_transaction, methods=["POST"]),
    FastRoute("/v1/transactions:batch", create_batch_fast, methods=["POST"]),
]


@router.get("/v1/transactions", tags=["transactions"], summary="List transactions, newest first")
async def list_transactions(
    session: SessionDep,
    _: ReadDep,
    reference: SafeText = None,
    account: SafeText = None,
    status: Literal["posted", "pending", "voided", "expired"] | None = None,
    cursor: SafeText = None,
    limit: Limit = 100,
) -> Response:
    conn = await repo.driver_connection(session)
    return json_response(
        200,
        await service.list_transactions(
            conn, reference=reference, account=account, status=status, cursor=cursor, limit=limit
        ),
    )


@router.get(
    "/v1/transactions/{tx_id}",
    tags=["transactions"],
    summary="A transaction with its postings and linked (post/reversal) transactions",
    responses={200: {"model": TransactionOut}},
)
async def get_transaction(tx_id: uuid.UUID, session: SessionDep, _: ReadDep) -> Response:
    conn = await repo.driver_connection(session)
    return json_response(200, await service.load_transaction(conn, tx_id))


async def _idempotent_outcome(
    session: SessionDep, key: str | None, scope: str, body: Any, work: Any
) -> Response:
    async def handler() -> tuple[int, Any]:
        conn = await repo.driver_connection(session)
        result = await with_retries(conn, lambda: work(conn))
        if isinstance(result, Outcome):
            return result.status, result.body
        return 200, result

    return await run_idempotent(session, key=key, scope=scope, request_body=body, handler=handler)


@router.post(
    "/v1/transactions/{tx_id}/post",
    status_code=201,
    tags=["transactions"],
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
    return await _idempotent_outcome(
        session,
        key,
        f"POST /v1/transactions/{tx_id}/post",
        body.model_dump(mode="json"),
        lambda conn: service.post_pending(conn, tx_id, body.amount),
    )


@router.post(
    "/v1/transactions/{tx_id}/void",
    tags=["transactions"],
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
    return await _idempotent_outcome(
        session,
        key,
        f"POST /v1/transactions/{tx_id}/void",
        {},
        lambda conn: service.release_pending(conn, tx_id, "voided"),
    )


@router.post(
    "/v1/transactions/{tx_id}/reverse",
    status_code=201,
    tags=["transactions"],
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
    return await _idempotent_outcome(
        session,
        key,
        f"POST /v1/transactions/{tx_id}/reverse",
        body.model_dump(mode="json"),
        lambda conn: service.reverse(
            conn,
            tx_id,
            body.amount,
            description=body.description,
            reference=body.reference,
            effective_at=body.effective_at,
        ),
    )


# ---- reports ----

CsvNote = "JSON by default; `Accept: text/csv` returns the rows as CSV."
Currency = Annotated[str | None, Query(pattern=r"^[A-Z][A-Z0-9_]{2,15}$")]


@router.get(
    "/v1/reports/trial-balance", tags=["reports"], summary="Trial balance", description=CsvNote
)
async def trial_balance(
    request: Request,
    session: SessionDep,
    _: ReadDep,
    as_of: Instant = None,
    currency: Currency = None,
) -> Response:
    conn = await repo.driver_connection(session)
    return report_response(
        request, await reports.trial_balance(conn, utc(as_of, "as_of"), currency)
    )


@router.get(
    "/v1/reports/balance-sheet", tags=["reports"], summary="Balance sheet", description=CsvNote
)
async def balance_sheet(
    request: Request,
    session: SessionDep,
    _: ReadDep,
    as_of: Instant = None,
    currency: Currency = None,
) -> Response:
    conn = await repo.driver_connection(session)
    return report_response(
        request, await reports.balance_sheet(conn, utc(as_of, "as_of"), currency)
    )


@router.get(
    "/v1/reports/income-statement",
    tags=["reports"],
    summary="Income statement for the period (from, to]",
    description=CsvNote,
)
async def income_statement(
    request: Request,
    session: SessionDep,
    _: ReadDep,
    start: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    end: Annotated[AwareDatetime | None, Query(alias="to")] = None,
    currency: Currency = None,
) -> Response:
    conn = await repo.driver_connection(session)
    return report_response(
        request, await reports.income_statement(conn, utc(start, "from"), utc(end, "to"), currency)
    )


@router.get(
    "/v1/reports/totals",
    tags=["reports"],
    summary="Posted volume by category or tag for the period [from, to)",
    description=CsvNote,
)
async def totals(
    request: Request,
    session: SessionDep,
    _: ReadDep,
    group_by: Literal["category", "tag"] = "category",
    start: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    end: Annotated[AwareDatetime | None, Query(alias="to")] = None,
) -> Response:
    conn = await repo.driver_connection(session)
    return report_response(
        request, await reports.totals(conn, group_by, utc(start, "from"), utc(end, "to"))
    )


# ---- admin ----


@router.post(
    "/admin/v1/verify",
    tags=["admin"],
    summary="Recompute all balances from postings and check every invariant",
)
async def admin_verify(request: Request, _: AdminDep) -> Response:
    pool: asyncpg.Pool = request.app.state.ledger_pool
    async with pool.acquire() as conn:
        result = await verify(conn)
    return json_response(200 if result["ok"] else 409, result)
