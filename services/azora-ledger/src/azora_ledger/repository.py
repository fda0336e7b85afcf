"""Repository plumbing every aggregate shares: the asyncpg connection under a request's session,
JSON encoding, and the write gate's advisory lock (a writer's own connection comes from
``azora_common.db.Database.driver``).

Each aggregate's SQL is in its own ``repository`` module (``accounts``, ``transactions``,
``pending``, ``reversals``, ``reports``, ``verify``), spoken directly through asyncpg (the hot
path cannot afford ORM overhead); multi-row writes pass arrays and ``unnest`` them: one round
trip per table.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


def dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


async def driver_connection(session: AsyncSession | AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under a SQLAlchemy session, inside its transaction."""
    conn = await session.connection() if isinstance(session, AsyncSession) else session
    # The SQLAlchemy adapter opens its transaction lazily, on the first statement it runs;
    # run one so our raw statements land inside it (and in the test's outer transaction).
    await conn.exec_driver_sql("SELECT 1")
    raw = await conn.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    return driver


# The two-key form of advisory locks has a key space of its own (account creation uses the
# one-key form): ("LDGR", 1) is the ledger's writers.
_LOCK_WRITERS = "SELECT pg_advisory_xact_lock(1279543122, 1)"


def lock_writers(conn: asyncpg.Connection) -> Awaitable[str]:
    """The database write gate's turn (gate.py), held until the transaction ends. A plain
    function returning the driver's awaitable: no coroutine of its own in the turn."""
    taken: Awaitable[str] = conn.execute(_LOCK_WRITERS)
    return taken
