"""SQL of pending transactions: resolving one, finding those due to expire, counting them."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg


async def resolve_pending(
    conn: asyncpg.Connection, tx_id: uuid.UUID, status: str, at: datetime
) -> None:
    await conn.execute(
        "UPDATE transactions SET status = $2, resolved_at = $3 WHERE id = $1", tx_id, status, at
    )


async def due_pending(conn: asyncpg.Connection, now: datetime, limit: int) -> list[uuid.UUID]:
    # SKIP LOCKED: a pending being posted or voided right now is left to that caller.
    rows = await conn.fetch(
        """
        SELECT id FROM transactions
        WHERE status = 'pending' AND expires_at <= $1
        ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
        """,
        now,
        limit,
    )
    return [r["id"] for r in rows]


async def count_pending(conn: asyncpg.Connection) -> int:
    value = await conn.fetchval("SELECT count(*) FROM transactions WHERE status = 'pending'")
    return int(value)
