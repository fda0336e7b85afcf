"""Business rules: cohorts, enrollment decisions, the state machine, waitlist promotion.

No HTTP here. Every function takes the request's session and the current instant; nothing
commits. The invariants (never more seats than capacity, promotions exactly once, one outcome
for a claim racing its expiry) rest on one rule: whoever changes a cohort's seats or waitlist
holds that cohort's row lock (``FOR UPDATE``) until commit, and every state change is
conditional on the state the caller saw (``UPDATE … WHERE state = :from``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from azora_common.errors import ProblemError, StaleGeneration
from azora_common.listener import notify
from azora_enrollment import metrics
from azora_enrollment import repository as repo
from azora_enrollment.errors import (
    AlreadyEnrolled,
    CohortFull,
    CohortNotFound,
    EnrollmentNotFound,
    InvalidSpec,
    InvalidTransition,
    NotEligible,
    OfferExpired,
    WindowClosed,
)
from azora_enrollment.models import SEAT_STATES
from azora_enrollment.spec import UNRULED_PRIORITY, CohortSpec, parse_spec

COHORTS_CHANNEL = "azora_enrollment_cohorts"
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

_spec_cache: dict[tuple[int, int], CohortSpec] = {}


def spec_of(cohort: repo.CohortRow) -> CohortSpec:
    """The parsed spec; cached per (cohort, revision), since a revision never changes."""
    key = (cohort.id, cohort.revision)
    spec = _spec_cache.get(key)
    if spec is None:
        if len(_spec_cache) > 10_000:
            _spec_cache.clear()
        spec = CohortSpec.model_validate(cohort.spec)
        _spec_cache[key] = spec
    return spec


def transition_allowed(from_state: str | None, to_state: str) -> bool:
    return to_state in TRANSITIONS.get(from_state, frozenset())


@dataclass(frozen=True, slots=True)
class StudentRef:
    id: str
    segment: str | None = None
    attributes: dict[str, Any] | None = None


# --- views -------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
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
            "charged_at": _iso(row.charged_at),
            "refund_transaction_id": row.refund_transaction_id,
            "error": row.payment_error,
        }
    return {
        "id": str(row.id),
        "cohort": cohort.key,
        "student": {"id": row.student_id, "segment": row.segment},
        "state": row.state,
        "waitlist_position": position,
        "offer_expires_at": _iso(row.offer_expires_at),
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "seated_at": _iso(row.seated_at),
        "payment": payment,
    }


async def _position(
    session: AsyncSession, row: sa.Row[Any], cohort: repo.CohortRow, spec: CohortSpec
) -> int | None:
    if row.state != "waitlisted" or not spec.waitlist.position_visible:
        return None
    return await repo.waitlist_position(session, cohort.id, row.priority, row.queue_seq)


async def get_enrollment(session: AsyncSession, enrollment_id: uuid.UUID) -> dict[str, Any]:
    row = await repo.get_enrollment(session, enrollment_id)
    if row is None:
        raise EnrollmentNotFound(f"enrollment {enrollment_id} does not exist")
    cohort = await repo.get_cohort_by_id(session, row.cohort_id)
    assert cohort is not None  # foreign key
    return enrollment_view(row, cohort, await _position(session, row, cohort, spec_of(cohort)))


# --- eligibility -------------------------------------------------------------------------------


async def unmet_requirements(
    session: AsyncSession, spec: CohortSpec, student_id: str, segment: str | None
) -> list[dict[str, Any]]:
    unmet: list[dict[str, Any]] = []
    allowed = spec.eligibility.segments
    if allowed and segment not in allowed:
        unmet.append({"requirement": "segment", "segment": segment, "allowed": allowed})
    prerequisites = spec.eligibility.prerequisites
    if prerequisites:
        done = await repo.completed_cohorts(session, student_id, prerequisites)
        missing = [p for p in prerequisites if p not in done]
        if missing:
            unmet.append({"requirement": "prerequisites", "missing": missing})
    return unmet


def _check_open(cohort: repo.CohortRow, spec: CohortSpec, now: datetime) -> None:
    if cohort.capacity == 0:
        raise WindowClosed(f"cohort {cohort.key} is closed (capacity 0)", cohort=cohort.key)
    if not spec.window_open(now):
        raise WindowClosed(
            f"cohort {cohort.key} takes enrollments from {_iso(spec.opens_at) or 'any time'} "
            f"until {_iso(spec.closes_at) or 'any time'}; now is {now.isoformat()}",
            cohort=cohort.key,
            opens_at=_iso(spec.opens_at),
            closes_at=_iso(spec.closes_at),
        )


def _full_and_no_waitlist(cohort: repo.CohortRow, spec: CohortSpec) -> bool:
    free = cohort.free_seats
    if free is None or free > 0:
        return False
    waitlist = spec.waitlist
    if not waitlist.enabled:
        return True
    return waitlist.capacity is not None and cohort.waitlisted >= waitlist.capacity


def _raise_full(cohort: repo.CohortRow, spec: CohortSpec) -> None:
    raise CohortFull(
        f"cohort {cohort.key} has no free seat and "
        + ("its waitlist is full" if spec.waitlist.enabled else "no waitlist"),
        cohort=cohort.key,
        capacity=cohort.capacity,
        waitlist_enabled=spec.waitlist.enabled,
        waitlist_capacity=spec.waitlist.capacity,
    )


# --- enrollment --------------------------------------------------------------------------------


async def _admit(
    session: AsyncSession,
    cohort: repo.CohortRow,
    spec: CohortSpec,
    student_id: str,
    segment: str | None,
    now: datetime,
    actor: str,
) -> sa.Row[Any]:
    """Take a seat or a waitlist place. The caller holds the cohort row lock."""
    existing = await repo.find_active(session, cohort.id, student_id)
    if existing is not None:
        raise AlreadyEnrolled(
            f"student {student_id} already has an enrollment in {cohort.key} ({existing.state})",
            enrollment_id=str(existing.id),
            state=existing.state,
        )
    free = cohort.free_seats
    if free is None or free > 0:
        state = "pending_payment" if spec.pricing is not None else "enrolled"
        priority = 0
    elif spec.waitlist.enabled and (
        spec.waitlist.capacity is None or cohort.waitlisted < spec.waitlist.capacity
    ):
        state = "waitlisted"
        priority = spec.waitlist.priority_of(segment)
    else:
        _raise_full(cohort, spec)
    row = await repo.insert_enrollment(
        session,
        cohort_id=cohort.id,
        student_id=student_id,
        state=state,
        segment=segment,
        priority=priority,
        now=now,
        actor=actor,
        reason="enrollment requested",
    )
    if state == "waitlisted":
        cohort.waitlisted += 1
        await repo.add_to_counters(session, cohort.id, waitlisted=1)
    else:
        # The CHECK (seats_taken <= capacity) would reject this if the lock were ever missing.
        cohort.seats_taken += 1
        await repo.add_to_counters(session, cohort.id, seats=1)
    if state == "pending_payment":
        await repo.enqueue(session, row.id, "charge", now)
    return row


async def enroll(
    session: AsyncSession,
    *,
    namespace: str,
    name: str,
    student: StudentRef,
    now: datetime,
    actor: str,
) -> dict[str, Any]:
    try:
        result = await _enroll(
            session, namespace=namespace, name=name, student=student, now=now, actor=actor
        )
    except ProblemError as exc:
        metrics.DECISIONS.labels(type(exc).type_slug).inc()
        raise
    metrics.DECISIONS.labels(result["state"]).inc()
    return result


# Cohort rows this process has seen, by (namespace, name). Only ever a hint: the revision is
# re-checked by ``enrollment_admit`` in the statement that decides (an unlocked check, and
# again under the lock), and a stale entry is reloaded, so no decision rests on it.
_cohort_hints: dict[tuple[str, str], repo.CohortRow] = {}


def cohort_hint(namespace: str, name: str) -> repo.CohortRow | None:
    return _cohort_hints.get((namespace, name))


def remember_cohort(namespace: str, name: str, cohort: repo.CohortRow | None) -> None:
    """Record (or, with ``None``, forget) the cohort row last seen for ``namespace/name``."""
    key = (namespace, name)
    if cohort is None:
        _cohort_hints.pop(key, None)
        return
    if len(_cohort_hints) > 10_000:
        _cohort_hints.clear()
    _cohort_hints[key] = cohort


def admit_params(
    cohort: repo.CohortRow, spec: CohortSpec, student: StudentRef, now: datetime, actor: str
) -> dict[str, Any]:
    waitlist = spec.waitlist
    priority = waitlist.ordering == "priority"
    return {
        "namespace": cohort.namespace,
        "name": cohort.name,
        "revision": cohort.revision,
        "open": cohort.capacity != 0 and spec.window_open(now),
        "student": student.id,
        "segment": student.segment,
        "attributes": student.attributes,
        "allowed": spec.eligibility.segments or None,
        "priorities": {r.segment: r.priority for r in waitlist.priority_rules} if priority else {},
        "default_priority": UNRULED_PRIORITY if priority else 0,
        "seat_state": "pending_payment" if spec.pricing is not None else "enrolled",
        "waitlist_enabled": waitlist.enabled,
        "waitlist_capacity": waitlist.capacity,
        "offer_mode": waitlist.mode == "offer",
        "position_visible": waitlist.position_visible,
        "id": uuid.uuid4(),
        "now": now,
        "actor": actor,
        "reason": "enrollment requested",
    }


def _new_enrollment_view(
    cohort: repo.CohortRow, params: dict[str, Any], decided: repo.Admission
) -> dict[str, Any]:
    """The view of a row ``enrollment_admit`` has just inserted (no read back needed)."""
    state = decided.outcome
    now: datetime = params["now"]
    return {
        "id": str(params["id"]),
        "cohort": cohort.key,
        "student": {"id": params["student"], "segment": decided.segment},
        "state": state,
        "waitlist_position": decided.position,
        "offer_expires_at": None,
        "created_at": now.isoformat(),
        "updated_at": now.isoformat(),
        "seated_at": now.isoformat() if state == "enrolled" else None,
        "payment": (
            {
                "quote_id": None,
                "amount": None,
                "currency": None,
                "transaction_id": None,
                "charged_at": None,
                "refund_transaction_id": None,
                "error": None,
            }
            if state == "pending_payment"
            else None
        ),
    }


def raise_refusal(
    cohort: repo.CohortRow,
    spec: CohortSpec,
    student: StudentRef,
    decided: repo.Admission,
    now: datetime,
) -> None:
    """Raise the problem for a refusal ``enrollment_admit`` decided at ``cohort.revision``
    (also used by the fast route, ``fastpath.py``); returns for any other outcome."""
    outcome = decided.outcome
    if outcome == "closed":
        _check_open(cohort, spec, now)
        raise AssertionError("enrollment_admit says closed, the spec says open")
    if outcome == "not_eligible":
        raise NotEligible(
            f"student {student.id} does not meet the requirements of {cohort.key}",
            unmet=[
                {
                    "requirement": "segment",
                    "segment": decided.segment,
                    "allowed": spec.eligibility.segments,
                }
            ],
        )
    if outcome == "already_enrolled":
        raise AlreadyEnrolled(
            f"student {student.id} already has an enrollment in {cohort.key} "
            f"({decided.existing_state})",
            enrollment_id=str(decided.existing_id),
            state=decided.existing_state,
        )
    if outcome == "full":
        _raise_full(cohort, spec)


async def _enroll(
    session: AsyncSession,
    *,
    namespace: str,
    name: str,
    student: StudentRef,
    now: datetime,
    actor: str,
) -> dict[str, Any]:
    """Decide in one statement (``enrollment_admit``, migration 0003).

    Why: every round trip made while holding the cohort lock is paid by every request queued
    behind it, and on a busy event loop a round trip costs far more than the SQL. So the lock
    is taken inside the one statement that decides, and the transaction holds it only for
    that statement, the Idempotency-Key response write and COMMIT. Refusals that do not
    depend on the last seat are made in the same statement before the lock (read-only, so
    they linearise at their snapshot); acceptance is always decided under the lock, and the
    CHECK (seats_taken <= capacity) stays the last guard.
    """
    key = (namespace, name)
    cohort = _cohort_hints.get(key)
    for _ in range(3):
        if cohort is None:
            cohort = await repo.get_cohort(session, namespace, name)
            if cohort is None:
                _cohort_hints.pop(key, None)
                raise CohortNotFound(
                    f"cohort {namespace}/{name} does not exist", cohort=f"{namespace}/{name}"
                )
            if len(_cohort_hints) > 10_000:
                _cohort_hints.clear()
            _cohort_hints[key] = cohort
        spec = spec_of(cohort)
        if spec.eligibility.prerequisites:
            # Prerequisite checks read other cohorts' enrollments: the general path does that.
            break
        params = admit_params(cohort, spec, student, now, actor)
        decided = await repo.admit(session, **params)
        outcome = decided.outcome
        if outcome == "stale":
            cohort = None  # the spec changed since we cached it: reload and decide again
            continue
        if outcome == "not_found":
            _cohort_hints.pop(key, None)
            raise CohortNotFound(
                f"cohort {namespace}/{name} does not exist", cohort=f"{namespace}/{name}"
            )
        # From here on the decision was made at ``cohort.revision``: the spec is current.
        raise_refusal(cohort, spec, student, decided, now)
        if outcome == "expire_first":
            # Offers past their window hold seats (we hold the cohort lock now; the general
            # path takes it again, which is a no-op, and expires them before deciding).
            break
        return _new_enrollment_view(cohort, params, decided)
    return await _enroll_general(
        session, namespace=namespace, name=name, student=student, now=now, actor=actor
    )


async def _enroll_general(
    session: AsyncSession,
    *,
    namespace: str,
    name: str,
    student: StudentRef,
    now: datetime,
    actor: str,
) -> dict[str, Any]:
    """The general path (cohorts with prerequisites, offers that must expire first): several
    round trips, the last ones under the cohort lock. ``_enroll`` handles the rest in one."""
    # Unlocked read first: the refusals that do not depend on the last seat (unknown cohort,
    # closed window, ineligible, already enrolled, cohort and waitlist full) are decided
    # without queueing behind the cohort lock. A refusal on a committed snapshot is still a
    # correct answer at the instant of that snapshot; seats only ever become free through a
    # drop, which promotes from the waitlist rather than waiting for new requests.
    seen = await repo.get_cohort(session, namespace, name)
    if seen is None:
        raise CohortNotFound(
            f"cohort {namespace}/{name} does not exist", cohort=f"{namespace}/{name}"
        )
    spec = spec_of(seen)
    _check_open(seen, spec, now)
    # Read, not upsert, before the lock: the student row is written after the cohort lock is
    # taken (lock order: cohort first, as in bulk), and a refusal writes nothing.
    segment = (
        student.segment
        if student.segment is not None
        else await repo.student_segment(session, student.id)
    )
    unmet = await unmet_requirements(session, spec, student.id, segment)
    if unmet:
        raise NotEligible(
            f"student {student.id} does not meet the requirements of {seen.key}", unmet=unmet
        )
    existing = await repo.find_active(session, seen.id, student.id)
    if existing is not None:
        raise AlreadyEnrolled(
            f"student {student.id} already has an enrollment in {seen.key} ({existing.state})",
            enrollment_id=str(existing.id),
            state=existing.state,
        )
    if _full_and_no_waitlist(seen, spec) and spec.waitlist.mode != "offer":
        _raise_full(seen, spec)

    cohort = await repo.lock_cohort(session, namespace, name)
    if cohort is None:  # deleted between the two reads
        raise CohortNotFound(
            f"cohort {namespace}/{name} does not exist", cohort=f"{namespace}/{name}"
        )
    if cohort.revision != seen.revision:
        spec = spec_of(cohort)
        _check_open(cohort, spec, now)
    if spec.waitlist.mode == "offer":
        # Offers past their window hold seats until someone expires them; do it here so a
        # newcomer never sees a seat as taken by an offer that is already dead.
        await expire_due_offers(session, cohort, spec, now)
    stored = await repo.upsert_student(
        session, student.id, student.segment, student.attributes, now
    )
    if stored != segment or cohort.revision != seen.revision:
        # The stored segment (none was given) or the spec changed since the checks above.
        segment = stored
        unmet = await unmet_requirements(session, spec, student.id, segment)
        if unmet:
            raise NotEligible(
                f"student {student.id} does not meet the requirements of {cohort.key}",
                unmet=unmet,
            )
    row = await _admit(session, cohort, spec, student.id, segment, now, actor)
    return enrollment_view(row, cohort, await _position(session, row, cohort, spec))


async def enroll_bulk(
    session: AsyncSession,
    *,
    namespace: str,
    name: str,
    students: list[StudentRef],
    now: datetime,
    actor: str,
) -> dict[str, Any]:
    # One lock for the whole batch: the batch is decided in order, as one queue, and each
    # item runs in a savepoint so a refusal of one leaves no trace and does not stop the rest.
    cohort = await repo.lock_cohort(session, namespace, name)
    if cohort is None:
        raise CohortNotFound(
            f"cohort {namespace}/{name} does not exist", cohort=f"{namespace}/{name}"
        )
    spec = spec_of(cohort)
    _check_open(cohort, spec, now)
    if spec.waitlist.mode == "offer":
        await expire_due_offers(session, cohort, spec, now)
    results: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for index, student in enumerate(students):
        seats, waitlisted = cohort.seats_taken, cohort.waitlisted
        try:
            async with session.begin_nested():
                segment = await repo.upsert_student(
                    session, student.id, student.segment, student.attributes, now
                )
                unmet = await unmet_requirements(session, spec, student.id, segment)
                if unmet:
                    raise NotEligible(
                        f"student {student.id} does not meet the requirements of {cohort.key}",
                        unmet=unmet,
                    )
                row = await _admit(session, cohort, spec, student.id, segment, now, actor)
                view = enrollment_view(row, cohort, await _position(session, row, cohort, spec))
        except ProblemError as exc:
            cohort.seats_taken, cohort.waitlisted = seats, waitlisted
            problem = exc.to_problem()
            results.append({"index": index, "status": problem["status"], "problem": problem})
            outcome = exc.type_slug
        else:
            results.append({"index": index, "status": 201, "enrollment": view})
            outcome = view["state"]
        counts[outcome] = counts.get(outcome, 0) + 1
        metrics.DECISIONS.labels(outcome).inc()
    return {"cohort": cohort.key, "summary": counts, "results": results}


# --- transitions -------------------------------------------------------------------------------


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
    updated = await repo.get_enrollment(session, enrollment_id)
    assert updated is not None
    return enrollment_view(updated, cohort, await _position(session, updated, cohort, spec))


async def expire_offer_if_due(
    sessionmaker: async_sessionmaker[AsyncSession], enrollment_id: uuid.UUID, now: datetime
) -> None:
    """Expire this enrollment's offer in its own, committed transaction if its time is up.

    A claim that arrives too late is refused, and the refusal rolls the request back; doing
    the expiry separately first makes it a recorded fact (history, the next offer) rather
    than something the refused request undoes. ``transition`` re-checks under the lock, so
    correctness does not depend on this step, only the promptness of the outcome.
    """
    async with sessionmaker() as session, session.begin():
        seen = await repo.get_enrollment(session, enrollment_id)
        if seen is None or seen.state != "offered" or seen.offer_expires_at > now:
            return
        cohort = await repo.lock_cohort_by_id(session, seen.cohort_id)
        assert cohort is not None
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

    An ineligible student is skipped but keeps their place; each promotion is one conditional
    UPDATE (``WHERE state = 'waitlisted'``) under the lock, so it happens exactly once.
    """
    promoted = 0
    after: tuple[int, int] | None = None
    offer = spec.waitlist.mode == "offer"
    target = "offered" if offer else ("pending_payment" if spec.pricing else "enrolled")
    while cohort.waitlisted - promoted > 0:
        free = cohort.free_seats
        if free is not None and free - promoted <= 0:
            break
        batch = await repo.waitlist_batch(session, cohort.id, after, limit=100)
        if not batch:
            break
        for candidate in batch:
            after = (candidate.priority, candidate.queue_seq)
            if free is not None and free - promoted <= 0:
                break
            if await unmet_requirements(session, spec, candidate.student_id, candidate.segment):
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


# --- cohorts (admin) ---------------------------------------------------------------------------


async def put_cohort(
    session: AsyncSession,
    *,
    namespace: str,
    name: str,
    generation: int,
    uid: str,
    raw_spec: dict[str, Any],
    now: datetime,
) -> dict[str, int]:
    spec = parse_spec(raw_spec, namespace=namespace, name=name)
    stored_spec = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    existing = await repo.lock_cohort(session, namespace, name, include_deleted=True)
    if existing is None:
        revision = await repo.next_revision(session)
        await repo.insert_cohort(
            session,
            namespace=namespace,
            name=name,
            uid=uid,
            generation=generation,
            revision=revision,
            spec=stored_spec,
            capacity=spec.capacity,
            now=now,
        )
        await notify(session, COHORTS_CHANNEL, f"{namespace}/{name}")
        return {"revision": revision, "generation": generation}
    # A different uid is a new object under the same name (deleted and re-created in
    # Kubernetes): its generation counts from 1 again, so it is never "stale".
    same_object = existing.uid == uid
    if same_object and generation < existing.generation:
        raise StaleGeneration(
            f"generation {generation} is older than the stored {existing.generation}",
            stored_generation=existing.generation,
        )
    if (
        same_object
        and generation == existing.generation
        and existing.deleted_at is None
        and existing.spec == stored_spec
    ):
        return {"revision": existing.revision, "generation": existing.generation}
    if spec.capacity is not None and spec.capacity < existing.seats_taken:
        # Shrinking below the seats already held would mean evicting students; we refuse and
        # let a person drop enrollments first (the database CHECK would refuse it too).
        raise InvalidSpec(
            "CapacityBelowEnrolled",
            f"capacity {spec.capacity} is below the {existing.seats_taken} seats already taken",
            seats_taken=existing.seats_taken,
        )
    old_spec = spec_of(existing)
    revision = await repo.next_revision(session)
    await repo.update_cohort(
        session,
        existing.id,
        uid=uid,
        generation=generation,
        revision=revision,
        spec=stored_spec,
        capacity=spec.capacity,
        deleted_at=None,
        updated_at=now,
    )
    if (old_spec.waitlist.ordering, old_spec.waitlist.priority_rules) != (
        spec.waitlist.ordering,
        spec.waitlist.priority_rules,
    ):
        rules = (
            {r.segment: r.priority for r in spec.waitlist.priority_rules}
            if spec.waitlist.ordering == "priority"
            else {}
        )
        default = UNRULED_PRIORITY if spec.waitlist.ordering == "priority" else 0
        await repo.reprioritise_waitlist(session, existing.id, rules, default)
    existing.capacity = spec.capacity
    existing.revision = revision
    # More capacity (or looser eligibility) lets the waitlist move now, in this transaction.
    await expire_due_offers(session, existing, spec, now)
    await promote(session, existing, spec, now, reason="cohort spec changed")
    await notify(session, COHORTS_CHANNEL, f"{namespace}/{name}")
    return {"revision": revision, "generation": generation}


async def delete_cohort(session: AsyncSession, namespace: str, name: str, now: datetime) -> None:
    # Soft delete: enrollments and their history stay (nothing is lost); new enrollment
    # requests see 404. A later PUT brings the cohort back with its enrollments.
    existing = await repo.lock_cohort(session, namespace, name)
    if existing is None:
        return
    revision = await repo.next_revision(session)
    await repo.update_cohort(
        session, existing.id, deleted_at=now, revision=revision, updated_at=now
    )
    await notify(session, COHORTS_CHANNEL, f"{namespace}/{name}")


async def list_cohorts(session: AsyncSession) -> list[dict[str, Any]]:
    return [
        {
            "namespace": c.namespace,
            "name": c.name,
            "generation": c.generation,
            "uid": c.uid,
            "revision": c.revision,
            "spec": c.spec,
        }
        for c in await repo.list_cohorts(session)
    ]


async def cohort_status(
    session: AsyncSession, namespace: str, name: str, now: datetime
) -> dict[str, Any]:
    cohort = await repo.get_cohort(session, namespace, name)
    if cohort is None:
        raise CohortNotFound(
            f"cohort {namespace}/{name} does not exist", cohort=f"{namespace}/{name}"
        )
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
        "open": cohort.capacity != 0 and spec.window_open(now),
    }


async def cohort_view(
    session: AsyncSession, namespace: str, name: str, now: datetime
) -> dict[str, Any]:
    cohort = await repo.get_cohort(session, namespace, name)
    if cohort is None:
        raise CohortNotFound(
            f"cohort {namespace}/{name} does not exist", cohort=f"{namespace}/{name}"
        )
    spec = spec_of(cohort)
    return {
        "cohort": cohort.key,
        "course": spec.course,
        "title": spec.title,
        "capacity": cohort.capacity,
        "seats_taken": cohort.seats_taken,
        "waitlisted": cohort.waitlisted,
        "open": cohort.capacity != 0 and spec.window_open(now),
        "opens_at": _iso(spec.opens_at),
        "closes_at": _iso(spec.closes_at),
        "waitlist": {
            "enabled": spec.waitlist.enabled,
            "capacity": spec.waitlist.capacity,
            "mode": spec.waitlist.mode,
            "ordering": spec.waitlist.ordering,
        },
        "priced": spec.pricing is not None,
        "revision": cohort.revision,
    }


async def require_cohort(session: AsyncSession, namespace: str, name: str) -> repo.CohortRow:
    cohort = await repo.get_cohort(session, namespace, name)
    if cohort is None:
        raise CohortNotFound(
            f"cohort {namespace}/{name} does not exist", cohort=f"{namespace}/{name}"
        )
    return cohort
