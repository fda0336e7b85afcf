"""Routes of accounts: they call ``accounts.service`` only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from azora_common.db import SessionDep
from azora_common.idempotency import IdempotencyKeyDep, json_response, run_idempotent
from azora_ledger.accounts import service
from azora_ledger.http import (
    AccountCursor,
    CodePath,
    Instant,
    Limit,
    ReadDep,
    SafeText,
    StatementCursor,
    WriteDep,
    utc,
)
from azora_ledger.schemas import AccountIn, AccountList, AccountOut, StatementOut

router = APIRouter(tags=["accounts"])


@router.post(
    "/v1/accounts",
    status_code=201,
    summary="Open an account (409 account-exists when the code is taken)",
    responses={
        201: {"model": AccountOut},
        409: {"description": "account-exists: the code is taken (`code`, and `account` as stored)"},
    },
)
async def create_account(
    body: AccountIn, session: SessionDep, _: WriteDep, key: IdempotencyKeyDep = None
) -> Response:
    async def handler() -> tuple[int, Any]:
        return 201, await service.create_account(session, body)

    return await run_idempotent(
        session,
        key=key,
        scope="POST /v1/accounts",
        request_body=body.model_dump(mode="json"),
        handler=handler,
    )


@router.get(
    "/v1/accounts", summary="List accounts by code", responses={200: {"model": AccountList}}
)
async def list_accounts(
    session: SessionDep,
    _: ReadDep,
    prefix: SafeText = None,
    cursor: AccountCursor = None,
    limit: Limit = 100,
) -> Response:
    return json_response(200, await service.list_accounts(session, prefix, cursor, limit))


@router.get(
    "/v1/accounts/{code}",
    summary="An account with its balances",
    responses={200: {"model": AccountOut}, 404: {"description": "account-not-found"}},
)
async def get_account(code: CodePath, session: SessionDep, _: ReadDep) -> Response:
    return json_response(200, await service.get_account(session, code))


@router.post(
    "/v1/accounts/{code}/close",
    summary="Close an account (it must be empty); closed accounts take no new postings",
)
async def close_account(
    code: CodePath,
    session: SessionDep,
    _: WriteDep,
    key: IdempotencyKeyDep = None,
) -> Response:
    async def handler() -> tuple[int, Any]:
        return 200, await service.close_account(session, code)

    return await run_idempotent(
        session, key=key, scope=f"POST /v1/accounts/{code}/close", request_body={}, handler=handler
    )


@router.get(
    "/v1/accounts/{code}/balances",
    summary="Posted, pending and available balances, or posted balances as of a time",
)
async def account_balances(
    code: CodePath, session: SessionDep, _: ReadDep, as_of: Instant = None
) -> Response:
    return json_response(200, await service.balances(session, code, utc(as_of, "as_of")))


@router.get(
    "/v1/accounts/{code}/statement",
    summary="Posted entries in recording order, each with the running balance after it",
    responses={200: {"model": StatementOut}, 404: {"description": "account-not-found"}},
)
async def account_statement(
    code: CodePath,
    session: SessionDep,
    _: ReadDep,
    cursor: StatementCursor = None,
    limit: Limit = 100,
) -> Response:
    return json_response(200, await service.statement(session, code, cursor, limit))
