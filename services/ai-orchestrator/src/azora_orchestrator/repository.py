"""All SQL of azora-orchestrator."""

from __future__ import annotations

from datetime import datetime
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


# -- usage reports ------------------------------------------------------------------------------

USAGE_GROUPS = {
    "key": "key_id",
    "team": "team",
    "route": "route",
    "model": "model",
    "backend": "backend",
    "none": "NULL::text",
}


async def usage_report(
    session: AsyncSession,
    *,
    start: datetime,
    end: datetime,
    bucket_s: int,
    group_by: str,
    filters: dict[str, str],
) -> list[Row[Any]]:
    """Usage per bucket and group: counts, tokens, cost per currency, latency percentiles.
    ``group_by`` and the filter names come from USAGE_GROUPS (never from the request)."""
    column = USAGE_GROUPS[group_by]
    where = ["ts >= :start", "ts < :end"]
    params: dict[str, Any] = {"start": start, "end": end, "bucket": bucket_s}
    for name, value in filters.items():
        where.append(f"{USAGE_GROUPS[name]} = :f_{name}")
        params[f"f_{name}"] = value
    sql = f"""
        SELECT to_timestamp(floor((extract(epoch FROM ts) - extract(epoch FROM
                   CAST(:start AS timestamptz))) / :bucket) * :bucket
                   + extract(epoch FROM CAST(:start AS timestamptz))) AS bucket_start,
               {column} AS grp,
               currency,
               count(*) AS requests,
               count(*) FILTER (WHERE status >= 400 AND status <> 499) AS errors,
               coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens,
               coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens,
               coalesce(sum(cost), 0)::bigint AS cost,
               percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms)
                   AS latency,
               percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ttft_ms) AS ttft
        FROM usage_events
        WHERE {" AND ".join(where)}
        GROUP BY 1, 2, 3
        ORDER BY 1, 2 NULLS FIRST, 3 NULLS FIRST
    """
    return list((await session.execute(sa.text(sql), params)).all())


async def publish_status(conn: Any, replica: str, routes: str) -> None:
    await conn.execute(
        "INSERT INTO replica_status (replica, updated_at, routes) VALUES ($1, now(), $2::jsonb)"
        " ON CONFLICT (replica) DO UPDATE SET updated_at = now(), routes = EXCLUDED.routes",
        replica,
        routes,
    )
    # Replicas gone for an hour (scaled down, restarted under a new name) are forgotten.
    await conn.execute("DELETE FROM replica_status WHERE updated_at < now() - interval '1 hour'")


async def fresh_statuses(session: AsyncSession, max_age_s: float) -> list[Row[Any]]:
    return list(
        (
            await session.execute(
                sa.text(
                    "SELECT replica, updated_at, routes FROM replica_status "
                    "WHERE updated_at > now() - make_interval(secs => :age) ORDER BY replica"
                ),
                {"age": max_age_s},
            )
        ).all()
    )
