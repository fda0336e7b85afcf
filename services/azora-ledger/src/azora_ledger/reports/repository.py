"""SQL of reports: every account's totals, and posted volume by category or tag."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from azora_ledger.accounts.repository import ACCOUNT_COLUMNS


async def all_accounts(conn: asyncpg.Connection, currency: str | None) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {ACCOUNT_COLUMNS} FROM accounts "
        "WHERE ($1::text IS NULL OR currency = $1) ORDER BY code",
        currency,
    )
    return rows


async def totals_by(
    conn: asyncpg.Connection, group: str, start: datetime | None, end: datetime | None
) -> list[asyncpg.Record]:
    """Posted volume (sum of debits) and transaction count per category or tag and currency."""
    key = "t.category" if group == "category" else "tag"
    join = "" if group == "category" else "CROSS JOIN LATERAL unnest(t.tags) AS tag"
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT {key} AS key, p.currency, sum(p.amount)::numeric AS amount,
            count(DISTINCT t.id) AS transactions
        FROM transactions t {join}
        JOIN postings p ON p.transaction_id = t.id AND p.direction = 'debit' AND NOT p.pending
        WHERE ($1::timestamptz IS NULL OR t.effective_at >= $1)
          AND ($2::timestamptz IS NULL OR t.effective_at < $2)
        GROUP BY 1, 2 ORDER BY 1 NULLS LAST, 2
        """,
        start,
        end,
    )
    return rows
