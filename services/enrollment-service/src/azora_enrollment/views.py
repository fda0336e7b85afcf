"""What clients and the operator read: enrollments, their history, cohorts, waitlists.

Read-only: nothing here takes a lock or writes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from azora_enrollment import priceability
from azora_enrollment import repository as repo
from azora_enrollment.errors import CohortNotFound, EnrollmentNotFound
from azora_enrollment.spec import CohortSpec, spec_of


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def enrollment_view(
    row: sa.Row[Any], cohort: repo.CohortRow, position: int | None
) -> dict[str, Any]:
    payment: dict[str, Any] | None = None
    if (
        row.quote_id
        or row.charge_transaction_id
        or row.payment_error
        or (row.state == "pending_payment")
    ):
        payment = {
            "quote_id": row.quote_id,
            "amount": row.charge_amount,
            "currency": row.charge_currency,
            "transaction_id": row.charge_transaction_id,
            "charged_at": iso(row.charged_at),
            "refund_transaction_id": row.refund_transaction_id,
            "error": row.payment_error,
        }
    return {
        "id": str(row.id),
        "cohort": cohort.key,
        "student": {"id": row.student_id, "segment": row.segment},
        "state": row.state,
        "waitlist_position": position,
        "offer_expires_at": iso(row.offer_expires_at),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "seated_at": iso(row.seated_at),
        "payment": payment,
    }


async def position(
    session: AsyncSession, row: sa.Row[Any], cohort: repo.CohortRow, spec: CohortSpec
) -> int | None:
    if row.state != "waitlisted" or not spec.waitlist.position_visible:
        return None
    return await repo.waitlist_position(session, cohort.id, row.priority, row.queue_seq)


async def current_view(
    session: AsyncSession, enrollment_id: uuid.UUID, cohort: repo.CohortRow, spec: CohortSpec
) -> dict[str, Any]:
    row = await repo.get_enrollment(session, enrollment_id)
    assert row is not None
    return enrollment_view(row, cohort, await position(session, row, cohort, spec))


async def get_enrollment(session: AsyncSession, enrollment_id: uuid.UUID) -> dict[str, Any]:
    row = await repo.get_enrollment(session, enrollment_id)
    if row is None:
        raise EnrollmentNotFound(f"enrollment {enrollment_id} does not exist")
    cohort = await repo.get_cohort_by_id(session, row.cohort_id)
    assert cohort is not None  # foreign key
    return enrollment_view(row, cohort, await position(session, row, cohort, spec_of(cohort)))


async def enrollment_history(
    session: AsyncSession, enrollment_id: uuid.UUID
) -> list[dict[str, Any]]:
    rows = await repo.history(session, enrollment_id)
    if not rows:
        await get_enrollment(session, enrollment_id)  # 404 when it does not exist
    return [
        {
            "from_state": r.from_state,
            "to_state": r.to_state,
            "actor": r.actor,
            "reason": r.reason,
            "at": r.at.isoformat(),
        }
        for r in rows
    ]


async def require_cohort(session: AsyncSession, namespace: str, name: str) -> repo.CohortRow:
    cohort = await repo.get_cohort(session, namespace, name)
    if cohort is None:
        raise CohortNotFound.of(namespace, name)
    return cohort


def is_open(cohort: repo.CohortRow, spec: CohortSpec, now: datetime) -> bool:
    return cohort.capacity != 0 and spec.window_open(now)


def takes_enrollments(cohort: repo.CohortRow, spec: CohortSpec, now: datetime) -> bool:
    """Open, and not refused for pricing: what ``open`` means to a reader."""
    return is_open(cohort, spec, now) and cohort.pricing_state != priceability.REFUSED


async def cohort_status(
    session: AsyncSession, namespace: str, name: str, now: datetime
) -> dict[str, Any]:
    cohort = await require_cohort(session, namespace, name)
    counts = await repo.state_counts(session, cohort.id)
    spec = spec_of(cohort)
    return {
        "revision": cohort.revision,
        "generation": cohort.generation,
        # Seats held = enrolled + pending_payment + offered; completed students keep theirs.
        "enrolled": counts.get("enrolled", 0) + counts.get("completed", 0),
        "capacity": cohort.capacity,
        "pending_payment": counts.get("pending_payment", 0),
        "waitlisted": counts.get("waitlisted", 0),
        "offered": counts.get("offered", 0),
        "open": takes_enrollments(cohort, spec, now),
        "pricing": priceability.status(cohort, spec),
    }


async def cohort_view(
    session: AsyncSession, namespace: str, name: str, now: datetime
) -> dict[str, Any]:
    cohort = await require_cohort(session, namespace, name)
    spec = spec_of(cohort)
    return {
        "cohort": cohort.key,
        "course": spec.course,
        "title": spec.title,
        "capacity": cohort.capacity,
        "seats_taken": cohort.seats_taken,
        "waitlisted": cohort.waitlisted,
        "open": takes_enrollments(cohort, spec, now),
        "opens_at": iso(spec.opens_at),
        "closes_at": iso(spec.closes_at),
        "waitlist": {
            "enabled": spec.waitlist.enabled,
            "capacity": spec.waitlist.capacity,
            "mode": spec.waitlist.mode,
            "ordering": spec.waitlist.ordering,
        },
        "priced": spec.pricing is not None,
        "revision": cohort.revision,
    }


async def cohort_enrollments(
    session: AsyncSession,
    namespace: str,
    name: str,
    *,
    state: str | None,
    after: uuid.UUID | None,
    limit: int,
) -> dict[str, Any]:
    cohort = await require_cohort(session, namespace, name)
    rows = await repo.list_enrollments(session, cohort.id, state, after, limit)
    items = [enrollment_view(r, cohort, None) for r in rows]
    return {"items": items, "next_after": items[-1]["id"] if len(items) == limit else None}


async def cohort_waitlist(
    session: AsyncSession, namespace: str, name: str, *, limit: int, offset: int
) -> dict[str, Any]:
    cohort = await require_cohort(session, namespace, name)
    rows = await repo.waitlist_entries(session, cohort.id, limit, offset)
    return {
        "cohort": cohort.key,
        "waitlisted": cohort.waitlisted,
        "items": [enrollment_view(r, cohort, offset + i + 1) for i, r in enumerate(rows)],
    }
