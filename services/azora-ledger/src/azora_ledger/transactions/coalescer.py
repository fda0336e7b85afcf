"""Coalesce concurrent single-transfer requests into one database transaction.

Requests queue up; a few workers each take everything queued (up to ``max_batch``) and apply
it with :func:`transactions.service.create_transactions` in one transaction. While a worker
waits on the database, new requests gather, so batches grow with load by themselves: a hot
account is locked once per batch, not once per transfer. Each request still gets its own
outcome: one that breaks a rule is rejected alone, the others commit.

With several workers, batches being applied at once share nothing: a worker takes only the
queued requests whose accounts, reference and idempotency key no other worker's batch claims
(``_select``; a request left queued holds back later ones that share something with it, so
each account's requests apply in arrival order), and the write gate admits turns with
disjoint accounts side by side (``gate.py``). With ``overlap="commit"`` (the default) a worker
starts a batch only when no other batch is still being planned or written, so a batch locks
and writes while the previous one waits for its commit (a two-stage pipeline), and batches
stay nearly as large as with one worker; ``"any"`` starts one whenever a worker is free
(smaller batches, more CPU per transfer: measured worse).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Hashable

import asyncpg

from azora_common.errors import ProblemError
from azora_common.tasks import stop_tasks
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


class _Item:
    __slots__ = ("future", "request", "resources")

    def __init__(self, request: TransferRequest, future: asyncio.Future[Outcome]) -> None:
        self.request = request
        self.future = future
        body = request.body
        claimed: set[Hashable] = {p.account for p in body.postings}
        claimed.update(c.account for c in body.conditions)
        if body.reference is not None:
            claimed.add(("reference", body.reference))
        if request.key is not None:
            claimed.add(("key", request.key))
        self.resources = claimed


class Coalescer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        gate: WriteGate,
        workers: int,
        max_batch: int,
        linger_seconds: float,
        overlap: str = "commit",
        attempts: int = 6,
    ) -> None:
        self.pool = pool
        self.gate = gate
        self.max_batch = max_batch
        self.linger = linger_seconds
        self.attempts = attempts
        self.queue: deque[_Item] = deque()
        # What the batches being applied claim (accounts, references, keys), with counts.
        self.busy: dict[Hashable, int] = {}
        self.changed = asyncio.Event()
        # Batches taken whose write has not ended yet; with overlap "commit" a worker starts a
        # batch only when there is none: batches overlap only in their commits.
        self.writing = 0
        self.overlap = overlap
        self.workers = [asyncio.create_task(self._work()) for _ in range(workers)]

    async def submit(self, request: TransferRequest) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.queue.append(_Item(request, future))
        self.changed.set()
        return await future

    async def close(self) -> None:
        await stop_tasks(*self.workers)
        while self.queue:
            future = self.queue.popleft().future
            if not future.done():
                future.set_exception(LedgerBusy("the service is shutting down"))

    def _select(self) -> list[_Item]:
        """Take queued requests, in arrival order, that share nothing (account, reference,
        idempotency key) with a batch another worker is applying. A request left queued also
        holds back later requests sharing something with it, so the requests of one account
        are applied in arrival order."""
        busy = self.busy
        taken: list[_Item] = []
        kept: deque[_Item] = deque()
        held_back: set[Hashable] = set()
        queue = self.queue
        while queue:
            item = queue.popleft()
            if item.future.done():  # the client went away
                continue
            claimed = item.resources
            if len(taken) >= self.max_batch or (
                (busy or held_back) and any(r in busy or r in held_back for r in claimed)
            ):
                kept.append(item)
                if len(taken) < self.max_batch:
                    held_back.update(claimed)
                continue
            taken.append(item)
        self.queue = kept
        for item in taken:
            for r in item.resources:
                busy[r] = busy.get(r, 0) + 1
        if taken:
            self.writing += 1
        return taken

    def _written(self, stage: list[bool]) -> None:
        """The batch's write has ended (its commit begins, or it failed): the next may start."""
        if stage[0]:
            stage[0] = False
            self.writing -= 1
            self.changed.set()

    def _done(self, taken: list[_Item]) -> None:
        busy = self.busy
        for item in taken:
            for r in item.resources:
                n = busy[r] - 1
                if n:
                    busy[r] = n
                else:
                    del busy[r]
        self.changed.set()

    async def _take(self) -> list[_Item]:
        while True:
            if self.queue and (self.overlap == "any" or not self.writing):
                if self.linger > 0 and len(self.queue) < self.max_batch:
                    await asyncio.sleep(self.linger)
                    if self.overlap != "any" and self.writing:
                        continue  # another worker started a batch meanwhile
                # Everything that queued while this worker was busy goes into one batch: under
                # load batches grow by themselves, with no fixed waiting window.
                taken = self._select()
                if taken:
                    return taken
            self.changed.clear()
            await self.changed.wait()

    async def _work(self) -> None:
        # Each worker keeps one pool connection for as long as it lives: handing it back after
        # every batch costs a reset round trip (RESET ALL, UNLISTEN, ...) per batch.
        conn: asyncpg.Connection | None = None
        try:
            while True:
                live = await self._take()
                stage = [True]
                try:
                    if conn is None:
                        conn = await self.pool.acquire()
                    outcomes = await self._run(conn, [i.request for i in live], stage)
                except Exception as exc:  # never lose a waiter: fail them all with the reason
                    log.exception("coalesced batch failed")
                    for item in live:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    if conn is not None:
                        # The connection may be what broke: give it back (the pool discards a
                        # closed one) and take a fresh one for the next batch.
                        await self.pool.release(conn)
                        conn = None
                    continue
                finally:
                    self._written(stage)
                    self._done(live)
                for item, outcome in zip(live, outcomes, strict=True):
                    if not item.future.done():
                        item.future.set_result(outcome)
        finally:
            if conn is not None:
                await self.pool.release(conn)

    async def _run(
        self, conn: asyncpg.Connection, requests: list[TransferRequest], stage: list[bool]
    ) -> list[Outcome]:
        for attempt in range(self.attempts):
            try:
                async with self.gate.turn() as turn, conn.transaction():
                    outcomes = await create_transactions(
                        conn, requests, atomic=False, source="coalesced", turn=turn
                    )
                    self._written(stage)
                    return outcomes
            except RETRYABLE:
                if attempt == self.attempts - 1:
                    break
                RETRIES.inc()
                await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))
            except asyncpg.PostgresError as exc:
                # The database refused something Python accepted (a race on a constraint, or a
                # bug): isolate the culprit by running each request alone.
                if len(requests) > 1:
                    return [o for r in requests for o in await self._run(conn, [r], stage)]
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
            return [o for r in requests for o in await self._run(conn, [r], stage)]
        return [problem_outcome(LedgerBusy("too much contention, try again"), requests[0].path)]
