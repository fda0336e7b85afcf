"""Reversing a posted transaction, fully or partly, never beyond what is left: the original's
row is locked first, so two reversals of it cannot both spend the remainder."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from azora_common.errors import InvalidField
from azora_ledger.accounts.service import lock_accounts_of
from azora_ledger.domain import Effect, PlannedPosting, PlannedTransaction, new_id, split_postings
from azora_ledger.errors import (
    AlreadyReversed,
    ExceedsRemaining,
    NotReversible,
    TransactionNotFound,
)
from azora_ledger.metrics import TRANSACTIONS
from azora_ledger.reversals import repository as repo
from azora_ledger.transactions import repository as transactions_repo
from azora_ledger.transactions.service import load_transaction
from azora_ledger.work import Outcome, in_session, now_utc


async def reverse_transaction(
    session: AsyncSession,
    tx_id: uuid.UUID,
    amount: int | None,
    *,
    description: str | None = None,
    reference: str | None = None,
    effective_at: datetime | None = None,
) -> Outcome:
    return await in_session(
        session,
        lambda conn: reverse(
            conn,
            tx_id,
            amount,
            description=description,
            reference=reference,
            effective_at=effective_at,
        ),
    )


async def reverse(
    conn: asyncpg.Connection,
    tx_id: uuid.UUID,
    amount: int | None,
    *,
    description: str | None = None,
    reference: str | None = None,
    effective_at: datetime | None = None,
) -> Outcome:
    now = now_utc()
    # Locking the original serializes reversals of it: "what is left" cannot be spent twice.
    row = await transactions_repo.get_transaction(conn, tx_id, for_update=True)
    if row is None:
        raise TransactionNotFound(f"no transaction {tx_id}", id=str(tx_id))
    if row["kind"] == "pending":
        raise NotReversible(
            "a pending transaction is voided, not reversed; reverse the post transaction instead",
            kind="pending",
            current_status=row["status"],
        )
    postings = await transactions_repo.get_postings(conn, [tx_id])
    groups: dict[tuple[int, str], int] = {}
    for p in postings:
        groups[(p["account_id"], p["direction"])] = (
            groups.get((p["account_id"], p["direction"]), 0) + p["amount"]
        )
    done = await repo.reversed_so_far(conn, tx_id)
    flip = {"debit": "credit", "credit": "debit"}
    keys = list(groups)
    remaining = [groups[k] - done.get((k[0], flip[k[1]]), 0) for k in keys]
    currency_of = {p["account_id"]: p["currency"] for p in postings}
    left = sum(r for k, r in zip(keys, remaining, strict=True) if k[1] == "debit")
    if left == 0:
        earlier = [
            c for c in await transactions_repo.children(conn, tx_id) if c["kind"] == "reversal"
        ]
        if amount is None and len(earlier) == 1:
            # A repeated full reversal returns the one that already happened.
            return Outcome(200, await load_transaction(conn, earlier[0]["id"]), replayed=True)
        raise AlreadyReversed(f"transaction {tx_id} is fully reversed", id=str(tx_id))
    if amount is None:
        shares = remaining
    else:
        if len({currency_of[k[0]] for k in keys}) > 1:
            raise InvalidField("amount", "a partial reversal needs a single-currency transaction")
        if amount > left:
            raise ExceedsRemaining(
                "amount", f"{amount} exceeds the {left} left to reverse", remaining=left
            )
        shares = split_postings(amount, [(k[1], r) for k, r in zip(keys, remaining, strict=True)])
    ws = await lock_accounts_of(conn, postings)
    by_id = {a.id: a for a in ws.accounts.values()}
    effects: list[Effect] = []
    planned: list[PlannedPosting] = []
    for (account_id, direction), share in zip(keys, shares, strict=True):
        if share <= 0:
            continue
        acc = by_id[account_id]
        posting = PlannedPosting(len(planned), acc, flip[direction], share, pending=False)
        planned.append(posting)
        effects.append(Effect(acc.code, flip[direction], posted=share, pending=0, posting=posting))
    ws.apply(effects)
    tx = PlannedTransaction(
        id=new_id(),
        kind="reversal",
        status="posted",
        effective_at=effective_at or now,
        recorded_at=now,
        postings=planned,
        reference=reference,
        category=row["category"],
        tags=list(row["tags"]),
        description=description or f"Reversal of {tx_id}",
        metadata={"reversal_of": str(tx_id)},
        parent_id=tx_id,
    )
    await transactions_repo.write_planned(conn, [tx], ws)
    TRANSACTIONS.labels("reversal", "ok").inc()
    return Outcome(201, tx.view())
