"""The insight change feed: "the live insight of object ``plural/namespace/name`` changed".

The operator copies each resource's live insight (seats, waitlist, redemptions, backend health)
into its status. Instead of polling every object, it long-polls one feed per service and
refreshes only the objects named there (docs/operator.md, "Live insight").

- A writer announces a change with :func:`publish_change` (or SQL calling ``pg_notify`` on
  :data:`CHANNEL` with :func:`change_key`'s format) inside the transaction that makes it:
  PostgreSQL delivers it on commit, and never for a rolled-back change. State that lives only
  in a process (the orchestrator's backend health) uses :meth:`ChangeFeed.publish`.
- Every replica ``LISTEN``s and appends each key to a small in-memory ring under its own
  sequence number.
- ``GET /admin/v1/{plural}/changes?after=<cursor>&wait=<seconds>`` answers the keys of that
  plural recorded after the cursor, at once when there are some, else when one arrives or
  ``wait`` has passed (a long poll). A cursor is ``<epoch>.<sequence>``: the epoch names one
  replica's ring for one unbroken ``LISTEN`` session. A cursor of another epoch (another
  replica, a restart, a lost connection during which notifications were missed) or one that
  fell off the ring answers ``reset``: the caller cannot know what it missed and refreshes
  everything once. No cursor answers the current position with no keys.

Nothing is stored: the feed is a hint that shortens the wait. The operator's periodic resync
stays the safety net for anything a feed loses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Sequence
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from azora_common.auth import AdminDep
from azora_common.listener import libpq_url, notify
from azora_common.tasks import stop_tasks

log = logging.getLogger("azora.changes")

CHANNEL = "azora_insight_changed"
MAX_WAIT_S = 60.0
# Keys kept per replica; a consumer further behind than this gets "reset" (a full refresh).
RING_SIZE = 4096


def change_key(plural: str, namespace: str, name: str) -> str:
    """The NOTIFY payload: namespaces and names are DNS labels/subdomains, never with '/'."""
    return f"{plural}/{namespace}/{name}"


async def publish_change(session: AsyncSession, plural: str, namespace: str, name: str) -> None:
    """Announce in the caller's transaction that this object's insight changed."""
    await notify(session, CHANNEL, change_key(plural, namespace, name))


class Changes(BaseModel):
    """Answer of ``GET /admin/v1/{plural}/changes``."""

    cursor: str = Field(description="Pass as `after` on the next call.")
    reset: bool = Field(
        description="The cursor is unknown here (another replica, a restart, missed "
        "notifications or too far behind): refresh every object once, then go on from "
        "`cursor`."
    )
    keys: list[str] = Field(description="`namespace/name` of each object whose insight changed.")


class ChangeFeed:
    """One replica's ring of recent changes, fed by ``LISTEN`` on :data:`CHANNEL`."""

    def __init__(self, database_url: str, *, size: int = RING_SIZE) -> None:
        self._dsn = libpq_url(database_url)
        self._ring: deque[tuple[int, str]] = deque(maxlen=size)
        self._seq = 0
        self.epoch = secrets.token_hex(6)
        # Replaced on every change: a waiter holds the one current when it last looked.
        self._changed = asyncio.Event()
        self._outgoing: set[str] = set()
        self._send = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    # --- the ring -------------------------------------------------------------------------

    @property
    def cursor(self) -> str:
        return f"{self.epoch}.{self._seq}"

    def record(self, key: str) -> None:
        self._seq += 1
        self._ring.append((self._seq, key))
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _new_epoch(self) -> None:
        """Forget everything: cursors handed out so far answer ``reset`` from now on."""
        self.epoch = secrets.token_hex(6)
        self._ring.clear()
        self._wake()

    def _since(self, after: str | None, prefix: str) -> Changes | None:
        """The answer for ``after`` now, or ``None`` when there is nothing yet (wait)."""
        if not after:
            return Changes(cursor=self.cursor, reset=False, keys=[])
        epoch, _, seq_text = after.partition(".")
        seq = int(seq_text) if seq_text.isdigit() else -1
        oldest = self._ring[0][0] if self._ring else self._seq + 1
        if epoch != self.epoch or seq < 0 or seq > self._seq or seq < oldest - 1:
            return Changes(cursor=self.cursor, reset=True, keys=[])
        keys = dict.fromkeys(
            key[len(prefix) :] for s, key in self._ring if s > seq and key.startswith(prefix)
        )
        if not keys:
            return None
        return Changes(cursor=self.cursor, reset=False, keys=list(keys))

    async def changes(self, plural: str, after: str | None, wait: float) -> Changes:
        """The keys of ``plural`` after the cursor; waits up to ``wait`` seconds for one."""
        prefix = f"{plural}/"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(wait, MAX_WAIT_S))
        while True:
            changed = self._changed  # before looking: a change after the look wakes us
            answer = self._since(after, prefix)
            if answer is not None:
                return answer
            remaining = deadline - loop.time()
            if remaining <= 0:
                # Nothing of ours: move the cursor past other plurals' keys.
                return Changes(cursor=self.cursor, reset=False, keys=[])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    # --- publishing from a process --------------------------------------------------------

    def publish(self, plural: str, namespace: str, name: str) -> None:
        """Announce to every replica (this one included) a change only this process saw.

        Sent over the listening connection by a background task, so a caller on a hot path
        (a request that ejected a backend) never waits for the database. Without a connection
        the key is recorded here only; the other replicas' consumers get "reset" anyway when
        this replica reconnects with a new epoch.
        """
        self._outgoing.add(change_key(plural, namespace, name))
        self._send.set()

    async def _sender(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        while not lost.is_set():
            await self._send.wait()
            self._send.clear()
            keys, self._outgoing = self._outgoing, set()
            for key in sorted(keys):
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, key)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="changes")

    async def stop(self) -> None:
        await stop_tasks(self._task)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self.record(str(payload))

    async def _run(self) -> None:
        backoff = 0.2
        first = True
        while True:
            conn: asyncpg.Connection | None = None
            sender: asyncio.Task[None] | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                if not first:
                    # Notifications sent while we were away are gone: nobody may trust a
                    # cursor of the old session.
                    self._new_epoch()
                first = False
                backoff = 0.2
                sender = asyncio.create_task(self._sender(conn, lost), name="changes-send")
                self._send.set()  # what was published while disconnected
                waiter = asyncio.create_task(lost.wait())
                done, _ = await asyncio.wait({sender, waiter}, return_when="FIRST_COMPLETED")
                waiter.cancel()
                if sender in done:
                    sender.result()  # raises what broke the connection
                raise ConnectionError("listening connection lost")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("change feed lost its connection; retrying", exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if sender is not None:
                    sender.cancel()
                    with contextlib.suppress(BaseException):
                        await sender
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)


def changes_router(plurals: Sequence[str]) -> APIRouter:
    """``GET /admin/v1/{plural}/changes`` for each plural, served from ``app.state.changes``."""
    router = APIRouter()

    def endpoint(plural: str) -> Any:
        async def changes(
            request: Request,
            _: AdminDep,
            after: Annotated[str | None, Query(max_length=64)] = None,
            wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0.0,
        ) -> Changes:
            feed: ChangeFeed = request.app.state.changes
            return await feed.changes(plural, after, wait)

        return changes

    for plural in plurals:
        router.add_api_route(
            f"/admin/v1/{plural}/changes",
            endpoint(plural),
            methods=["GET"],
            tags=["admin"],
            response_model=Changes,
            summary=f"Long poll: {plural} whose live insight changed after a cursor",
        )
    return router
