"""All SQL of azora-orchestrator."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from azora_common.admin_store import AdminStore
from azora_orchestrator.models import route_revision, routes

ROUTES_CHANNEL = "azora_orchestrator_routes"


async def next_revision(session: AsyncSession) -> int:
    return int((await session.execute(sa.select(route_revision.next_value()))).scalar_one())


# AIModelRoutes as the operator writes them (generation-stamped, see azora_common.admin_store).
ROUTES = AdminStore(kind="route", table=routes, next_revision=next_revision, channel=ROUTES_CHANNEL)


async def model_owner(session: AsyncSession, model: str) -> Row[Any] | None:
    return (
        await session.execute(
            sa.select(routes.c.namespace, routes.c.name).where(routes.c.model == model)
        )
    ).first()


async def load_routes(conn: AsyncConnection) -> list[Row[Any]]:
    return list((await conn.execute(sa.select(routes))).all())
