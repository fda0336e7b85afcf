"""The write gate: how many writers of this process may hold account locks at once.

A writer of new transactions takes its *turn* right before it locks accounts and gives it back
when its database transaction has ended (committed or rolled back). Everything before the locks
(idempotency claims, reference and category lookups, the checks that need no account state)
runs outside the gate, in parallel with the writer that holds it.

Why: two writers of one process whose accounts overlap make PostgreSQL do about twice the work
per transfer (the second waits on the first's row locks, then re-checks every row the first
updated), so queueing them in Python is faster than queueing them on the locks. Writers in
other replicas still coordinate through the row locks, in one global order.

No deadlock with the database's own locks: a turn holder only waits on account rows (locked by
turn holders, or by paths that never wait for the gate: post, void, reverse, close) and on
transactions and idempotency rows of its own.

``database=True`` (``LEDGER_WRITE_GATE=database``) extends the gate to every process and
replica using the database: a turn also takes a transaction-scoped advisory lock (released by
the commit or rollback, taken again by a retried attempt), so writers of all replicas queue in
PostgreSQL's lock manager instead of on the accounts' rows. That caps the whole ledger's write
rate at one writer's, in exchange for no row-lock contention between replicas; worth it when
replicas write the same accounts (and for several uvicorn workers in one pod).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import asyncpg

from azora_ledger.metrics import TURN_HELD, TURN_WAIT
from azora_ledger.repository import lock_writers


class WriteTurn:
    """One writer's turn: taken at most once, given back when the writer's block ends."""

    __slots__ = ("_database", "_held", "_semaphore", "_since")

    def __init__(self, semaphore: asyncio.Semaphore, database: bool) -> None:
        self._semaphore = semaphore
        self._database = database
        self._held = False
        self._since = 0.0

    async def take(self, conn: asyncpg.Connection) -> None:
        """Before locking accounts, in the writer's transaction on ``conn``."""
        started = time.perf_counter()
        if not self._held:
            await self._semaphore.acquire()
            self._held = True
        if self._database:
            # Every attempt: a rollback (a retry, a speculation undone) released it.
            await lock_writers(conn)
        if not self._since:
            self._since = time.perf_counter()
            TURN_WAIT.observe(self._since - started)

    def give_back(self) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()
            TURN_HELD.observe(time.perf_counter() - self._since)


class WriteGate:
    def __init__(self, width: int, *, database: bool = False) -> None:
        self._semaphore = asyncio.Semaphore(width)
        self._database = database

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[WriteTurn]:
        """``async with gate.turn() as turn, <transaction>:`` -- the transaction ends first."""
        turn = WriteTurn(self._semaphore, self._database)
        try:
            yield turn
        finally:
            turn.give_back()
        # Let the next writer (woken by the release) send its lock query before this one goes
        # on to build its response: the gate is the bottleneck, keep it busy.
        await asyncio.sleep(0)
