"""Store concurrently priced quotes with one INSERT per batch instead of one per request.

The hot path (``POST /v1/quotes`` without codes or key) hands its quote to :meth:`store` and
waits. One task writes: when it is idle a quote is written at once (no waiting window); quotes
that arrive while a statement is running form the next batch, so batches grow with load by
themselves (as the ledger's coalescer does for transfers). Each request still gets its own
answer: stored, or not stored because its snapshot was stale (the caller then takes the full
path, exactly as with one statement per request). A quote is answered only after the statement
that stored it returned, i.e. committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from azora_pricing import repository
from azora_pricing.metrics import QUOTE_WRITE_BATCH_SIZE
from azora_pricing.repository import QuoteRow

log = logging.getLogger("azora.pricing.quote_writer")

Pending = tuple[QuoteRow, "asyncio.Future[bool]"]


def refused_input(exc: BaseException) -> bool:
    """The database (SQLSTATE class 22) or the driver refused a value, not the connection."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc.sqlstate or "").startswith("22")
    return isinstance(exc, asyncpg.DataError)


async def store_alone(conn: asyncpg.Connection, row: QuoteRow) -> bool:
    """One quote on a connection outside any transaction, answered as the writer answers (a
    value the database refuses is "not stored": the full path reports it)."""
    try:
        return await repository.insert_quote_if_current(conn, row)
    except Exception as exc:
        if refused_input(exc):
            return False
        raise


class QuoteWriter:
    def __init__(self, engine: AsyncEngine, *, max_batch: int) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: list[Pending] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        # One pooled connection for the writer's life: handing it back after every batch would
        # cost a pool checkout and reset per batch.
        self._conn: AsyncConnection | None = None
        self._task = asyncio.create_task(self._run(), name="pricing-quote-writer")

    async def store(self, row: QuoteRow) -> bool:
        """True once the quote is committed; False if it was not stored (stale snapshot, a
        value the database refuses, or the writer is closed): the full path must answer."""
        if self._task.done():
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((row, future))
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Write and answer everything queued, then give the connection back."""
        self._closing = True
        self._wakeup.set()
        await self._task
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            # A request cancelled while queued is not written: nobody would learn its id.
            live = [item for item in batch if not item[1].done()]
            if not live:
                continue
            QUOTE_WRITE_BATCH_SIZE.observe(len(live))
            try:
                await self._flush(live)
            except BaseException:
                # Cancelled (the loop is being torn down): no waiter is left hanging.
                for _, future in live:
                    future.cancel()
                raise

    async def _flush(self, items: list[Pending]) -> None:
        try:
            stored = await self._insert([row for row, _ in items])
        except Exception as exc:
            if len(items) > 1 and refused_input(exc):
                # One quote the database refuses (a NUL byte in a customer id) must not fail
                # the others: each alone, so only that one is refused.
                for item in items:
                    await self._flush([item])
                return
            if refused_input(exc):
                # Not stored; the full path stores it through a session and reports the
                # refusal as the FastAPI route does (a 422 problem naming the reason).
                stored = set()
            else:
                # The database is unreachable or the statement failed for everyone: every
                # waiter gets the error (a 500 problem), none is left hanging.
                log.warning("quote batch of %d failed: %r", len(items), exc)
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                return
        for row, future in items:
            if not future.done():
                future.set_result(row.id in stored)

    async def _insert(self, rows: list[QuoteRow]) -> set[str]:
        if self._conn is None:
            conn = self.engine.connect()
            await conn.start()
            self._conn = conn
        try:
            raw = await self._conn.get_raw_connection()
            return await repository.insert_quotes_if_current(raw.driver_connection, rows)
        except Exception as exc:
            if not refused_input(exc):
                # The connection may be what broke: the pool discards it, the next batch takes
                # a fresh one.
                conn, self._conn = self._conn, None
                with contextlib.suppress(Exception):
                    await conn.invalidate()
                    await conn.close()
            raise
