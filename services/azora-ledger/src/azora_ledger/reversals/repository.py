"""SQL of reversals: what earlier reversals of a transaction already gave back."""

from __future__ import annotations

import uuid

import asyncpg


async def reversed_so_far(conn: asyncpg.Connection, tx_id: uuid.UUID) -> dict[tuple[int, str], int]:
    """Amounts earlier reversals of ``tx_id`` posted, per (account id, reversal direction)."""
    rows = await conn.fetch(
        """
        SELECT p.account_id, p.direction, sum(p.amount)::numeric AS amount FROM transactions t
        JOIN postings p ON p.transaction_id = t.id
        WHERE t.parent_id = $1 AND t.kind = 'reversal'
        GROUP BY p.account_id, p.direction
        """,
        tx_id,
    )
    return {(r["account_id"], r["direction"]): int(r["amount"]) for r in rows}
