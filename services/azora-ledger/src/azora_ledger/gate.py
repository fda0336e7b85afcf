"""The write gate: which writers of this process may hold account locks at once.

A writer of new transactions takes its *turn* right before it locks accounts and gives it back
when its database transaction has ended (committed or rolled back). Everything before the locks
(idempotency claims, reference and category lookups, the checks that need no account state)
runs outside the gate, in parallel with the writers that hold it.

A turn names what it will lock or insert under the turn: its accounts' codes and its
transactions' references (``take(conn, codes, references)``). Up to ``width`` turns are held
at once, and only turns whose sets are disjoint: two writers that share an account never hold
turns together. So a holder never waits on another holder's rows in PostgreSQL, and while one
holder waits for its commit (the WAL flush) another can lock and write accounts it does not
touch. Waiters are admitted first come, first served; a later waiter passes an earlier one
only if it shares nothing with it (or with any holder), so no writer waits forever behind a
stream of small ones.

Why not let writers queue on the row locks: two writers whose accounts overlap make PostgreSQL
do about twice the work per transfer (the second waits on the first's row locks, then
re-checks every row the first updated), so queueing them in Python is faster than queueing them
on the locks. Writers in other replicas still coordinate through the row locks, in one global
order.

No deadlock: holders share no account and no reference; a holder only waits on account rows
locked by paths that never wait for the gate (post, void, reverse, close; all lock in id
order), and on transactions and idempotency rows of its own. A turn taken again in the same
writer (a retry, a speculation undone) with a set it already holds keeps its place; with a new
one it is given back first (no locks are held then: the transaction was rolled back).

``database=True`` (``LEDGER_WRITE_GATE=database``) extends the gate to every process and
replica using the database: a turn also takes a transaction-scoped advisory lock (released by
the commit or rollback, taken again by a retried attempt), so writers of all replicas queue in
PostgreSQL's lock manager instead of on the accounts' rows. That caps the whole ledger's write
rate at one writer's, in exchange for no row-lock contention between replicas; worth it when
replicas write the same accounts (and for several uvicorn workers in one pod). Every turn is
then exclusive in the process too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Collection, Hashable

import asyncpg

from azora_ledger.metrics import TURN_HELD, TURN_WAIT
from azora_ledger.repository import lock_writers

# What a turn claims: account codes (str) and ("reference", reference) pairs.
Resources = frozenset[Hashable]


# A turn that names nothing claims everything: it runs alone.
EVERYTHING: Resources = frozenset({("everything",)})


def resources(codes: Collection[str] | None, references: Collection[str] = ()) -> Resources:
    if codes is None:
        return EVERYTHING
    if not references:
        return frozenset(codes)
    return frozenset(codes).union([("reference", r) for r in references])


def _disjoint(a: Resources, b: Resources) -> bool:
    return a is not EVERYTHING and b is not EVERYTHING and a.isdisjoint(b)


class _Waiter:
    __slots__ = ("future", "resources")

    def __init__(self, claimed: Resources, future: asyncio.Future[None]) -> None:
        self.resources = claimed
        self.future = future


class WriteGate:
    def __init__(self, width: int, *, database: bool = False) -> None:
        self._width = width
        self._database = database
        # One turn at a time when the turns cannot run side by side anyway.
        self._exclusive = database or width == 1
        self._holders: list[Resources] = []
        self._waiters: deque[_Waiter] = deque()

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[WriteTurn]:
        """``async with gate.turn() as turn, <transaction>:`` -- the transaction ends first."""
        turn = WriteTurn(self, self._database)
        try:
            yield turn
        finally:
            turn.give_back()
        # Let the next writer (woken by the release) send its lock query before this one goes
        # on to build its response: the gate is the bottleneck, keep it busy.
        await asyncio.sleep(0)

    @property
    def holding(self) -> int:
        return len(self._holders)

    @property
    def holders(self) -> list[Resources]:
        """What the turns held now claim (a copy)."""
        return list(self._holders)

    def _fits(self, claimed: Resources, others: list[Resources]) -> bool:
        if not others:
            return True
        if self._exclusive or len(others) >= self._width:
            return False
        return all(_disjoint(claimed, o) for o in others)

    async def acquire(self, claimed: Resources) -> Resources:
        if not self._waiters and self._fits(claimed, self._holders):
            self._holders.append(claimed)
            return claimed
        waiter = _Waiter(claimed, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        self._admit()  # disjoint from every holder and earlier waiter: it goes now
        try:
            await waiter.future
        except BaseException:
            if waiter.future.done() and not waiter.future.cancelled():
                self.release(claimed)  # admitted, then cancelled before it could go on
            else:
                self._waiters.remove(waiter)
                self._admit()  # it may have kept later, disjoint waiters waiting
            raise
        return claimed

    def release(self, claimed: Resources) -> None:
        self._holders.remove(claimed)
        self._admit()

    def _admit(self) -> None:
        """Admit waiters in arrival order; one passes an earlier waiter only if disjoint."""
        ahead: list[Resources] = []
        for waiter in list(self._waiters):
            if self._fits(waiter.resources, self._holders) and (
                not ahead or all(_disjoint(waiter.resources, a) for a in ahead)
            ):
                self._waiters.remove(waiter)
                self._holders.append(waiter.resources)
                waiter.future.set_result(None)
            elif self._exclusive or len(self._holders) >= self._width:
                return
            else:
                ahead.append(waiter.resources)


class WriteTurn:
    """One writer's turn: taken at most once per set, given back when the writer's block ends."""

    __slots__ = ("_database", "_gate", "_held", "_since")

    def __init__(self, gate: WriteGate, database: bool) -> None:
        self._gate = gate
        self._database = database
        self._held: Resources | None = None
        self._since = 0.0

    async def take(
        self,
        conn: asyncpg.Connection,
        codes: Collection[str] | None = None,
        references: Collection[str] = (),
    ) -> None:
        """Before locking the accounts ``codes`` (and inserting transactions with
        ``references``), in the writer's transaction on ``conn``. Without ``codes`` the turn
        claims everything: no other turn is held beside it."""
        started = time.perf_counter()
        claimed = resources(codes, references)
        held = self._held
        if held is None or not (held is EVERYTHING or claimed <= held):
            if held is not None:
                self._gate.release(held)
                self._held = None
            self._held = await self._gate.acquire(claimed)
        if self._database:
            # Every attempt: a rollback (a retry, a speculation undone) released it.
            await lock_writers(conn)
        if not self._since:
            self._since = time.perf_counter()
            TURN_WAIT.observe(self._since - started)

    def give_back(self) -> None:
        if self._held is not None:
            self._gate.release(self._held)
            self._held = None
            TURN_HELD.observe(time.perf_counter() - self._since)
