"""Cohort analytics: fill rate, waitlist conversion, offers, drops, time-to-seat, daily seats.

Everything is derived from the enrollment rows and the append-only history, so the numbers
can be recomputed at any time and agree with what happened. Ratios are decimal strings (the
platform's convention for non-money decimals); durations are seconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from azora_enrollment import repository as repo
from azora_enrollment.errors import CohortNotFound
from azora_enrollment.models import cohorts, enrollment_history, enrollments

_Q = Decimal("0.0001")


def ratio(numerator: int, denominator: int | None) -> str | None:
    if not denominator:
        return None
    return str((Decimal(numerator) / Decimal(denominator)).quantize(_Q, ROUND_HALF_EVEN))


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


async def _history_counts(session: AsyncSession, cohort_id: int | None) -> dict[str, int]:
    h = enrollment_history.c

    def distinct(condition: sa.ColumnElement[bool]) -> Any:
        return sa.func.count(sa.distinct(h.enrollment_id)).filter(condition)

    waitlisted_ids = sa.select(h.enrollment_id).where(h.to_state == "waitlisted")
    if cohort_id is not None:
        waitlisted_ids = waitlisted_ids.where(h.cohort_id == cohort_id)
    query = sa.select(
        distinct(h.to_state == "waitlisted").label("ever_waitlisted"),
        distinct(sa.and_(h.to_state == "enrolled", h.enrollment_id.in_(waitlisted_ids))).label(
            "waitlist_converted"
        ),
        distinct(h.to_state == "enrolled").label("ever_enrolled"),
        sa.func.count().filter(h.to_state == "offered").label("offers_made"),
        sa.func.count()
        .filter(h.from_state == "offered", h.to_state.in_(("enrolled", "pending_payment")))
        .label("offers_claimed"),
        sa.func.count().filter(h.to_state == "offer_expired").label("offers_expired"),
        sa.func.count().filter(h.to_state == "declined").label("offers_declined"),
        sa.func.count()
        .filter(h.to_state == "dropped", h.from_state == "enrolled")
        .label("dropped_after_enrolled"),
        sa.func.count().filter(h.to_state == "dropped").label("dropped"),
    )
    if cohort_id is not None:
        query = query.where(h.cohort_id == cohort_id)
    return {k: int(v) for k, v in (await session.execute(query)).one()._asdict().items()}


async def _time_to_seat(session: AsyncSession, cohort_id: int | None) -> dict[str, Any]:
    e = enrollments.c
    wait = sa.extract("epoch", e.seated_at - e.created_at)
    query = sa.select(
        sa.func.percentile_cont(0.5).within_group(wait).label("all"),
        sa.func.percentile_cont(0.5)
        .within_group(wait)
        .filter(e.waitlisted_at.is_not(None))
        .label("from_waitlist"),
    ).where(e.seated_at.is_not(None))
    if cohort_id is not None:
        query = query.where(e.cohort_id == cohort_id)
    row = (await session.execute(query)).one()
    return {
        "median_seconds": _seconds(row.all),
        "median_seconds_from_waitlist": _seconds(row.from_waitlist),
    }


async def _per_day(session: AsyncSession, cohort_id: int, since: datetime) -> list[dict[str, Any]]:
    h = enrollment_history.c
    day = sa.func.date(sa.func.timezone("UTC", h.at))
    rows = await session.execute(
        sa.select(day.label("day"), sa.func.count())
        .where(h.cohort_id == cohort_id, h.to_state == "enrolled", h.at >= since)
        .group_by(day)
        .order_by(day)
    )
    return [{"date": d.isoformat(), "enrolled": int(n)} for d, n in rows]


def _rates(counts: dict[str, int]) -> dict[str, Any]:
    resolved = counts["offers_claimed"] + counts["offers_expired"] + counts["offers_declined"]
    return {
        "waitlist_conversion": ratio(counts["waitlist_converted"], counts["ever_waitlisted"]),
        "offers": {
            "made": counts["offers_made"],
            "claimed": counts["offers_claimed"],
            "expired": counts["offers_expired"],
            "declined": counts["offers_declined"],
            "claim_rate": ratio(counts["offers_claimed"], resolved),
        },
        "drop_rate": ratio(counts["dropped_after_enrolled"], counts["ever_enrolled"]),
    }


async def cohort_analytics(
    session: AsyncSession, namespace: str, name: str, now: datetime, days: int
) -> dict[str, Any]:
    cohort = await repo.get_cohort(session, namespace, name)
    if cohort is None:
        raise CohortNotFound.of(namespace, name)
    states = await repo.state_counts(session, cohort.id)
    counts = await _history_counts(session, cohort.id)
    return {
        "cohort": cohort.key,
        "capacity": cohort.capacity,
        "seats_taken": cohort.seats_taken,
        "enrolled": states.get("enrolled", 0) + states.get("completed", 0),
        "pending_payment": states.get("pending_payment", 0),
        "waitlisted": states.get("waitlisted", 0),
        "offered": states.get("offered", 0),
        "states": states,
        "fill_rate": ratio(cohort.seats_taken, cohort.capacity),
        **_rates(counts),
        "ever_waitlisted": counts["ever_waitlisted"],
        "ever_enrolled": counts["ever_enrolled"],
        "time_to_seat": await _time_to_seat(session, cohort.id),
        "enrollments_per_day": await _per_day(session, cohort.id, now - timedelta(days=days)),
        "generated_at": now.isoformat(),
    }


async def platform_summary(session: AsyncSession, now: datetime) -> dict[str, Any]:
    live = await repo.list_cohorts(session)
    limited = [c for c in live if c.capacity is not None]
    capacity = sum(c.capacity or 0 for c in limited)
    seats_in_limited = sum(c.seats_taken for c in limited)
    rows = await session.execute(
        sa.select(enrollments.c.state, sa.func.count())
        .select_from(enrollments.join(cohorts, cohorts.c.id == enrollments.c.cohort_id))
        .where(cohorts.c.deleted_at.is_(None))
        .group_by(enrollments.c.state)
    )
    states = {s: int(n) for s, n in rows}
    counts = await _history_counts(session, None)
    return {
        "cohorts": len(live),
        "capacity": capacity,
        "seats_taken": sum(c.seats_taken for c in live),
        "waitlisted": sum(c.waitlisted for c in live),
        "fill_rate": ratio(seats_in_limited, capacity),
        "states": states,
        **_rates(counts),
        "time_to_seat": await _time_to_seat(session, None),
        "by_cohort": [
            {
                "cohort": f"{c.namespace}/{c.name}",
                "capacity": c.capacity,
                "seats_taken": c.seats_taken,
                "waitlisted": c.waitlisted,
                "fill_rate": ratio(c.seats_taken, c.capacity),
            }
            for c in live
        ],
        "generated_at": now.isoformat(),
    }
