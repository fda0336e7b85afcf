"""Async engine, session factory and the per-request session dependency."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated

import asyncpg
import orjson
from fastapi import Depends, Request
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from azora_common.settings import ServiceSettings

# Stable constraint names so Alembic migrations and error mapping can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def make_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


Driver = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]


def _json_dumps(value: object) -> str:
    return orjson.dumps(value, default=str).decode()


class Database:
    """Owns the engine and the session factory of one service process."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.url = settings.database_url
        self.engine: AsyncEngine = create_async_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            # No pre-ping: it costs a round trip per checkout. A connection that died is
            # discarded by the pool on its first error, and the request fails cleanly.
            pool_recycle=1800,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            connect_args={"server_settings": {"application_name": settings.service_name}},
        )
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        # For statements sent as they are, without a session (a hot path's one statement, a
        # ledger writer's own transaction). A test's rolled-back connection replaces both seams.
        self.driver: Driver = self.pooled_driver

    @contextlib.asynccontextmanager
    async def pooled_driver(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection's asyncpg connection: each statement sent on it is its own
        transaction (autocommit; no BEGIN/COMMIT round trips) unless the caller begins one,
        and giving the connection back sends nothing."""
        async with self.engine.connect() as connection, driver_of(connection) as driver:
            yield driver

    async def dispose(self) -> None:
        await self.engine.dispose()


@contextlib.asynccontextmanager
async def driver_of(connection: AsyncConnection) -> AsyncIterator[asyncpg.Connection]:
    """The asyncpg connection under a SQLAlchemy connection, for statements sent as they are
    (inside its transaction, if one was begun)."""
    raw = await connection.get_raw_connection()
    try:
        yield raw.driver_connection
    except (asyncpg.InterfaceError, OSError):
        await _discard(connection)
        raise
    except Exception:
        raise  # the server answered, or the caller refused something: the connection is fine
    except BaseException:  # cancelled in the middle of a call
        await _discard(connection)
        raise


async def _discard(connection: AsyncConnection) -> None:
    # A dead socket or a cancelled call, which SQLAlchemy did not see (we bypassed it): the pool
    # discards this connection instead of handing it out again.
    await connection.invalidate()


@contextlib.asynccontextmanager
async def session_driver(session: AsyncSession) -> AsyncIterator[asyncpg.Connection]:
    """``driver_of`` the session's connection: statements inside the session's transaction."""
    async with driver_of(await session.connection()) as driver:
        yield driver


async def get_database(request: Request) -> Database:
    # async on purpose: a sync dependency would hop to the threadpool on every request.
    db: Database = request.app.state.db
    return db


@contextlib.asynccontextmanager
async def unit_of_work(db: Database) -> AsyncIterator[AsyncSession]:
    """A session committed when the block ends, rolled back when it raises.

    What :data:`SessionDep` gives a FastAPI route, for code outside the dependency system (the
    plain hot-path routes). Services and repositories never commit: the caller's block is the
    unit of work.
    """
    async with db.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


async def get_session(
    db: Annotated[Database, Depends(get_database)],
) -> AsyncIterator[AsyncSession]:
    """One session per request: the request is the unit of work."""
    async with unit_of_work(db) as session:
        yield session


DatabaseDep = Annotated[Database, Depends(get_database)]
# scope="function": the commit happens before the response is sent, so a client never sees a
# success for a transaction that then failed to commit (the default scope ends after sending).
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
