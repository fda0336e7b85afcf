"""Resolving a pending transaction exactly once: post (full or partial; the rest is released),
void, or expire. Each locks the pending transaction's row first, then its accounts."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from azora_common.errors import InvalidField
from azora_ledger.accounts.service import lock_accounts_of
from azora_ledger.domain import Effect, PlannedPosting, PlannedTransaction, new_id, split_postings
from azora_ledger.errors import ExceedsRemaining, NotPending, PendingExpired, TransactionNotFound
from azora_ledger.metrics import PENDING_OUTSTANDING, TRANSACTIONS
from azora_ledger.pending import repository as repo
from azora_ledger.transactions import repository as transactions_repo
from azora_ledger.transactions.service import load_transaction
from azora_ledger.work import Outcome, in_session, now_utc

log = logging.getLogger("azora.ledger")


async def post_pending(session: AsyncSession, tx_id: uuid.UUID, amount: int | None) -> Outcome:
    return await in_session(session, lambda conn: post(conn, tx_id, amount))


async def void_pending(session: AsyncSession, tx_id: uuid.UUID) -> dict[str, Any]:
    return await in_session(session, lambda conn: release(conn, tx_id, "voided"))


async def _pending_for_update(conn: asyncpg.Connection, tx_id: uuid.UUID) -> asyncpg.Record:
    row = await transactions_repo.get_transaction(conn, tx_id, for_update=True)
    if row is None:
        raise TransactionNotFound(f"no transaction {tx_id}", id=str(tx_id))
    if row["kind"] != "pending":
        raise NotPending(f"transaction {tx_id} is a {row['kind']}, not a pending transaction")
    if row["status"] != "pending":
        raise NotPending(
            f"pending transaction {tx_id} is already {row['status']}", current_status=row["status"]
        )
    return row


async def post(conn: asyncpg.Connection, tx_id: uuid.UUID, amount: int | None) -> Outcome:
    now = now_utc()
    row = await _pending_for_update(conn, tx_id)
    if row["expires_at"] is not None and row["expires_at"] <= now:
        raise PendingExpired(f"pending transaction {tx_id} expired at {row['expires_at']}")
    postings = await transactions_repo.get_postings(conn, [tx_id])
    shares = [p["amount"] for p in postings]
    if amount is not None:
        currencies = {p["currency"] for p in postings}
        if len(currencies) > 1:
            raise InvalidField("amount", "a partial post needs a single-currency transaction")
        total = sum(p["amount"] for p in postings if p["direction"] == "debit")
        if amount > total:
            raise ExceedsRemaining(
                "amount", f"{amount} exceeds the pending amount {total}", pending_amount=total
            )
        shares = split_postings(amount, [(p["direction"], p["amount"]) for p in postings])
    ws = await lock_accounts_of(conn, postings)
    by_id = {a.id: a for a in ws.accounts.values()}
    effects: list[Effect] = []
    planned: list[PlannedPosting] = []
    for p, share in zip(postings, shares, strict=True):
        code = by_id[p["account_id"]].code
        # Release the whole reservation; post only the share (the rest goes back).
        effects.append(Effect(code, p["direction"], posted=0, pending=-p["amount"]))
        if share > 0:
            posting = PlannedPosting(
                len(planned), by_id[p["account_id"]], p["direction"], share, pending=False
            )
            planned.append(posting)
            effects.append(Effect(code, p["direction"], posted=share, pending=0, posting=posting))
    ws.apply(effects)
    tx = PlannedTransaction(
        id=new_id(),
        kind="post",
        status="posted",
        effective_at=now,
        recorded_at=now,
        postings=planned,
        category=row["category"],
        tags=list(row["tags"]),
        description=row["description"],
        metadata=orjson.loads(row["metadata_json"]),
        parent_id=tx_id,
    )
    await transactions_repo.write_planned(conn, [tx], ws)
    await repo.resolve_pending(conn, tx_id, "posted", now)
    TRANSACTIONS.labels("post", "ok").inc()
    return Outcome(201, tx.view())


async def release(conn: asyncpg.Connection, tx_id: uuid.UUID, status: str) -> dict[str, Any]:
    """Void or expire: give the reserved amounts back."""
    now = now_utc()
    await _pending_for_update(conn, tx_id)
    postings = await transactions_repo.get_postings(conn, [tx_id])
    ws = await lock_accounts_of(conn, postings)
    by_id = {a.id: a for a in ws.accounts.values()}
    ws.apply(
        [
            Effect(by_id[p["account_id"]].code, p["direction"], posted=0, pending=-p["amount"])
            for p in postings
        ]
    )
    await transactions_repo.write_accounts(conn, ws)
    await repo.resolve_pending(conn, tx_id, status, now)
    TRANSACTIONS.labels("void" if status == "voided" else "expire", "ok").inc()
    return await load_transaction(conn, tx_id)


async def expire_due(conn: asyncpg.Connection, limit: int = 100) -> int:
    ids = await repo.due_pending(conn, now_utc(), limit)
    for tx_id in ids:
        await release(conn, tx_id, "expired")
    return len(ids)


async def run_expirer(
    pool: asyncpg.Pool, interval_seconds: float, gauge_interval_seconds: float
) -> None:
    """Release pending transactions whose timeout passed; refresh the outstanding gauge."""
    last_gauge = 0.0
    loop = asyncio.get_running_loop()
    while True:
        try:
            async with pool.acquire() as conn:
                while True:
                    async with conn.transaction():
                        expired = await expire_due(conn)
                    if expired < 100:
                        break
                if loop.time() - last_gauge >= gauge_interval_seconds:
                    PENDING_OUTSTANDING.set(await repo.count_pending(conn))
                    last_gauge = loop.time()
        except asyncio.CancelledError:
            raise
        except Exception:  # keep expiring after a transient database error
            log.exception("expiring pending transactions failed")
        await asyncio.sleep(interval_seconds)
