"""All SQL of azora-orchestrator."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from azora_orchestrator.models import route_revision, routes

ROUTES_CHANNEL = "azora_orchestrator_routes"


async def lock_route(session: AsyncSession, namespace: str, name: str) -> None:
    # Serialises writers of one route even while its row does not exist yet (a FOR UPDATE
    # would lock nothing then, and two first PUTs could both insert).
    await session.execute(
        sa.select(
            sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(f"route:{namespace}/{name}", 0))
        )
    )


async def get_route(session: AsyncSession, namespace: str, name: str) -> Row[Any] | None:
    return (
        await session.execute(
            sa.select(routes).where(routes.c.namespace == namespace, routes.c.name == name)
        )
    ).first()


async def model_owner(session: AsyncSession, model: str) -> Row[Any] | None:
    return (
        await session.execute(
            sa.select(routes.c.namespace, routes.c.name).where(routes.c.model == model)
        )
    ).first()


async def next_revision(session: AsyncSession) -> int:
    return int((await session.execute(sa.select(route_revision.next_value()))).scalar_one())


async def upsert_route(
    session: AsyncSession,
    *,
    namespace: str,
    name: str,
    uid: str,
    generation: int,
    model: str,
    spec: dict[str, Any],
    revision: int,
) -> None:
    values = {
        "namespace": namespace,
        "name": name,
        "uid": uid,
        "generation": generation,
        "model": model,
        "spec": spec,
        "revision": revision,
        "updated_at": datetime.now(UTC),
    }
    stmt = insert(routes).values(**values)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[routes.c.namespace, routes.c.name],
            set_={k: stmt.excluded[k] for k in values if k not in ("namespace", "name")},
        )
    )


async def delete_route(session: AsyncSession, namespace: str, name: str) -> bool:
    result = await session.execute(
        sa.delete(routes)
        .where(routes.c.namespace == namespace, routes.c.name == name)
        .returning(routes.c.name)
    )
    return result.first() is not None


async def list_routes(session: AsyncSession) -> list[Row[Any]]:
    return list(
        (await session.execute(sa.select(routes).order_by(routes.c.namespace, routes.c.name))).all()
    )


async def load_routes(conn: AsyncConnection) -> list[Row[Any]]:
    return list((await conn.execute(sa.select(routes))).all())
