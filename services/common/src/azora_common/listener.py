"""Config-revision listener: every replica reloads its in-memory snapshot on ``NOTIFY``.

The writer calls :func:`notify` inside the transaction that stores the change; PostgreSQL
delivers the notification only on commit. Each replica holds one dedicated connection that
``LISTEN``s; on every notification (coalesced) and on every (re)connect it calls ``reload``,
which builds a new snapshot and swaps it in with one assignment, so in-flight requests keep the
snapshot they started with. Reloading on reconnect covers notifications missed while away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from azora_common.tasks import stop_tasks

log = logging.getLogger("azora.listener")

Reload = Callable[[], Awaitable[None]]


async def notify(session: AsyncSession, channel: str, payload: str = "") -> None:
    await session.execute(sa.select(sa.func.pg_notify(channel, payload)))


def libpq_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class RevisionListener:
    async def readiness(self) -> dict[str, object]:
        """A readiness probe: ready once the first snapshot is loaded."""
        return {"ok": self.loaded.is_set(), "reloads": self.reloads}

    def __init__(
        self,
        database_url: str,
        channel: str,
        reload: Reload,
        *,
        poll_interval_s: float = 30.0,
    ) -> None:
        self._dsn = libpq_url(database_url)
        self._channel = channel
        self._reload = reload
        self._poll_interval = poll_interval_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0
        self.connected = asyncio.Event()
        self.loaded = asyncio.Event()

    async def start(self) -> None:
        # The first load happens before start() returns so the service never serves an empty
        # snapshot; if the database is down, the service still starts (not ready) and the
        # background loop loads as soon as it can.
        try:
            await self._reload()
            self.reloads += 1
            self.loaded.set()
        except Exception:
            log.warning(
                "initial load for %s failed; retrying in background", self._channel, exc_info=True
            )
        self._task = asyncio.create_task(self._run(), name=f"listener:{self._channel}")

    async def stop(self) -> None:
        await stop_tasks(self._task)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
                lost = asyncio.Event()

                def on_lost(_conn: object, lost: asyncio.Event = lost) -> None:
                    lost.set()
                    self._wake.set()

                conn.add_termination_listener(on_lost)
                await conn.add_listener(self._channel, self._on_notify)
                self.connected.set()
                backoff = 0.2
                self._wake.set()  # reload once after (re)connecting: we may have missed some
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._poll_interval):
                            await self._wake.wait()
                    self._wake.clear()
                    # Several notifications that arrive during one reload fold into the next.
                    await self._reload()
                    self.reloads += 1
                    self.loaded.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning(
                    "listener on %s lost its connection; retrying", self._channel, exc_info=True
                )
                self.connected.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
