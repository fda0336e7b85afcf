"""Cohorts as the operator configures them: ``PUT``/``DELETE``/``GET /admin/v1/cohorts``.

The generation rules (stale, replay, a new object by ``uid``), the per-key lock and the
``NOTIFY`` are the shared admin store's (``azora_common.admin_store``, ``repo.cohort_store``).
What is the cohort's own stays here: the spec's semantic checks, whether azora-pricing can
price it (``priceability.check``, asked before any lock), the capacity that may not drop
below the seats taken, the waitlist re-prioritised when its rules change, promotion when a
change makes room, and the soft delete (enrollments and history stay; a later PUT brings the
cohort back with them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from azora_common.admin_store import ConfigWritten, StoredConfig, check_generation, listing_item
from azora_enrollment import lifecycle, priceability
from azora_enrollment import repository as repo
from azora_enrollment.errors import InvalidSpec
from azora_enrollment.outbox import PaymentClient
from azora_enrollment.schemas import CohortPut
from azora_enrollment.spec import parse_spec, spec_of

store = repo.cohort_store


async def put_cohort(
    session: AsyncSession,
    namespace: str,
    name: str,
    put: CohortPut,
    now: datetime,
    pricing_client: PaymentClient,
) -> ConfigWritten:
    spec = parse_spec(put.spec, namespace=namespace, name=name)
    stored_spec = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    # Ask azora-pricing before any lock is taken (no lock, no pool connection is held across
    # a network call; the session has not touched the database yet).
    verdict = None
    if spec.pricing is not None:
        verdict = await priceability.check(pricing_client, spec.pricing)
    pricing_columns = verdict.columns(now) if verdict is not None else priceability.NOT_PRICED
    # The key lock first (two first PUTs must not both insert), then the cohort row lock: the
    # capacity check and promotion below need the counts to hold until commit.
    await store.lock(session, namespace, name)
    existing = await repo.lock_cohort(session, namespace, name, include_deleted=True)
    stored = None
    if existing is not None:
        stored = StoredConfig(
            uid=existing.uid,
            generation=existing.generation,
            revision=existing.revision,
            spec=existing.spec,
            live=existing.deleted_at is None,
        )
    replay = check_generation(stored, put, stored_spec)
    if verdict is not None and verdict.state == priceability.REFUSED:
        # Also for a replay: the spec is stored, but pricing cannot serve it (any more); the
        # operator shows the reason in Ready=False. Nothing is written.
        assert spec.pricing is not None
        raise priceability.spec_refusal(verdict, spec.pricing)
    if replay is not None:
        if (
            verdict is not None
            and existing is not None
            and existing.pricing_state != verdict.state
            and (verdict.state == priceability.VERIFIED or existing.pricing_state is None)
        ):
            # Better knowledge than the stored one; not a new revision (the spec is the same,
            # and leaving "refused" is re-read by the hot path anyway).
            await repo.update_cohort(session, existing.id, **pricing_columns)
        return replay
    if existing is None:
        revision = await store.next_revision(session)
        await repo.insert_cohort(
            session,
            namespace=namespace,
            name=name,
            uid=put.uid,
            generation=put.generation,
            revision=revision,
            spec=stored_spec,
            capacity=spec.capacity,
            now=now,
            **pricing_columns,
        )
        await store.publish(session, f"{namespace}/{name}")
        return ConfigWritten(revision=revision, generation=put.generation)
    if spec.capacity is not None and spec.capacity < existing.seats_taken:
        # Shrinking below the seats already held would mean evicting students; we refuse and
        # let a person drop enrollments first (the database CHECK would refuse it too).
        raise InvalidSpec(
            "CapacityBelowEnrolled",
            f"capacity {spec.capacity} is below the {existing.seats_taken} seats already taken",
            seats_taken=existing.seats_taken,
        )
    old_spec = spec_of(existing)
    if (
        verdict is not None
        and verdict.state == priceability.UNVERIFIED
        and existing.pricing_state == priceability.REFUSED
        and old_spec.pricing == spec.pricing
    ):
        # Pricing said "no" to this product and currency and cannot be asked now: keep the
        # "no" (the background re-check lifts it).
        pricing_columns = {}
    revision = await store.next_revision(session)
    await repo.update_cohort(
        session,
        existing.id,
        uid=put.uid,
        generation=put.generation,
        revision=revision,
        spec=stored_spec,
        capacity=spec.capacity,
        deleted_at=None,
        updated_at=now,
        **pricing_columns,
    )
    if old_spec.waitlist.priorities() != spec.waitlist.priorities():
        rules, default = spec.waitlist.priorities()
        await repo.reprioritise_waitlist(session, existing.id, rules, default)
    existing.capacity = spec.capacity
    existing.revision = revision
    # More capacity (or looser eligibility) lets the waitlist move now, in this transaction.
    await lifecycle.expire_due_offers(session, existing, spec, now)
    await lifecycle.promote(session, existing, spec, now, reason="cohort spec changed")
    await store.publish(session, f"{namespace}/{name}")
    return ConfigWritten(revision=revision, generation=put.generation)


async def delete_cohort(session: AsyncSession, namespace: str, name: str, now: datetime) -> None:
    # Soft delete: enrollments and their history stay (nothing is lost); new enrollment
    # requests see 404. A later PUT brings the cohort back with its enrollments.
    await store.lock(session, namespace, name)
    existing = await repo.lock_cohort(session, namespace, name)
    if existing is None:
        return
    revision = await store.next_revision(session)
    await repo.update_cohort(
        session, existing.id, deleted_at=now, revision=revision, updated_at=now
    )
    await store.publish(session, f"{namespace}/{name}")


async def list_cohorts(session: AsyncSession) -> list[dict[str, Any]]:
    return [listing_item(row) for row in await repo.list_cohorts(session)]
