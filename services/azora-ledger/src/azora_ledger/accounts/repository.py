"""SQL of accounts: creation under an advisory lock, reads, row locks in one global order,
point-in-time balances and statements."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from azora_ledger.domain import AccountState
from azora_ledger.repository import dumps

# AccountState's fields, in order.
ACCOUNT_COLUMNS = (
    "id, code, type, currency, scale, debits_must_not_exceed_credits, "
    "credits_must_not_exceed_debits, overdraft_limit, posted_debits, posted_credits, "
    "pending_debits, pending_credits, version, closed"
)


def account_state(row: asyncpg.Record) -> AccountState:
    return AccountState(
        id=row["id"],
        code=row["code"],
        type=row["type"],
        currency=row["currency"],
        scale=row["scale"],
        debits_must_not_exceed_credits=row["debits_must_not_exceed_credits"],
        credits_must_not_exceed_debits=row["credits_must_not_exceed_debits"],
        overdraft_limit=row["overdraft_limit"],
        posted_debits=row["posted_debits"],
        posted_credits=row["posted_credits"],
        pending_debits=row["pending_debits"],
        pending_credits=row["pending_credits"],
        version=row["version"],
        closed=row["closed"],
    )


async def lock_code(conn: asyncpg.Connection, code: str) -> None:
    # The account may not exist yet, so there is no row to lock: serialize creators of the same
    # code on an advisory lock keyed by its hash (held until the transaction ends).
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", "account:" + code)


async def insert_account(conn: asyncpg.Connection, values: dict[str, Any]) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        """
        INSERT INTO accounts (code, name, type, currency, scale, debits_must_not_exceed_credits,
            credits_must_not_exceed_debits, overdraft_limit, metadata, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb, $10)
        ON CONFLICT (code) DO NOTHING
        RETURNING *, metadata::text AS metadata_json
        """,
        values["code"],
        values["name"],
        values["type"],
        values["currency"],
        values["scale"],
        values["debits_must_not_exceed_credits"],
        values["credits_must_not_exceed_debits"],
        values["overdraft_limit"],
        dumps(values["metadata"]),
        values["created_at"],
    )
    return row


async def get_account(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT *, metadata::text AS metadata_json FROM accounts WHERE code = $1", code
    )
    return row


async def list_accounts(
    conn: asyncpg.Connection, prefix: str | None, after: str | None, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT *, metadata::text AS metadata_json FROM accounts
        WHERE ($1::text IS NULL OR code LIKE $1 || '%')
          AND ($2::text IS NULL OR code > $2)
        ORDER BY code LIMIT $3
        """,
        prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") if prefix else None,
        after,
        limit,
    )
    return rows


async def lock_accounts(conn: asyncpg.Connection, codes: list[str]) -> dict[str, AccountState]:
    # One global lock order (ascending id) for every writer, so two transactions that touch the
    # same accounts queue instead of deadlocking. LockRows runs above the sort: rows are locked
    # in the order they are returned.
    rows = await conn.fetch(
        f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE code = ANY($1::text[]) "
        "ORDER BY id FOR UPDATE",
        codes,
    )
    # The selected columns are AccountState's fields in order: build it positionally.
    return {r["code"]: AccountState(*r) for r in rows}


async def lock_accounts_by_id(conn: asyncpg.Connection, ids: list[int]) -> dict[str, AccountState]:
    rows = await conn.fetch(
        f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY($1::bigint[]) "
        "ORDER BY id FOR UPDATE",
        ids,
    )
    return {r["code"]: AccountState(*r) for r in rows}


async def close_account(conn: asyncpg.Connection, account_id: int) -> None:
    await conn.execute(
        "UPDATE accounts SET closed = true, version = version + 1 WHERE id = $1", account_id
    )


async def balance_as_of(
    conn: asyncpg.Connection, account_ids: list[int], as_of: datetime
) -> dict[int, tuple[int, int]]:
    """Posted (debits, credits) per account counting postings effective at or before ``as_of``.

    Current totals minus the daily volumes of later days minus the postings later on the same
    day: the cost grows with the days after ``as_of``, not with the account's history. One
    statement, one snapshot, so the three parts agree.
    """
    day = as_of.date()
    # On the last representable day there is no next midnight; no posting can be later anyway.
    next_midnight = (
        datetime.combine(day + timedelta(days=1), datetime.min.time(), as_of.tzinfo)
        if day < date.max
        else datetime.max.replace(tzinfo=as_of.tzinfo)
    )
    rows = await conn.fetch(
        """
        SELECT a.id,
            a.posted_debits - coalesce(v.debits, 0) - coalesce(p.debits, 0) AS debits,
            a.posted_credits - coalesce(v.credits, 0) - coalesce(p.credits, 0) AS credits
        FROM accounts a
        LEFT JOIN LATERAL (
            SELECT sum(debits) AS debits, sum(credits) AS credits FROM account_daily_volumes
            WHERE account_id = a.id AND day > $2
        ) v ON true
        LEFT JOIN LATERAL (
            SELECT sum(amount) FILTER (WHERE direction = 'debit') AS debits,
                   sum(amount) FILTER (WHERE direction = 'credit') AS credits
            FROM postings
            WHERE account_id = a.id AND NOT pending AND effective_at > $3 AND effective_at < $4
        ) p ON true
        WHERE a.id = ANY($1::bigint[])
        """,
        account_ids,
        day,
        as_of,
        next_midnight,
    )
    return {r["id"]: (int(r["debits"]), int(r["credits"])) for r in rows}


async def statement(
    conn: asyncpg.Connection, account_id: int, after: tuple[int, str, int] | None, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT p.transaction_id, p.seq, p.direction, p.amount, p.currency, p.effective_at,
            p.account_version, p.balance_debits, p.balance_credits, t.kind, t.reference,
            t.description, t.category, t.recorded_at
        FROM postings p JOIN transactions t ON t.id = p.transaction_id
        WHERE p.account_id = $1 AND NOT p.pending
          AND ($2::bigint IS NULL
               OR (p.account_version, p.transaction_id, p.seq) > ($2, $3::uuid, $4::smallint))
        ORDER BY p.account_version, p.transaction_id, p.seq
        LIMIT $5
        """,
        account_id,
        after[0] if after else None,
        after[1] if after else None,
        after[2] if after else None,
        limit,
    )
    return rows
