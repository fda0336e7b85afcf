"""``Database.driver``: a pooled asyncpg connection, kept or discarded by what went wrong."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from azora_common.db import Database
from tests.common.sample_app import SampleSettings


class Refused(Exception):
    """An error of the caller's own (a domain refusal), not of the connection."""


async def _pid(db: Database) -> int:
    async with db.driver() as conn:
        pid: int = conn.get_server_pid()
        return pid


async def _refuse(db: Database) -> None:
    async with db.driver() as conn:
        await conn.execute("SELECT 1")
        raise Refused


async def test_errors_keep_or_discard_the_connection(settings: SampleSettings) -> None:
    # One pooled connection, so "the same backend pid" means "the connection was kept".
    db = Database(settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0}))
    try:
        first = await _pid(db)
        # The server answered (an error of the statement) or the caller refused: kept.
        with pytest.raises(asyncpg.PostgresError):
            async with db.driver() as conn:
                await conn.execute("SELECT 1/0")
        with pytest.raises(Refused):
            await _refuse(db)
        assert await _pid(db) == first
        # Cancelled in the middle of a statement: discarded, the next use gets a fresh one.

        async def sleeper() -> None:
            async with db.driver() as conn:
                await conn.execute("SELECT pg_sleep(10)")

        task = asyncio.create_task(sleeper())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await _pid(db) != first
    finally:
        await db.dispose()
