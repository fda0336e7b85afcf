"""The generation-stamped store behind every service's admin API (ARCHITECTURE.md, "Admin API
convention"): ``PUT /admin/v1/{plural}/{namespace}/{name}`` with ``{"generation", "uid", "spec"}``.

One implementation of the rules every configuration write follows, whatever it configures:

- writers of one object are serialised by a transaction-scoped advisory lock on its key (the row
  may not exist yet, so ``FOR UPDATE`` would lock nothing and two first PUTs could both insert);
- an older generation of the same object (same ``uid``) never overwrites a newer one:
  :class:`StaleGeneration` (409, with the stored generation), which the operator treats as done;
- the same generation with the same spec is a replay: nothing is written, the stored revision
  is answered again;
- a different ``uid`` is a new object under the same name (deleted and re-created in
  Kubernetes): its generation counts from 1 again, so it is never stale;
- every accepted write takes the next revision and is announced with ``NOTIFY`` after commit, so
  every replica's listener reloads.

A service keeps what is its own: the table (:class:`AdminStore` writes the columns every config
table has — namespace, name, uid, generation, revision, spec — plus any extra values the service
passes), the semantic checks of the spec, and side effects of a change (a cohort's waitlist, a
rule's promotion code). ``uid`` may be empty for a person configuring a service without
Kubernetes (compose mode): every such write is then the same object.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from azora_common.errors import StaleGeneration
from azora_common.listener import notify

MAX_GENERATION = 2**62
_NO_NUL = r"^[^\x00]*$"


class ConfigPut(BaseModel):
    """Body of ``PUT /admin/v1/{plural}/{namespace}/{name}``."""

    model_config = ConfigDict(extra="forbid")

    generation: int = Field(
        ge=0, le=MAX_GENERATION, description="metadata.generation of the custom resource."
    )
    uid: str = Field(
        default="",
        max_length=200,
        pattern=_NO_NUL,
        description="metadata.uid of the custom resource; empty when configured by hand.",
    )
    spec: dict[str, Any] = Field(description="The custom resource's spec (camelCase fields).")


class ConfigWritten(BaseModel):
    """Answer of an accepted (or replayed) PUT."""

    revision: int
    generation: int


@dataclass(frozen=True, slots=True)
class StoredConfig:
    """What the store holds for one object, as the generation rules need it."""

    uid: str
    generation: int
    revision: int
    spec: Mapping[str, Any]
    live: bool = True  # False for a soft-deleted object that a PUT may bring back


def check_generation(
    stored: StoredConfig | None, put: ConfigPut, spec: Mapping[str, Any]
) -> ConfigWritten | None:
    """Apply the generation rules: ``None`` means write ``spec``; a :class:`ConfigWritten` is a
    replay (write nothing, answer it); an older generation of the same object raises
    :class:`StaleGeneration`. ``spec`` is the spec as the service stores it (normalised)."""
    if stored is None or stored.uid != put.uid:
        return None
    if put.generation < stored.generation:
        raise StaleGeneration(
            f"generation {put.generation} is older than the stored {stored.generation}",
            stored_generation=stored.generation,
        )
    if put.generation == stored.generation and stored.live and stored.spec == spec:
        return ConfigWritten(revision=stored.revision, generation=stored.generation)
    return None


async def lock_key(session: AsyncSession, kind: str, key: str) -> None:
    """Serialise writers of one logical key (which may not have a row yet) until commit."""
    await session.execute(
        sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(f"{kind}:{key}", 0)))
    )


@dataclass(frozen=True)
class AdminStore:
    """The generation-stamped store of one kind of configuration in one service.

    ``table`` has the columns ``namespace``, ``name``, ``uid``, ``generation``, ``revision`` and
    ``spec`` with a unique key on (namespace, name); ``next_revision`` hands out the service's
    config revisions (a sequence or a counter row); ``channel`` is the NOTIFY channel its
    listeners reload on.
    """

    kind: str
    table: sa.Table
    next_revision: Callable[[AsyncSession], Awaitable[int]]
    channel: str

    async def lock(self, session: AsyncSession, namespace: str, name: str) -> None:
        await lock_key(session, self.kind, f"{namespace}/{name}")

    async def get(self, session: AsyncSession, namespace: str, name: str) -> Row[Any] | None:
        t = self.table
        query = sa.select(t).where(t.c.namespace == namespace, t.c.name == name)
        return (await session.execute(query)).first()

    async def list(self, session: AsyncSession) -> Sequence[Row[Any]]:
        t = self.table
        return (await session.execute(sa.select(t).order_by(t.c.namespace, t.c.name))).all()

    async def write(
        self,
        session: AsyncSession,
        namespace: str,
        name: str,
        put: ConfigPut,
        spec: Mapping[str, Any],
        **extra: Any,
    ) -> ConfigWritten:
        """Insert or replace the object at the next revision (the caller holds the lock and has
        run :func:`check_generation`); ``extra`` sets the table's own columns."""
        revision = await self.next_revision(session)
        values = {
            "namespace": namespace,
            "name": name,
            "uid": put.uid,
            "generation": put.generation,
            "revision": revision,
            "spec": dict(spec),
            **extra,
        }
        stmt = insert(self.table).values(**values)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[self.table.c.namespace, self.table.c.name],
                set_={column: stmt.excluded[column] for column in values},
            )
        )
        return ConfigWritten(revision=revision, generation=put.generation)

    async def remove(
        self, session: AsyncSession, namespace: str, name: str
    ) -> ConfigWritten | None:
        """Delete the object (the caller holds the lock): the deletion's revision and the
        deleted generation, or ``None`` when it was absent (a DELETE is idempotent)."""
        t = self.table
        result = await session.execute(
            sa.delete(t)
            .where(t.c.namespace == namespace, t.c.name == name)
            .returning(t.c.generation)
        )
        deleted = result.first()
        if deleted is None:
            return None
        revision = await self.next_revision(session)
        return ConfigWritten(revision=revision, generation=int(deleted.generation))

    async def publish(self, session: AsyncSession, payload: str) -> None:
        """Announce a change; delivered to every listener when the transaction commits."""
        await notify(session, self.channel, payload)


def stored_config(row: Row[Any] | None, *, live: bool = True) -> StoredConfig | None:
    """A table row (with the standard columns) as the generation rules see it."""
    if row is None:
        return None
    return StoredConfig(
        uid=row.uid,
        generation=int(row.generation),
        revision=int(row.revision),
        spec=row.spec,
        live=live,
    )


def listing_item(row: Row[Any], spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One element of ``GET /admin/v1/{plural}``: everything stored, with generations."""
    return {
        "namespace": row.namespace,
        "name": row.name,
        "generation": int(row.generation),
        "uid": row.uid,
        "revision": int(row.revision),
        "spec": dict(row.spec if spec is None else spec),
    }
