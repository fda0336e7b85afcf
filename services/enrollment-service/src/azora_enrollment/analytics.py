"""Cohort analytics: fill rate, waitlist conversion, offers, drops, time-to-seat, daily seats.

Everything is derived from the enrollment rows and the append-only history, so the numbers
can be recomputed at any time and agree with what happened. Ratios are decimal strings (the
platform's convention for non-money decimals); durations are seconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from azora_enrollment import repository as repo
from azora_enrollment.errors import CohortNotFound

_Q = Decimal("0.0001")


def ratio(numerator: int, denominator: int | None) -> str | None:
    if not denominator:
        return None
    return str((Decimal(numerator) / Decimal(denominator)).quantize(_Q, ROUND_HALF_EVEN))


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


async def _time_to_seat(session: AsyncSession, cohort_id: int | None) -> dict[str, Any]:
    median, from_waitlist = await repo.seat_wait_medians(session, cohort_id)
    return {
        "median_seconds": _seconds(median),
        "median_seconds_from_waitlist": _seconds(from_waitlist),
    }


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
    counts = await repo.history_counts(session, cohort.id)
    per_day = await repo.enrolled_per_day(session, cohort.id, now - timedelta(days=days))
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
        "enrollments_per_day": [{"date": day.isoformat(), "enrolled": n} for day, n in per_day],
        "generated_at": now.isoformat(),
    }


async def platform_summary(session: AsyncSession, now: datetime) -> dict[str, Any]:
    live = await repo.list_cohorts(session)
    limited = [c for c in live if c.capacity is not None]
    capacity = sum(c.capacity or 0 for c in limited)
    seats_in_limited = sum(c.seats_taken for c in limited)
    states = await repo.live_state_counts(session)
    counts = await repo.history_counts(session, None)
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
