"""All SQL of azora-orchestrator."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from azora_common.admin_store import AdminStore
from azora_orchestrator.models import key_revision, key_state, route_revision, routes, virtual_keys

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


# -- virtual keys --------------------------------------------------------------------------------

KEYS_CHANNEL = "azora_orchestrator_keys"


async def _next_key_revision(session: AsyncSession) -> int:
    return int((await session.execute(sa.select(key_revision.next_value()))).scalar_one())


async def insert_key(session: AsyncSession, **values: Any) -> Row[Any]:
    revision = await _next_key_revision(session)
    await session.execute(sa.insert(key_state).values(key_id=values["id"]))
    return (
        await session.execute(
            sa.insert(virtual_keys).values(revision=revision, **values).returning(virtual_keys)
        )
    ).one()


async def update_key(session: AsyncSession, key_id: str, **values: Any) -> Row[Any]:
    revision = await _next_key_revision(session)
    return (
        await session.execute(
            sa.update(virtual_keys)
            .where(virtual_keys.c.id == key_id)
            .values(revision=revision, **values)
            .returning(virtual_keys)
        )
    ).one()


async def get_key(session: AsyncSession, key_id: str) -> Row[Any] | None:
    return (
        await session.execute(sa.select(virtual_keys).where(virtual_keys.c.id == key_id))
    ).first()


async def list_keys(session: AsyncSession, team: str | None) -> list[Row[Any]]:
    query = sa.select(virtual_keys).order_by(virtual_keys.c.created_at, virtual_keys.c.id)
    if team is not None:
        query = query.where(virtual_keys.c.team == team)
    return list((await session.execute(query)).all())


async def key_state_of(session: AsyncSession, key_id: str) -> Row[Any] | None:
    return (await session.execute(sa.select(key_state).where(key_state.c.key_id == key_id))).first()


async def load_active_keys(conn: AsyncConnection) -> list[Row[Any]]:
    """Keys not revoked (expired ones too: admission refuses them by the clock)."""
    return list(
        (
            await conn.execute(sa.select(virtual_keys).where(virtual_keys.c.revoked_at.is_(None)))
        ).all()
    )


# -- usage and settlements (asyncpg, the usage writer's transaction) ------------------------------

USAGE_COLUMNS = [
    "ts", "key_id", "team", "route", "backend", "model", "status", "outcome",
    "prompt_tokens", "completion_tokens", "cost", "currency", "latency_ms", "ttft_ms", "replica",
]  # fmt: skip

# Per key: add the settled cost, correct the tokens/min bucket, and release the reservations of
# the batch's newest window if it is still the key's current window (a reset already cleared
# older ones).
SETTLE_SQL = """
UPDATE key_state k SET
    spent = k.spent + d.cost,
    total_spent = k.total_spent + d.cost,
    tk_level = k.tk_level - d.tokens,
    reserved = CASE WHEN k.window_start = d.ws THEN greatest(0, k.reserved - d.released)
                    ELSE k.reserved END
FROM unnest($1::text[], $2::bigint[], $3::float8[], $4::timestamptz[], $5::bigint[])
    AS d(key_id, cost, tokens, ws, released)
WHERE k.key_id = d.key_id
"""
