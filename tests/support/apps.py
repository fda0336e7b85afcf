"""Run a service app in-process for tests.

``rollback_client``: every session of the app joins one outer transaction that is rolled back
after the test (the app's commits become savepoint releases), so ordinary tests leave nothing
behind. ``committing_client``: real commits, for concurrency tests (they clean up after
themselves or use unique data).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker

from azora_common.db import Database, driver_of

BASE_URL = "http://testserver"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    async with app.router.lifespan_context(app):
        yield app


@asynccontextmanager
async def committing_client(
    app: FastAPI, headers: dict[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, headers=headers
        ) as client:
            yield client


@asynccontextmanager
async def rollback_client(
    app: FastAPI, headers: dict[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app):
        db: Database = app.state.db
        async with db.engine.connect() as conn:
            outer = await conn.begin()
            original = db.sessionmaker, db.driver
            db.sessionmaker = async_sessionmaker(
                bind=conn, expire_on_commit=False, join_transaction_mode="create_savepoint"
            )
            db.driver = functools.partial(_savepoint_driver, conn)
            try:
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(
                    transport=transport, base_url=BASE_URL, headers=headers
                ) as client:
                    yield client
            finally:
                db.sessionmaker, db.driver = original
                await outer.rollback()


@asynccontextmanager
async def _savepoint_driver(conn: AsyncConnection) -> AsyncIterator[asyncpg.Connection]:
    """``Database.driver`` inside the test's outer transaction: each use is a savepoint (as a
    session's commit is), so a failed statement undoes only itself."""
    async with conn.begin_nested(), driver_of(conn) as driver:
        yield driver
