"""All SQL of azora-pricing."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from azora_common.admin_store import AdminStore
from azora_common.changes import CHANNEL as INSIGHT_CHANNEL
from azora_pricing.models import (
    pricing_policies,
    pricing_rules,
    pricing_state,
    products,
    promotions,
    quotes,
    redemptions,
    rule_revisions,
)

Executor = AsyncSession | AsyncConnection


# --- revisions ------------------------------------------------------------------------------


async def bump_revision(session: AsyncSession) -> int:
    # The UPDATE locks the single state row until commit: concurrent writers queue here, so
    # revisions are handed out in commit order and a listener never sees N+1 before N.
    result = await session.execute(
        sa.update(pricing_state)
        .where(pricing_state.c.id == 1)
        .values(revision=pricing_state.c.revision + 1)
        .returning(pricing_state.c.revision)
    )
    return int(result.scalar_one())


async def current_revision(executor: Executor) -> int:
    result = await executor.execute(
        sa.select(pricing_state.c.revision).where(pricing_state.c.id == 1)
    )
    return int(result.scalar_one())


async def lock_key(session: AsyncSession, kind: str, key: str) -> None:
    """Serialise writers of one logical key (which may not have a row yet) until commit."""
    await session.execute(
        sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(f"{kind}:{key}", 0)))
    )


# --- products -------------------------------------------------------------------------------


async def all_products(executor: Executor) -> Sequence[Row[Any]]:
    return (await executor.execute(sa.select(products))).all()


async def get_product(session: AsyncSession, sku: str) -> Row[Any] | None:
    return (await session.execute(sa.select(products).where(products.c.sku == sku))).first()


async def list_products(session: AsyncSession, *, after: str | None, limit: int) -> list[Row[Any]]:
    query = sa.select(products).order_by(products.c.sku).limit(limit)
    if after is not None:
        query = query.where(products.c.sku > after)
    return list((await session.execute(query)).all())


async def upsert_product(
    session: AsyncSession,
    *,
    sku: str,
    name: str,
    labels: list[str],
    active: bool,
    prices: dict[str, Any],
    revision: int,
    now: datetime,
) -> tuple[Row[Any], bool]:
    stmt = insert(products).values(
        sku=sku,
        name=name,
        labels=labels,
        active=active,
        prices=prices,
        revision=revision,
        created_at=now,
        updated_at=now,
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=[products.c.sku],
        set_={
            "name": stmt.excluded.name,
            "labels": stmt.excluded.labels,
            "active": stmt.excluded.active,
            "prices": stmt.excluded.prices,
            "revision": stmt.excluded.revision,
            "updated_at": stmt.excluded.updated_at,
        },
    ).returning(*products.c, (sa.literal_column("xmax") == 0).label("inserted"))
    row = (await session.execute(upsert)).one()
    return row, bool(row.inserted)


# --- rules ----------------------------------------------------------------------------------


async def all_rules(executor: Executor) -> Sequence[Row[Any]]:
    return (await executor.execute(sa.select(pricing_rules))).all()


def policy_store(channel: str) -> AdminStore:
    """PricingPolicies as the operator writes them (generation-stamped, see azora_common)."""
    return AdminStore(
        kind="pricing-policy", table=pricing_policies, next_revision=bump_revision, channel=channel
    )


async def all_policies(executor: Executor) -> Sequence[Row[Any]]:
    return (await executor.execute(sa.select(pricing_policies))).all()


def rule_store(channel: str) -> AdminStore:
    """PricingRules as the operator writes them (generation-stamped, see azora_common)."""
    return AdminStore(
        kind="pricing-rule", table=pricing_rules, next_revision=bump_revision, channel=channel
    )


async def record_rule_revision(
    session: AsyncSession,
    revision: int,
    namespace: str,
    name: str,
    generation: int,
    spec: dict[str, Any] | None,
    now: datetime,
) -> None:
    """Keep every stored change (``spec`` None: deleted), so a quote's recorded revisions can be
    looked up later."""
    await session.execute(
        sa.insert(rule_revisions).values(
            revision=revision,
            namespace=namespace,
            name=name,
            generation=generation,
            spec=spec,
            created_at=now,
        )
    )


# --- promotions -----------------------------------------------------------------------------


async def get_promotion(session: AsyncSession, code: str) -> Row[Any] | None:
    return (await session.execute(sa.select(promotions).where(promotions.c.code == code))).first()


async def lock_promotion(session: AsyncSession, code: str) -> Row[Any] | None:
    return (
        await session.execute(
            sa.select(promotions).where(promotions.c.code == code).with_for_update()
        )
    ).first()


async def upsert_promotion(
    session: AsyncSession,
    *,
    code: str,
    namespace: str,
    name: str,
    max_redemptions: int | None,
    per_customer_limit: int | None,
    first_purchase_only: bool,
    now: datetime,
) -> None:
    stmt = insert(promotions).values(
        code=code,
        rule_namespace=namespace,
        rule_name=name,
        max_redemptions=max_redemptions,
        per_customer_limit=per_customer_limit,
        first_purchase_only=first_purchase_only,
        updated_at=now,
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[promotions.c.code],
            set_={
                "rule_namespace": stmt.excluded.rule_namespace,
                "rule_name": stmt.excluded.rule_name,
                "max_redemptions": stmt.excluded.max_redemptions,
                "per_customer_limit": stmt.excluded.per_customer_limit,
                "first_purchase_only": stmt.excluded.first_purchase_only,
                "updated_at": stmt.excluded.updated_at,
            },
        )
    )


async def count_redemptions(
    session: AsyncSession, code: str, customer_id: str | None = None
) -> int:
    query = sa.select(sa.func.count()).select_from(redemptions).where(redemptions.c.code == code)
    if customer_id is not None:
        query = query.where(redemptions.c.customer_id == customer_id)
    return int((await session.execute(query)).scalar_one())


async def insert_redemption(
    session: AsyncSession, *, code: str, quote_id: uuid.UUID, customer_id: str | None, now: datetime
) -> None:
    await session.execute(
        sa.insert(redemptions).values(
            code=code, quote_id=quote_id, customer_id=customer_id, created_at=now
        )
    )
    # The rule's redemption count changed: its status says so within seconds (changes.py),
    # delivered on commit, so a refused acceptance announces nothing.
    await session.execute(
        sa.select(
            sa.func.pg_notify(
                INSIGHT_CHANNEL,
                sa.func.concat(
                    "pricing-rules/", promotions.c.rule_namespace, "/", promotions.c.rule_name
                ),
            )
        ).where(promotions.c.code == code)
    )


async def customer_has_purchase(session: AsyncSession, customer_id: str) -> bool:
    query = sa.select(
        sa.exists().where(quotes.c.customer_id == customer_id, quotes.c.status == "accepted")
    )
    return bool((await session.execute(query)).scalar_one())


# --- quotes ---------------------------------------------------------------------------------


async def insert_quote(session: AsyncSession, **values: Any) -> int:
    """Insert a quote; returns the service revision this transaction sees (same round trip)."""
    revision = sa.select(pricing_state.c.revision).where(pricing_state.c.id == 1).scalar_subquery()
    result = await session.execute(sa.insert(quotes).values(**values).returning(revision))
    return int(result.scalar_one())


@dataclass(frozen=True, slots=True)
class QuoteRow:
    """An open quote as the hot path stores it: JSON already serialised, id as text."""

    id: str
    customer_id: str | None
    currency: str
    total: int
    codes_json: str
    request_json: str
    result_json: str
    snapshot_revision: int
    created_at: datetime
    expires_at: datetime


# The hot path's INSERT, on the asyncpg connection itself (no statement compilation, JSON
# serialised once by the caller). It stores a quote only if the service revision is still the
# one the quote was priced at: the check and the write are one statement, so a replica whose
# snapshot is behind a committed write never stores a quote that ignores it (the caller then
# takes the full path, which reloads). One round trip, no transaction around it: autocommit,
# so a quote is durable when the statement returns. Several quotes go in one statement
# (quote_writer.py): each is checked against the revision it was priced at, and the statement
# starts after every one of them was priced, so a write committed before a quote's request
# arrived is always seen by the check.
_INSERT_QUOTES_IF_CURRENT = """
INSERT INTO quotes (id, status, customer_id, currency, total, codes, request, result,
                    snapshot_revision, created_at, expires_at)
SELECT q.id, 'open', q.customer_id, q.currency, q.total, q.codes::jsonb, q.request::jsonb,
       q.result::jsonb, q.snapshot_revision, q.created_at, q.expires_at
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
            $7::text[], $8::bigint[], $9::timestamptz[], $10::timestamptz[])
       AS q(id, customer_id, currency, total, codes, request, result, snapshot_revision,
            created_at, expires_at)
JOIN pricing_state s ON s.id = 1 AND s.revision = q.snapshot_revision
RETURNING id::text
"""


async def insert_quotes_if_current(conn: asyncpg.Connection, rows: Sequence[QuoteRow]) -> set[str]:
    """Insert open quotes unless the stored revision moved past theirs; the ids stored."""
    stored = await conn.fetch(
        _INSERT_QUOTES_IF_CURRENT,
        [r.id for r in rows],
        [r.customer_id for r in rows],
        [r.currency for r in rows],
        [r.total for r in rows],
        [r.codes_json for r in rows],
        [r.request_json for r in rows],
        [r.result_json for r in rows],
        [r.snapshot_revision for r in rows],
        [r.created_at for r in rows],
        [r.expires_at for r in rows],
    )
    return {record[0] for record in stored}


async def insert_quote_if_current(conn: asyncpg.Connection, row: QuoteRow) -> bool:
    """One quote through the same statement (a request on its own session's connection)."""
    return bool(await insert_quotes_if_current(conn, (row,)))


async def update_quote_result(session: AsyncSession, quote_id: uuid.UUID, **values: Any) -> None:
    await session.execute(sa.update(quotes).where(quotes.c.id == quote_id).values(**values))


async def get_quote(
    session: AsyncSession, quote_id: uuid.UUID, *, for_update: bool = False
) -> Row[Any] | None:
    query = sa.select(quotes).where(quotes.c.id == quote_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def mark_accepted(
    session: AsyncSession, quote_id: uuid.UUID, *, now: datetime, response: dict[str, Any]
) -> None:
    await session.execute(
        sa.update(quotes)
        .where(quotes.c.id == quote_id)
        .values(status="accepted", accepted_at=now, accept_response=response)
    )
