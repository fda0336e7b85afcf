"""A real PostgreSQL for the test session.

``AZORA_TEST_DATABASE_URL`` (a libpq URL to a server where we may create databases) wins;
otherwise a private, throw-away cluster is started from the system binaries (or the
``pgserver`` wheel). In CI a missing PostgreSQL is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from azora_devenv.postgres import LocalPostgres
from tests.support.require import in_ci, missing_dependency

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresServer:
    """Creates databases on one server and hands out their URLs."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def url(self, dbname: str) -> str:
        parts = urlsplit(self.base_url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, ""))

    def async_url(self, dbname: str) -> str:
        return self.url(dbname).replace("postgresql://", "postgresql+asyncpg://", 1)

    def recreate_database(self, dbname: str) -> str:
        assert _NAME.match(dbname), dbname

        async def run() -> None:
            conn = await asyncpg.connect(self.url("postgres"))
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
                await conn.execute(f'CREATE DATABASE "{dbname}"')
            finally:
                await conn.close()

        asyncio.run(run())
        return self.url(dbname)


@contextmanager
def postgres_server(work_dir: Path) -> Iterator[PostgresServer]:
    external = os.environ.get("AZORA_TEST_DATABASE_URL")
    if external:
        yield PostgresServer(external.replace("postgresql+asyncpg://", "postgresql://", 1))
        return
    try:
        server = LocalPostgres(work_dir / "pgdata", fast=True)
        server.start()
    except Exception as exc:
        if in_ci():
            raise
        missing_dependency(f"no PostgreSQL available: {exc}")
    try:
        yield PostgresServer(server.url("postgres"))
    finally:
        server.stop()
