"""Virtual keys: issued, listed, rotated and revoked through the admin API; the data plane
authenticates them from an in-memory snapshot.

A key's secret (``sk-azora-`` + 43 URL-safe characters, 256 random bits) is shown once, in the
answer that creates or rotates it; the database keeps only its SHA-256. With that much entropy
a plain hash is enough (nothing to brute-force, no salt or slow hash needed) and the data plane
finds a key with one dictionary lookup of the digest: no database call to authenticate.

Every change takes the next key revision and is announced with ``NOTIFY`` in the writing
transaction; each replica's listener then reloads the active keys and swaps the snapshot in
with one assignment (milliseconds after the commit), so a revoked key is refused everywhere
well within a second. Expiry needs no notification: the snapshot holds the expiry time and
admission compares it with the clock on every request.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from azora_common.errors import Conflict, NotFound
from azora_common.listener import notify
from azora_orchestrator import repository
from azora_orchestrator.schemas import (
    KeyBudget,
    KeyCreate,
    KeyCreated,
    KeySpend,
    KeyView,
    parse_duration,
)

KEY_PREFIX = "sk-azora-"
TOKENS = "tokens"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What the data plane needs of an active key."""

    id: str
    team: str
    models: frozenset[str] | None  # None: every model
    rpm: int
    tpm: int
    budget: int  # 0: no budget
    unit: str | None  # currency code or "tokens"
    period_s: int
    expires: float  # Unix time; inf when it never expires

    @property
    def shared(self) -> bool:
        """Whether admission needs the shared state (limits or a budget)."""
        return bool(self.rpm or self.tpm or self.budget)


def hash_secret(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_info(row: Any) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        team=row.team,
        models=frozenset(row.models) if row.models else None,
        rpm=row.requests_per_minute or 0,
        tpm=row.tokens_per_minute or 0,
        budget=row.budget_amount or 0,
        unit=row.budget_unit,
        period_s=row.budget_period_s or 0,
        expires=row.expires_at.timestamp() if row.expires_at is not None else math.inf,
    )


def snapshot(rows: list[Any]) -> dict[bytes, KeyInfo]:
    return {bytes(row.secret_hash): key_info(row) for row in rows}


# -- admin rules ---------------------------------------------------------------------------------


def _state(row: Any, now: datetime) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"


def view(row: Any) -> KeyView:
    budget = None
    if row.budget_amount is not None:
        budget = KeyBudget(
            amount=row.budget_amount, unit=row.budget_unit, period=f"{row.budget_period_s}s"
        )
    return KeyView(
        id=row.id,
        prefix=row.prefix,
        team=row.team,
        owner=row.owner,
        models=list(row.models),
        requests_per_minute=row.requests_per_minute,
        tokens_per_minute=row.tokens_per_minute,
        budget=budget,
        expires_at=row.expires_at,
        metadata=row.metadata,
        created_at=row.created_at,
        rotated_at=row.rotated_at,
        revoked_at=row.revoked_at,
        state=_state(row, datetime.now(UTC)),  # type: ignore[arg-type]
    )


async def create_key(session: AsyncSession, body: KeyCreate) -> KeyCreated:
    secret = new_secret()
    key_id = "vk_" + secrets.token_hex(8)
    budget = body.budget
    row = await repository.insert_key(
        session,
        id=key_id,
        secret_hash=hash_secret(secret.encode()),
        prefix=secret[: len(KEY_PREFIX) + 4],
        team=body.team,
        owner=body.owner,
        models=body.models,
        requests_per_minute=body.requests_per_minute,
        tokens_per_minute=body.tokens_per_minute,
        budget_amount=budget.amount if budget else None,
        budget_unit=budget.unit if budget else None,
        budget_period_s=int(parse_duration(budget.period)) if budget else None,
        expires_at=body.expires_at,
        metadata=body.metadata,
        created_at=datetime.now(UTC),
    )
    await notify(session, repository.KEYS_CHANNEL, str(row.revision))
    return KeyCreated(**view(row).model_dump(), key=secret)


async def get_key(session: AsyncSession, key_id: str) -> KeyView:
    return view(await _stored(session, key_id))


async def _stored(session: AsyncSession, key_id: str) -> Any:
    row = await repository.get_key(session, key_id)
    if row is None:
        raise NotFound(f"key {key_id} does not exist")
    return row


async def list_keys(session: AsyncSession, team: str | None) -> list[KeyView]:
    return [view(row) for row in await repository.list_keys(session, team)]


async def rotate_key(session: AsyncSession, key_id: str) -> KeyCreated:
    """A new secret for the same key (limits, budget and spend stay); the old one stops
    working on every replica as soon as the change is announced."""
    row = await _stored(session, key_id)
    if row.revoked_at is not None:
        raise Conflict(f"key {key_id} is revoked; create a new key")
    secret = new_secret()
    row = await repository.update_key(
        session,
        key_id,
        secret_hash=hash_secret(secret.encode()),
        prefix=secret[: len(KEY_PREFIX) + 4],
        rotated_at=datetime.now(UTC),
    )
    await notify(session, repository.KEYS_CHANNEL, str(row.revision))
    return KeyCreated(**view(row).model_dump(), key=secret)


async def revoke_key(session: AsyncSession, key_id: str) -> KeyView:
    """Idempotent: revoking a revoked key answers it as it is."""
    row = await _stored(session, key_id)
    if row.revoked_at is None:
        row = await repository.update_key(session, key_id, revoked_at=datetime.now(UTC))
        await notify(session, repository.KEYS_CHANNEL, str(row.revision))
    return view(row)


async def key_spend(session: AsyncSession, key_id: str) -> KeySpend:
    row = await _stored(session, key_id)
    st = await repository.key_state_of(session, key_id)
    spent = reserved = total = 0
    start = resets = None
    if st is not None:
        spent, reserved, total = int(st.spent), int(st.reserved), int(st.total_spent)
        start = st.window_start
        period = row.budget_period_s
        if period and start is not None:
            now = datetime.now(UTC).timestamp()
            if now >= start.timestamp() + period:  # the window is over; the next call resets
                spent = reserved = 0
                start = datetime.fromtimestamp(now // period * period, UTC)
            resets = datetime.fromtimestamp(start.timestamp() + period, UTC)
    budget = row.budget_amount
    return KeySpend(
        id=key_id,
        unit=row.budget_unit,
        budget=budget,
        window_start=start if period_set(row) else None,
        resets_at=resets,
        spent=spent,
        reserved=reserved,
        remaining=None if budget is None else max(0, budget - spent - reserved),
        total_spent=total,
    )


def period_set(row: Any) -> bool:
    return bool(row.budget_period_s)
