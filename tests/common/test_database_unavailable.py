"""A lost database connection (PostgreSQL restarted while a pooled connection sat idle) is a
503 ``database-unavailable`` with ``Retry-After``, not a 500: the request did not commit, and
a client may retry it (found by the fault suite: a GET right after a PostgreSQL restart drew a
dead pooled connection and answered 500)."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError, IntegrityError

from azora_common.errors import PROBLEM_BASE, database_unavailable, install_problem_handlers


def _closed() -> DBAPIError:
    try:
        raise asyncpg.InterfaceError("connection is closed")
    except asyncpg.InterfaceError as exc:
        return DBAPIError("SELECT 1", None, exc, connection_invalidated=True)


ERRORS: dict[str, BaseException] = {
    "sqlalchemy-invalidated": _closed(),
    "asyncpg-closed": asyncpg.InterfaceError("connection is closed"),
    "asyncpg-gone": asyncpg.ConnectionDoesNotExistError("connection was closed"),
    "starting-up": asyncpg.CannotConnectNowError("the database system is starting up"),
    "refused": ConnectionRefusedError(111, "Connection refused"),
}


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/lost/{name}")
    async def lost(name: str) -> None:
        raise ERRORS[name]

    @app.get("/broken")
    async def broken() -> None:
        raise IntegrityError("INSERT", None, asyncpg.UniqueViolationError("duplicate key"))

    return app


@pytest.mark.parametrize("name", sorted(ERRORS))
async def test_lost_connection_is_503_with_retry_after(name: str) -> None:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        resp = await client.get(f"/lost/{name}")
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == "1"
    assert resp.json()["type"] == PROBLEM_BASE + "database-unavailable"


async def test_other_database_errors_are_not_called_unavailable() -> None:
    assert not database_unavailable(
        IntegrityError("INSERT", None, asyncpg.UniqueViolationError("duplicate key"))
    )
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        resp = await client.get("/broken")
    assert resp.status_code != 503
