"""Accounts: open (idempotent by code), close when empty, balances and statements.

Endpoints hand in their session; writes run in a retried subtransaction of it (``in_session``).
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from azora_common.errors import InvalidField
from azora_ledger.accounts import repository as repo
from azora_ledger.currencies import resolve_scale
from azora_ledger.domain import Workspace
from azora_ledger.errors import AccountExists, AccountNotEmpty, AccountNotFound, InvalidCurrency
from azora_ledger.metrics import LOCK_WAIT
from azora_ledger.repository import driver_connection
from azora_ledger.schemas import AccountIn
from azora_ledger.work import in_session, now_utc


def account_view(row: asyncpg.Record) -> dict[str, Any]:
    state = repo.account_state(row)
    return {
        "id": row["id"],
        "code": row["code"],
        "name": row["name"],
        "type": row["type"],
        "currency": row["currency"],
        "scale": row["scale"],
        "flags": {
            "debits_must_not_exceed_credits": row["debits_must_not_exceed_credits"],
            "credits_must_not_exceed_debits": row["credits_must_not_exceed_debits"],
            "overdraft_limit": row["overdraft_limit"],
        },
        "closed": row["closed"],
        "metadata": orjson.loads(row["metadata_json"]),
        "version": row["version"],
        "created_at": row["created_at"],
        "balances": state.balances(),
    }


async def create_account(session: AsyncSession, body: AccountIn) -> dict[str, Any]:
    return await in_session(session, lambda conn: _create_account(conn, body))


async def _create_account(conn: asyncpg.Connection, body: AccountIn) -> dict[str, Any]:
    try:
        scale = resolve_scale(body.currency, body.scale)
    except ValueError as exc:
        raise InvalidCurrency("currency", str(exc)) from exc
    await repo.lock_code(conn, body.code)
    row = await repo.insert_account(
        conn,
        {
            "code": body.code,
            "name": body.name,
            "type": body.type,
            "currency": body.currency,
            "scale": scale,
            "debits_must_not_exceed_credits": body.flags.debits_must_not_exceed_credits,
            "credits_must_not_exceed_debits": body.flags.credits_must_not_exceed_debits,
            "overdraft_limit": body.flags.overdraft_limit,
            "metadata": body.metadata,
            "created_at": now_utc(),
        },
    )
    if row is None:
        existing = await repo.get_account(conn, body.code)
        raise AccountExists(
            f"account {body.code} already exists",
            code=body.code,
            account=account_view(existing) if existing else None,
        )
    return account_view(row)


async def list_accounts(
    session: AsyncSession, prefix: str | None, cursor: str | None, limit: int
) -> dict[str, Any]:
    conn = await driver_connection(session)
    rows = await repo.list_accounts(conn, prefix, cursor, limit + 1)
    items = [account_view(r) for r in rows[:limit]]
    return {"items": items, "next_cursor": items[-1]["code"] if len(rows) > limit else None}


async def get_account(session: AsyncSession, code: str) -> dict[str, Any]:
    return await _get_account(await driver_connection(session), code)


async def _get_account(conn: asyncpg.Connection, code: str) -> dict[str, Any]:
    row = await repo.get_account(conn, code)
    if row is None:
        raise AccountNotFound(f"no account {code}", code=code)
    return account_view(row)


async def close_account(session: AsyncSession, code: str) -> dict[str, Any]:
    return await in_session(session, lambda conn: _close_account(conn, code))


async def _close_account(conn: asyncpg.Connection, code: str) -> dict[str, Any]:
    states = await repo.lock_accounts(conn, [code])
    state = states.get(code)
    if state is None:
        raise AccountNotFound(f"no account {code}", code=code)
    if state.posted_debits != state.posted_credits or state.pending_debits or state.pending_credits:
        raise AccountNotEmpty(
            f"account {code} has a balance or pending amounts; move them first",
            code=code,
            balances=state.balances(),
        )
    if not state.closed:
        await repo.close_account(conn, state.id)
    return await _get_account(conn, code)


async def balances(session: AsyncSession, code: str, as_of: datetime | None) -> dict[str, Any]:
    conn = await driver_connection(session)
    row = await repo.get_account(conn, code)
    if row is None:
        raise AccountNotFound(f"no account {code}", code=code)
    state = repo.account_state(row)
    if as_of is None:
        return {"account": code, "currency": state.currency, "version": state.version} | (
            state.balances()
        )
    debits, credits = (await repo.balance_as_of(conn, [state.id], as_of))[state.id]
    net = debits - credits if state.debit_normal else credits - debits
    return {
        "account": code,
        "currency": state.currency,
        "as_of": as_of,
        "posted": {"debits": debits, "credits": credits, "balance": net},
    }


async def statement(
    session: AsyncSession, code: str, cursor: str | None, limit: int
) -> dict[str, Any]:
    conn = await driver_connection(session)
    row = await repo.get_account(conn, code)
    if row is None:
        raise AccountNotFound(f"no account {code}", code=code)
    state = repo.account_state(row)
    after = decode_cursor(cursor) if cursor else None
    rows = await repo.statement(conn, state.id, after, limit + 1)
    items = []
    for r in rows[:limit]:
        bal = r["balance_debits"] - r["balance_credits"]
        items.append(
            {
                "transaction_id": str(r["transaction_id"]),
                "kind": r["kind"],
                "reference": r["reference"],
                "description": r["description"],
                "category": r["category"],
                "direction": r["direction"],
                "amount": r["amount"],
                "currency": r["currency"],
                "effective_at": r["effective_at"],
                "recorded_at": r["recorded_at"],
                "account_version": r["account_version"],
                "balance": {
                    "debits": r["balance_debits"],
                    "credits": r["balance_credits"],
                    "balance": bal if state.debit_normal else -bal,
                },
            }
        )
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = f"{last['account_version']}.{last['transaction_id']}.{last['seq']}"
    return {"account": code, "currency": state.currency, "items": items, "next_cursor": next_cursor}


def decode_cursor(cursor: str) -> tuple[int, str, int]:
    try:
        version, tx, seq = cursor.split(".")
        return int(version), str(uuid.UUID(tx)), int(seq)
    except ValueError as exc:
        raise InvalidField("query.cursor", "not a cursor this API returned") from exc


async def lock_accounts_of(conn: asyncpg.Connection, postings: list[asyncpg.Record]) -> Workspace:
    """Lock the accounts of an existing transaction's postings (post, void, expire, reverse)."""
    started = time.perf_counter()
    ws = Workspace(
        await repo.lock_accounts_by_id(conn, sorted({p["account_id"] for p in postings}))
    )
    LOCK_WAIT.observe(time.perf_counter() - started)
    return ws
