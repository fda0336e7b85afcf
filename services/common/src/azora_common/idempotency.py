"""``Idempotency-Key`` support, stored in the service's own database.

The key row is inserted in the same transaction as the effect. A concurrent duplicate blocks on
the primary-key index until the first transaction ends: if it committed, the duplicate finds the
stored response and replays it; if it rolled back, the duplicate runs as if it were first. So
exactly one request produces the effect, without an ``in progress`` state that could leak.

What is stored (docs/idempotency.md; Stripe's rule, adapted to one transaction):

- every answer of a request that began executing, i.e. passed parsing, authentication and
  schema validation and reached the service's logic: successes and business-rule refusals
  (a :class:`ProblemError` below 500: ``cohort-full``, ``balance-constraint-violated`` ...).
  A refusal's partial effects are rolled back to a savepoint taken after the key was claimed,
  so the key row holds the refusal and nothing else is written;
- never a validation failure (malformed body, schema 422, 401/403): those are answered before
  the key is claimed, so a corrected request may reuse the key;
- never a server error (5xx, an unexpected exception): unlike Stripe, the key and the effect
  share one transaction, so a server error leaves nothing behind, and the retry runs afresh.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
import sqlalchemy as sa
from fastapi import Header
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from azora_common.errors import ProblemError, problem_response

IDEMPOTENCY_TABLE = "idempotency_keys"
REPLAYED_HEADER = "Idempotent-Replayed"

IdempotencyKeyDep = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Makes the request safe to retry: same key and body replay the first response.",
    ),
]

_meta = sa.MetaData()
idempotency_keys = sa.Table(
    IDEMPOTENCY_TABLE,
    _meta,
    sa.Column("scope", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("request_hash", sa.Text, nullable=False),
    sa.Column("request_body", JSONB, nullable=False),
    sa.Column("response_status", sa.SmallInteger, nullable=False),
    sa.Column("response_body", JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


def create_idempotency_table() -> None:
    """Call from a service's initial Alembic migration."""
    from alembic import op

    op.create_table(
        IDEMPOTENCY_TABLE,
        sa.Column("scope", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("request_hash", sa.Text, nullable=False),
        sa.Column("request_body", JSONB, nullable=False),
        sa.Column("response_status", sa.SmallInteger, nullable=False),
        sa.Column("response_body", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_idempotency_keys_created_at", IDEMPOTENCY_TABLE, ["created_at"])


class IdempotencyKeyReused(ProblemError):
    status = 422
    type_slug = "idempotency-key-reused"
    title = "Idempotency key reused with a different request"


def _canonical(body: Any) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS, default=str)


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}[{i}]", out)
        if not value:
            out[prefix] = []
    else:
        out[prefix] = value


def differing_fields(first: Any, second: Any) -> list[str]:
    """Dotted paths whose values differ between two JSON documents."""
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    _flatten(first, "", a)
    _flatten(second, "", b)
    return sorted(k or "body" for k in a.keys() | b.keys() if a.get(k, ...) != b.get(k, ...))


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(_json(body), status_code=status, media_type="application/json", headers=headers)


def _json(body: Any) -> bytes:
    return orjson.dumps(body, default=str)


Handler = Callable[[], Awaitable[tuple[int, Any]]]


async def run_idempotent(
    session: AsyncSession,
    *,
    key: str | None,
    scope: str,
    request_body: Any,
    handler: Handler,
    retention: timedelta = timedelta(hours=24),
    instance: str | None = None,
) -> Response:
    """Run ``handler`` at most once per (scope, key); replay its response for retries.

    ``request_body`` must be the JSON-able request (e.g. ``model.model_dump(mode="json")``).
    ``handler`` returns ``(status_code, json_body)``. A :class:`ProblemError` below 500 raised
    by it is a refusal: its effects are rolled back, the problem is stored under the key and
    answered (``instance`` is the problem's ``instance``). Any other error rolls the request's
    transaction back, the key with it, so the request can be retried with the same key.
    """
    if key is None:
        status, body = await handler()
        return json_response(status, body)

    canonical = _canonical(request_body)
    digest = hashlib.sha256(canonical).hexdigest()
    now = datetime.now(UTC)
    # One round trip: insert the key, or take over a key older than the retention window (it
    # is forgotten). No row back means a live key: replay it or refuse a different body. The
    # placeholder response is overwritten below in this same transaction, so never visible.
    stmt = insert(idempotency_keys).values(
        scope=scope,
        key=key,
        request_hash=digest,
        request_body=orjson.loads(canonical),
        response_status=0,
        response_body={},
        created_at=now,
    )
    inserted = await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[idempotency_keys.c.scope, idempotency_keys.c.key],
            set_={
                "request_hash": stmt.excluded.request_hash,
                "request_body": stmt.excluded.request_body,
                "response_status": stmt.excluded.response_status,
                "response_body": stmt.excluded.response_body,
                "created_at": stmt.excluded.created_at,
            },
            where=idempotency_keys.c.created_at < now - retention,
        ).returning(idempotency_keys.c.key)
    )
    if inserted.first() is None:
        stored = (
            await session.execute(
                sa.select(idempotency_keys).where(
                    idempotency_keys.c.scope == scope, idempotency_keys.c.key == key
                )
            )
        ).one()
        if stored.request_hash != digest:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with a different request body",
                idempotency_key=key,
                differing_fields=differing_fields(stored.request_body, orjson.loads(canonical)),
            )
        return stored_response(stored.response_status, stored.response_body, replayed=True)

    # A refusal must store its problem and nothing else: its effects go back to this savepoint,
    # taken after the key row, which stays.
    savepoint = await session.begin_nested()
    try:
        status, body = await handler()
    except ProblemError as exc:
        if exc.status >= 500:
            raise
        await savepoint.rollback()
        status, body = exc.status, exc.to_problem(instance)
    else:
        await savepoint.commit()
    await session.execute(
        sa.update(idempotency_keys)
        .where(idempotency_keys.c.scope == scope, idempotency_keys.c.key == key)
        .values(response_status=status, response_body=orjson.loads(_json(body)))
    )
    return stored_response(status, body, replayed=False)


def stored_response(status: int, body: Any, *, replayed: bool) -> Response:
    """A stored answer: a problem (status 400 up) as problem+json, anything else as JSON."""
    headers = {REPLAYED_HEADER: "true"} if replayed else None
    if status >= 400:
        return problem_response(body, headers)
    return json_response(status, body, headers)


async def purge_expired(session: AsyncSession, retention: timedelta) -> int:
    result = await session.execute(
        sa.delete(idempotency_keys).where(
            idempotency_keys.c.created_at < datetime.now(UTC) - retention
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
