"""Coalesce concurrent single-transfer requests into one database transaction.

Requests queue up; a few workers each take everything queued (up to ``max_batch``) and apply
it with :func:`transactions.service.create_transactions` in one transaction. While a worker
waits on the database, new requests gather, so batches grow with load by themselves: a hot
account is locked once per batch, not once per transfer. Each request still gets its own
outcome: one that breaks a rule is rejected alone, the others commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import asyncpg

from azora_common.errors import ProblemError
from azora_ledger.errors import LedgerBusy
from azora_ledger.gate import WriteGate
from azora_ledger.metrics import RETRIES
from azora_ledger.transactions.service import (
    TransferRequest,
    create_transactions,
    store_refusal,
)
from azora_ledger.work import RETRYABLE, Outcome, database_problem, problem_outcome

log = logging.getLogger("azora.ledger.coalescer")

Item = tuple[TransferRequest, "asyncio.Future[Outcome]"]


class Coalescer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        gate: WriteGate,
        workers: int,
        max_batch: int,
        linger_seconds: float,
        attempts: int = 6,
    ) -> None:
        self.pool = pool
        self.gate = gate
        self.max_batch = max_batch
        self.linger = linger_seconds
        self.attempts = attempts
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.workers = [asyncio.create_task(self._work()) for _ in range(workers)]

    async def submit(self, request: TransferRequest) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((request, future))
        return await future

    async def close(self) -> None:
        for w in self.workers:
            w.cancel()
        for w in self.workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w
        while not self.queue.empty():
            _, future = self.queue.get_nowait()
            if not future.done():
                future.set_exception(LedgerBusy("the service is shutting down"))

    async def _work(self) -> None:
        # Each worker keeps one pool connection for as long as it lives: handing it back after
        # every batch costs a reset round trip (RESET ALL, UNLISTEN, ...) per batch.
        conn: asyncpg.Connection | None = None
        try:
            while True:
                batch = [await self.queue.get()]
                if self.linger > 0 and self.queue.qsize() < self.max_batch:
                    await asyncio.sleep(self.linger)
                # Everything that queued while this worker was busy goes into one batch: under
                # load batches grow by themselves, with no fixed waiting window.
                while len(batch) < self.max_batch and not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                live = [(r, f) for r, f in batch if not f.done()]  # a client may have gone away
                if not live:
                    continue
                try:
                    if conn is None:
                        conn = await self.pool.acquire()
                    outcomes = await self._run(conn, [r for r, _ in live])
                except Exception as exc:  # never lose a waiter: fail them all with the reason
                    log.exception("coalesced batch failed")
                    for _, future in live:
                        if not future.done():
                            future.set_exception(exc)
                    if conn is not None:
                        # The connection may be what broke: give it back (the pool discards a
                        # closed one) and take a fresh one for the next batch.
                        await self.pool.release(conn)
                        conn = None
                    continue
                for (_, future), outcome in zip(live, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)
        finally:
            if conn is not None:
                await self.pool.release(conn)

    async def _run(
        self, conn: asyncpg.Connection, requests: list[TransferRequest]
    ) -> list[Outcome]:
        for attempt in range(self.attempts):
            try:
                async with self.gate.turn() as turn, conn.transaction():
                    return await create_transactions(
                        conn, requests, atomic=False, source="coalesced", turn=turn
                    )
            except RETRYABLE:
                if attempt == self.attempts - 1:
                    break
                RETRIES.inc()
                await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))
            except asyncpg.PostgresError as exc:
                # The database refused something Python accepted (a race on a constraint, or a
                # bug): isolate the culprit by running each request alone.
                if len(requests) > 1:
                    return [o for r in requests for o in await self._run(conn, [r])]
                problem = database_problem(exc)
                if problem is None:
                    raise
                # Its transaction rolled back with the claimed key: stored on its own.
                return [
                    await store_refusal(
                        conn, requests[0], problem_outcome(problem, requests[0].path)
                    )
                ]
            except ProblemError as exc:
                return [problem_outcome(exc, r.path) for r in requests]
        if len(requests) > 1:
            return [o for r in requests for o in await self._run(conn, [r])]
        return [problem_outcome(LedgerBusy("too much contention, try again"), requests[0].path)]
