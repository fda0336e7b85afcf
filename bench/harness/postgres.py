"""PostgreSQL for benchmarks: durable unless asked otherwise, and what it really runs with.

A headline figure comes from a durable server (fsync, synchronous_commit and full_page_writes
on, as production runs). ``fast`` (fsync off) exists only to stand beside it, labelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
# Room for a benchmark's history without checkpoints inside the measured runs.
TUNING = {"shared_buffers": "256MB", "max_wal_size": "2GB"}


@dataclass(frozen=True)
class Database:
    url: str  # libpq URL of the server's "postgres" database
    postmaster: int | None  # pid, when we started the server (its CPU is then measured)
    durable: bool
    settings: dict[str, str]
    version: str

    @property
    def label(self) -> str:
        if self.durable:
            return "durable (fsync on, synchronous_commit on)"
        off = ", ".join(f"{k} {v}" for k, v in self.settings.items() if v != "on")
        return f"fast database ({off or 'fsync off'})"

    def charge(self, **pids: int) -> dict[str, int]:
        """A target's CPU charge: ``pids`` and, when we started the server, ``database``."""
        return {**pids, **({"database": self.postmaster} if self.postmaster else {})}

    def database_url(self, name: str) -> str:
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


async def _fetch_settings(url: str) -> tuple[dict[str, str], str]:
    conn = await asyncpg.connect(url)
    try:
        settings = {k: str(await conn.fetchval(f"SHOW {k}")) for k in DURABLE}
        return settings, str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


@contextlib.contextmanager
def database_server(mode: str = "durable") -> Iterator[Database]:
    """``AZORA_BENCH_DATABASE_URL`` (labelled by what it reports) or a private server:
    ``durable`` or ``fast``."""
    if mode not in ("durable", "fast"):
        raise ValueError(f"database mode {mode!r}: durable or fast")
    external = os.environ.get("AZORA_BENCH_DATABASE_URL")
    if external:
        url = external.replace("postgresql+asyncpg://", "postgresql://")
        settings, version = asyncio.run(_fetch_settings(url))
        yield Database(url, None, settings == DURABLE, settings, version)
        return
    from azora_devenv.postgres import LocalPostgres

    with tempfile.TemporaryDirectory(prefix="azora-bench-pg-") as tmp:
        Path(tmp).chmod(0o755)  # PostgreSQL runs as another account when we are root
        extra = {**TUNING, **(DURABLE if mode == "durable" else {})}
        server = LocalPostgres(Path(tmp) / "data", fast=mode == "fast", extra_settings=extra)
        server.start()
        try:
            pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
            url = server.url("postgres")
            settings, version = asyncio.run(_fetch_settings(url))
            yield Database(url, pid, settings == DURABLE, settings, version)
        finally:
            server.stop()


def recreate_database(db: Database, name: str) -> str:
    """Drop and create ``name``; its URL."""

    async def go() -> None:
        conn = await asyncpg.connect(db.url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(go())
    return db.database_url(name)


def settle(url: str) -> None:
    """Before a measurement, as pgbench does before its runs: vacuum and analyze, then
    checkpoint, so no measurement pays for the previous one's dead rows or for a checkpoint
    (and its full-page writes) that happens to start inside it."""

    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("VACUUM ANALYZE")
            await conn.execute("CHECKPOINT")
        finally:
            await conn.close()

    asyncio.run(go())
