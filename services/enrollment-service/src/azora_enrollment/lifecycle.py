"""An enrollment's life after admission: the state machine, waitlist promotion, offer expiry.

Every function takes the request's session and the current instant; nothing commits (except
the two that say so: they run their own short transaction). The invariants (never more seats
than capacity, promotions exactly once, one outcome for a claim racing its expiry) rest on one
rule: whoever changes a cohort's seats or waitlist holds that cohort's row lock (``FOR
UPDATE``) until commit, and every state change is conditional on the state the caller saw
(``UPDATE … WHERE state = :from``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from azora_enrollment import metrics, views
from azora_enrollment import repository as repo
from azora_enrollment.errors import EnrollmentNotFound, InvalidTransition, OfferExpired
from azora_enrollment.models import SEAT_STATES
from azora_enrollment.spec import CohortSpec, spec_of

SYSTEM_PROMOTION = "system:promotion"
SYSTEM_EXPIRY = "system:offer-expiry"
SYSTEM_PAYMENT = "system:payment"

# The whole state machine. ``None`` is "no enrollment yet".
TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({"pending_payment", "enrolled", "waitlisted"}),
    "waitlisted": frozenset({"enrolled", "pending_payment", "offered", "dropped"}),
    "offered": frozenset({"enrolled", "pending_payment", "declined", "offer_expired"}),
    "pending_payment": frozenset({"enrolled", "dropped", "rejected"}),
    "enrolled": frozenset({"dropped", "completed"}),
    "offer_expired": frozenset(),
    "declined": frozenset(),
    "dropped": frozenset(),
    "completed": frozenset(),
    "rejected": frozenset(),
}
# The subset a client may ask for through ``POST /v1/enrollments/{id}/transitions``; the rest
# belong to the service itself (promotion, offer expiry, payment).
# ``offered → enrolled`` is a claim; on a priced cohort it lands in ``pending_payment``.
API_TRANSITIONS: frozenset[tuple[str, str]] = frozenset(
    {
        ("offered", "enrolled"),
        ("offered", "declined"),
        ("waitlisted", "dropped"),
        ("pending_payment", "dropped"),
        ("enrolled", "dropped"),
        ("enrolled", "completed"),
    }
)


def transition_allowed(from_state: str | None, to_state: str) -> bool:
    return to_state in TRANSITIONS.get(from_state, frozenset())


async def transition(
    session: AsyncSession,
    enrollment_id: uuid.UUID,
    *,
    to_state: str,
    reason: str | None,
    now: datetime,
    actor: str,
) -> dict[str, Any]:
    seen = await repo.get_enrollment(session, enrollment_id)
    if seen is None:
        raise EnrollmentNotFound(f"enrollment {enrollment_id} does not exist")
    # Cohort first, then the enrollment: the global lock order (see repository).
    cohort = await repo.lock_cohort_by_id(session, seen.cohort_id)
    assert cohort is not None
    spec = spec_of(cohort)
    # An offer whose window has ended is expired before anything else looks at it, so a claim
    # at (or after) the expiry instant loses exactly as if the sweeper had run first.
    await expire_due_offers(session, cohort, spec, now)
    row = await repo.get_enrollment(session, enrollment_id, lock=True)
    assert row is not None
    from_state: str = row.state
    if (from_state, to_state) not in API_TRANSITIONS:
        if from_state == "offer_expired" and to_state == "enrolled":
            raise OfferExpired(
                f"the offer of enrollment {enrollment_id} expired",
                **{"from": from_state, "to": to_state},
            )
        allowed = sorted(t for f, t in API_TRANSITIONS if f == from_state)
        raise InvalidTransition(
            f"enrollment {enrollment_id} cannot go from {from_state} to {to_state}",
            allowed=allowed,
            **{"from": from_state, "to": to_state},
        )
    why = reason or f"requested by {actor}"
    target = to_state
    if from_state == "offered" and to_state == "enrolled" and spec.pricing is not None:
        target = "pending_payment"
    moved = await repo.set_state(
        session,
        enrollment_id,
        from_state=from_state,
        to_state=target,
        cohort_id=cohort.id,
        actor=actor,
        reason=why,
        now=now,
    )
    assert moved  # we hold the row lock
    if target == "pending_payment":
        await repo.enqueue(session, enrollment_id, "charge", now)
    if from_state == "offered" and target in ("enrolled", "pending_payment"):
        metrics.OFFERS.labels("claimed").inc()
    if from_state == "waitlisted":
        cohort.waitlisted -= 1
        await repo.add_to_counters(session, cohort.id, waitlisted=-1)
    elif from_state in SEAT_STATES and target not in SEAT_STATES:
        cohort.seats_taken -= 1
        await repo.add_to_counters(session, cohort.id, seats=-1)
        if target == "declined":
            metrics.OFFERS.labels("declined").inc()
        if from_state == "enrolled" and target == "dropped":
            await _refund_if_in_window(session, row, spec, now)
        await promote(session, cohort, spec, now, reason=f"seat freed: {from_state} → {target}")
    return await views.current_view(session, enrollment_id, cohort, spec)


async def expire_offer_if_due(
    sessionmaker: async_sessionmaker[AsyncSession], enrollment_id: uuid.UUID, now: datetime
) -> None:
    """Expire this enrollment's offer in its own, committed transaction if its time is up.

    A claim that arrives too late is refused, and the refusal rolls the request back; doing
    the expiry separately first makes it a recorded fact (history, the next offer) rather
    than something the refused request undoes. ``transition`` re-checks under the lock, so
    correctness does not depend on this step, only the promptness of the outcome.
    """
    async with sessionmaker() as session:
        seen = await repo.get_enrollment(session, enrollment_id)
    if seen is None or seen.state != "offered" or seen.offer_expires_at > now:
        return
    await expire_cohort_offers(sessionmaker, seen.cohort_id, now)


async def expire_cohort_offers(
    sessionmaker: async_sessionmaker[AsyncSession], cohort_id: int, now: datetime
) -> None:
    """Expire the cohort's offers past their window (and promote), in a committed transaction
    of its own: before a claim (above), or before an admission that found such offers holding
    seats (``enrollment_admit`` answers ``expire_first``)."""
    async with sessionmaker() as session, session.begin():
        cohort = await repo.lock_cohort_by_id(session, cohort_id)
        if cohort is not None:
            await expire_due_offers(session, cohort, spec_of(cohort), now)


async def _refund_if_in_window(
    session: AsyncSession, row: sa.Row[Any], spec: CohortSpec, now: datetime
) -> None:
    window = spec.refund_window_delta
    if window is None or row.charge_transaction_id is None or row.charged_at is None:
        return
    if now - row.charged_at <= window:
        await repo.enqueue(session, row.id, "refund", now)


# --- waitlist ----------------------------------------------------------------------------------


async def promote(
    session: AsyncSession, cohort: repo.CohortRow, spec: CohortSpec, now: datetime, *, reason: str
) -> int:
    """Fill free seats from the waitlist, in queue order. The caller holds the cohort lock.

    An ineligible student (the admission's rule, ``enrollment_unmet()``, asked in the batch
    query) is skipped but keeps their place; each promotion is one conditional UPDATE
    (``WHERE state = 'waitlisted'``) under the lock, so it happens exactly once.
    """
    promoted = 0
    after: tuple[int, int] | None = None
    offer = spec.waitlist.mode == "offer"
    target = "offered" if offer else ("pending_payment" if spec.pricing else "enrolled")
    eligibility = spec.eligibility
    while cohort.waitlisted - promoted > 0:
        free = cohort.free_seats
        if free is not None and free - promoted <= 0:
            break
        batch = await repo.waitlist_batch(
            session,
            cohort.id,
            after,
            limit=100,
            allowed_segments=eligibility.segments or None,
            prerequisites=eligibility.prerequisites or None,
        )
        if not batch:
            break
        for candidate in batch:
            after = (candidate.priority, candidate.queue_seq)
            if free is not None and free - promoted <= 0:
                break
            if not candidate.eligible:
                continue
            extra: dict[str, Any] = {}
            if offer:
                extra["offer_expires_at"] = now + spec.waitlist.claim_window_delta
            moved = await repo.set_state(
                session,
                candidate.id,
                from_state="waitlisted",
                to_state=target,
                cohort_id=cohort.id,
                actor=SYSTEM_PROMOTION,
                reason=reason,
                now=now,
                **extra,
            )
            if not moved:
                continue
            promoted += 1
            if target == "pending_payment":
                await repo.enqueue(session, candidate.id, "charge", now)
    if promoted:
        cohort.seats_taken += promoted
        cohort.waitlisted -= promoted
        await repo.add_to_counters(session, cohort.id, seats=promoted, waitlisted=-promoted)
        metrics.PROMOTIONS.labels(spec.waitlist.mode).inc(promoted)
    return promoted


async def expire_due_offers(
    session: AsyncSession, cohort: repo.CohortRow, spec: CohortSpec, now: datetime
) -> int:
    """Expire this cohort's offers whose claim window has ended; the caller holds the lock."""
    due = await repo.due_offers(session, cohort.id, now)
    expired = 0
    for offer in due:
        if await repo.set_state(
            session,
            offer.id,
            from_state="offered",
            to_state="offer_expired",
            cohort_id=cohort.id,
            actor=SYSTEM_EXPIRY,
            reason="claim window ended",
            now=now,
        ):
            expired += 1
    if expired:
        cohort.seats_taken -= expired
        await repo.add_to_counters(session, cohort.id, seats=-expired)
        metrics.OFFERS.labels("expired").inc(expired)
        await promote(session, cohort, spec, now, reason="an offer expired")
    return expired


async def sweep_expired_offers(session: AsyncSession, now: datetime, limit: int = 50) -> int:
    """One pass of the offer-expiry task over every cohort with due offers.

    ``FOR UPDATE SKIP LOCKED`` on the cohort row: two replicas never work on one cohort at the
    same time, and a cohort a request is holding is left for the next tick (every request path
    that touches offers expires due ones itself, so nothing waits on the sweeper for
    correctness, only for promptness).
    """
    total = 0
    for cohort_id in await repo.cohorts_with_due_offers(session, now, limit):
        async with session.begin_nested():
            cohort = await repo.lock_cohort_by_id(session, cohort_id, skip_locked=True)
            if cohort is None:
                continue
            total += await expire_due_offers(session, cohort, spec_of(cohort), now)
    return total
