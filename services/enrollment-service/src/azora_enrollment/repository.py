"""All SQL of azora-enrollment. Nothing here commits: the caller's transaction is the unit
(``admit``'s one statement is its own transaction when the caller's session has begun none).

Lock order, everywhere: the cohort row first, then enrollment rows of that cohort. Every path
that changes seats or the waitlist holds the cohort row lock, so the counters on the cohort
row and the states of its enrollments change together and never interleave.
"""

from __future__ import annotations

import dataclasses
import operator
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from azora_common.admin_store import AdminStore
from azora_enrollment.models import (
    cohort_revision_seq,
    cohorts,
    enrollment_history,
    enrollments,
    outbox,
    students,
)


@dataclass(slots=True)
class CohortRow:
    id: int
    namespace: str
    name: str
    uid: str
    generation: int
    revision: int
    spec: dict[str, Any]
    capacity: int | None
    seats_taken: int
    waitlisted: int
    deleted_at: datetime | None
    created_at: datetime
    updated_at: datetime
    pricing_state: str | None
    pricing_reason: str | None
    pricing_detail: str | None
    pricing_checked_at: datetime | None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def free_seats(self) -> int | None:
        return None if self.capacity is None else self.capacity - self.seats_taken


def _cohort(row: sa.Row[Any]) -> CohortRow:
    return CohortRow(**row._asdict())


_COHORT_COLUMNS = [cohorts.c[f.name] for f in dataclasses.fields(CohortRow)]


# --- cohorts -----------------------------------------------------------------------------------


async def get_cohort(
    session: AsyncSession, namespace: str, name: str, *, include_deleted: bool = False
) -> CohortRow | None:
    query = sa.select(*_COHORT_COLUMNS).where(
        cohorts.c.namespace == namespace, cohorts.c.name == name
    )
    if not include_deleted:
        query = query.where(cohorts.c.deleted_at.is_(None))
    row = (await session.execute(query)).first()
    return _cohort(row) if row else None


async def lock_cohort(
    session: AsyncSession, namespace: str, name: str, *, include_deleted: bool = False
) -> CohortRow | None:
    # FOR UPDATE serialises every seat/waitlist change of this cohort: the counts we read
    # next stay true until we commit, so "count, then insert" cannot over-enroll.
    query = sa.select(*_COHORT_COLUMNS).where(
        cohorts.c.namespace == namespace, cohorts.c.name == name
    )
    if not include_deleted:
        query = query.where(cohorts.c.deleted_at.is_(None))
    row = (await session.execute(query.with_for_update())).first()
    return _cohort(row) if row else None


async def lock_cohort_by_id(
    session: AsyncSession, cohort_id: int, *, skip_locked: bool = False
) -> CohortRow | None:
    query = sa.select(*_COHORT_COLUMNS).where(cohorts.c.id == cohort_id)
    row = (await session.execute(query.with_for_update(skip_locked=skip_locked))).first()
    return _cohort(row) if row else None


async def get_cohort_by_id(session: AsyncSession, cohort_id: int) -> CohortRow | None:
    query = sa.select(*_COHORT_COLUMNS).where(cohorts.c.id == cohort_id)
    row = (await session.execute(query)).first()
    return _cohort(row) if row else None


async def list_cohorts(session: AsyncSession) -> Sequence[sa.Row[Any]]:
    """Every live cohort (soft-deleted ones are not configuration any more)."""
    rows = await session.execute(
        sa.select(*_COHORT_COLUMNS)
        .where(cohorts.c.deleted_at.is_(None))
        .order_by(cohorts.c.namespace, cohorts.c.name)
    )
    return rows.all()


async def next_revision(session: AsyncSession) -> int:
    return int((await session.execute(sa.select(cohort_revision_seq.next_value()))).scalar_one())


COHORTS_CHANNEL = "azora_enrollment_cohorts"
# The shared generation-stamped store (lock per key, NOTIFY); the cohort's own writes below.
cohort_store = AdminStore(
    kind="enrollment-cohort",
    table=cohorts,
    next_revision=next_revision,
    channel=COHORTS_CHANNEL,
)


async def insert_cohort(
    session: AsyncSession,
    *,
    namespace: str,
    name: str,
    uid: str,
    generation: int,
    revision: int,
    spec: dict[str, Any],
    capacity: int | None,
    now: datetime,
    **values: Any,
) -> None:
    await session.execute(
        sa.insert(cohorts).values(
            namespace=namespace,
            name=name,
            uid=uid,
            generation=generation,
            revision=revision,
            spec=spec,
            capacity=capacity,
            created_at=now,
            updated_at=now,
            **values,
        )
    )


async def update_cohort(session: AsyncSession, cohort_id: int, **values: Any) -> None:
    await session.execute(sa.update(cohorts).where(cohorts.c.id == cohort_id).values(**values))


async def priced_cohorts_to_check(session: AsyncSession, limit: int) -> list[CohortRow]:
    """Live priced cohorts whose pricing is not known to work, least recently checked first."""
    query = (
        sa.select(*_COHORT_COLUMNS)
        .where(
            cohorts.c.deleted_at.is_(None),
            cohorts.c.spec.has_key("pricing"),
            cohorts.c.pricing_state.is_distinct_from("verified"),
        )
        .order_by(cohorts.c.pricing_checked_at.asc().nulls_first(), cohorts.c.id)
        .limit(limit)
    )
    return [_cohort(row) for row in (await session.execute(query)).all()]


async def add_to_counters(
    session: AsyncSession, cohort_id: int, *, seats: int = 0, waitlisted: int = 0
) -> None:
    if seats == 0 and waitlisted == 0:
        return
    await session.execute(
        sa.update(cohorts)
        .where(cohorts.c.id == cohort_id)
        .values(
            seats_taken=cohorts.c.seats_taken + seats,
            waitlisted=cohorts.c.waitlisted + waitlisted,
        )
    )


async def state_counts(session: AsyncSession, cohort_id: int) -> dict[str, int]:
    rows = await session.execute(
        sa.select(enrollments.c.state, sa.func.count())
        .where(enrollments.c.cohort_id == cohort_id)
        .group_by(enrollments.c.state)
    )
    return {state: int(n) for state, n in rows}


# --- students ----------------------------------------------------------------------------------


async def student_segment(session: AsyncSession, student_id: str) -> str | None:
    value = (
        await session.execute(sa.select(students.c.segment).where(students.c.id == student_id))
    ).scalar_one_or_none()
    return value


# --- the one-statement decision ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdmitArgs:
    """The arguments of ``enrollment_admit()`` (migration 0005 documents each), by name: the
    statement below passes each field to the parameter ``p_<field>`` (named notation)."""

    scope: str
    key: str | None
    request_hash: str | None
    request_body: str | None  # JSON text
    key_expired_before: datetime
    view: str  # JSON text: the response template
    namespace: str
    name: str
    revision: int
    open: bool
    student: str
    segment: str | None
    attributes: str | None  # JSON text
    allowed_segments: list[str] | None
    prerequisites: list[str] | None
    priorities: str  # JSON text
    default_priority: int
    seat_state: str
    waitlist_enabled: bool
    waitlist_capacity: int | None
    offer_mode: bool
    position_visible: bool
    id: uuid.UUID
    now: datetime
    actor: str
    reason: str
    # The problem of outcome ``full``, stored under ``key`` by the same statement (migration
    # 0008); ``None``: not stored (no key, or the bulk request).
    full_response: str | None = None  # JSON text


_JSONB = {"request_body", "view", "attributes", "priorities", "full_response"}
_ADMIT = (
    "SELECT o_outcome, o_status, o_response::text AS o_response, o_request_hash, "
    "o_request_body::text AS o_request_body, o_segment, o_unmet::text AS o_unmet, "
    "o_existing_id, o_existing_state FROM enrollment_admit("
    + ", ".join(
        f"p_{f.name} => ${i}{'::jsonb' if f.name in _JSONB else ''}"
        for i, f in enumerate(dataclasses.fields(AdmitArgs), 1)
    )
    + ")"
)
_admit_values = operator.attrgetter(*(f.name for f in dataclasses.fields(AdmitArgs)))


@dataclass(frozen=True, slots=True)
class Admission:
    """What ``enrollment_admit`` decided (migration 0005 documents each outcome)."""

    outcome: str
    status: int | None
    response: str | None  # JSON text: the enrollment (accepted) or the stored response (replay)
    request_hash: str | None  # replay: the stored request
    request_body: str | None
    segment: str | None
    unmet: str | None  # JSON text: not_eligible's unmet requirements
    existing_id: uuid.UUID | None
    existing_state: str | None


_STORE_REFUSAL = "SELECT enrollment_store_answer($1, $2, $3, $4::jsonb, $5, $6::jsonb, $7, $8)"
_STORED_ANSWER = (
    "SELECT request_hash, request_body::text AS request_body, response_status, "
    "response_body::text AS response_body FROM idempotency_keys WHERE scope = $1 AND key = $2"
)


async def store_refusal(
    conn: asyncpg.Connection,
    *,
    scope: str,
    key: str,
    request_hash: str,
    request_body: str,
    status: int,
    response: str,
    now: datetime,
    expired_before: datetime,
) -> Admission | None:
    """Store a refusal under its Idempotency-Key (``enrollment_admit`` undid its own key row
    with the refusal). ``None``: stored. Otherwise the key is live with another answer, stored
    meanwhile by a concurrent request with the same key: that row, to replay or refuse.

    One statement (``enrollment_store_answer``, migration 0008); the stored row is read in a
    second statement only when a concurrent request with the same key got there first. A full
    cohort's refusal never comes here: ``admit`` stores it (``AdmitArgs.full_response``)."""
    stored = await conn.fetchval(
        _STORE_REFUSAL, scope, key, request_hash, request_body, status, response, now,
        expired_before,
    )  # fmt: skip
    if stored is not None:
        return None
    row = await conn.fetchrow(_STORED_ANSWER, scope, key)
    assert row is not None
    return Admission(
        outcome="replay",
        status=row["response_status"],
        response=row["response_body"],
        request_hash=row["request_hash"],
        request_body=row["request_body"],
        segment=None,
        unmet=None,
        existing_id=None,
        existing_state=None,
    )


async def admit(conn: asyncpg.Connection, args: AdmitArgs) -> Admission:
    """One statement: Idempotency-Key, eligibility, duplicate check, then seat / waitlist place
    / refusal under the cohort row lock, with the row, its history entry, the counters, the
    payment job and the stored response. A refusal is an outcome (the function undoes its own
    writes), never an error.

    Sent on an asyncpg connection as it is: on a pooled connection (``Database.driver``) the
    statement is its own transaction, without BEGIN and COMMIT round trips; inside a
    transaction (the bulk request's, ``azora_common.db.session_driver``) it is one more
    statement of it.
    """
    row = await conn.fetchrow(_ADMIT, *_admit_values(args))
    assert row is not None
    return Admission(
        outcome=row["o_outcome"],
        status=row["o_status"],
        response=row["o_response"],
        request_hash=row["o_request_hash"],
        request_body=row["o_request_body"],
        segment=row["o_segment"],
        unmet=row["o_unmet"],
        existing_id=row["o_existing_id"],
        existing_state=row["o_existing_state"],
    )


# --- enrollments -------------------------------------------------------------------------------

ENROLLMENT_COLUMNS = [
    enrollments.c.id,
    enrollments.c.cohort_id,
    enrollments.c.student_id,
    enrollments.c.state,
    enrollments.c.segment,
    enrollments.c.priority,
    enrollments.c.queue_seq,
    enrollments.c.created_at,
    enrollments.c.updated_at,
    enrollments.c.waitlisted_at,
    enrollments.c.seated_at,
    enrollments.c.offer_expires_at,
    enrollments.c.quote_id,
    enrollments.c.charge_amount,
    enrollments.c.charge_currency,
    enrollments.c.charge_transaction_id,
    enrollments.c.charged_at,
    enrollments.c.refund_transaction_id,
    enrollments.c.payment_error,
]


async def get_enrollment(
    session: AsyncSession, enrollment_id: uuid.UUID, *, lock: bool = False
) -> sa.Row[Any] | None:
    query = sa.select(*ENROLLMENT_COLUMNS).where(enrollments.c.id == enrollment_id)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def append_history(
    session: AsyncSession,
    *,
    enrollment_id: uuid.UUID,
    cohort_id: int,
    from_state: str | None,
    to_state: str,
    actor: str,
    reason: str,
    now: datetime,
) -> None:
    await session.execute(
        sa.insert(enrollment_history).values(
            enrollment_id=enrollment_id,
            cohort_id=cohort_id,
            from_state=from_state,
            to_state=to_state,
            actor=actor,
            reason=reason,
            at=now,
        )
    )


async def set_state(
    session: AsyncSession,
    enrollment_id: uuid.UUID,
    *,
    from_state: str,
    to_state: str,
    cohort_id: int,
    actor: str,
    reason: str,
    now: datetime,
    **values: Any,
) -> bool:
    """Move one enrollment ``from_state`` → ``to_state``; False if it was not in ``from_state``.

    The ``state = from_state`` condition makes every transition happen at most once even if a
    caller raced past its own checks.
    """
    if to_state == "enrolled":
        values.setdefault("seated_at", sa.func.coalesce(enrollments.c.seated_at, now))
    if to_state != "offered":
        values.setdefault("offer_expires_at", None)
    result = await session.execute(
        sa.update(enrollments)
        .where(enrollments.c.id == enrollment_id, enrollments.c.state == from_state)
        .values(state=to_state, updated_at=now, **values)
        .returning(enrollments.c.id)
    )
    if result.first() is None:
        return False
    await append_history(
        session,
        enrollment_id=enrollment_id,
        cohort_id=cohort_id,
        from_state=from_state,
        to_state=to_state,
        actor=actor,
        reason=reason,
        now=now,
    )
    return True


async def set_payment_fields(
    session: AsyncSession, enrollment_id: uuid.UUID, **values: Any
) -> None:
    await session.execute(
        sa.update(enrollments).where(enrollments.c.id == enrollment_id).values(**values)
    )


async def waitlist_position(
    session: AsyncSession, cohort_id: int, priority: int, queue_seq: int
) -> int:
    ahead = (
        await session.execute(
            sa.select(sa.func.count()).where(
                enrollments.c.cohort_id == cohort_id,
                enrollments.c.state == "waitlisted",
                sa.tuple_(enrollments.c.priority, enrollments.c.queue_seq)
                < sa.tuple_(sa.literal(priority), sa.literal(queue_seq)),
            )
        )
    ).scalar_one()
    return int(ahead) + 1


async def waitlist_batch(
    session: AsyncSession,
    cohort_id: int,
    after: tuple[int, int] | None,
    limit: int,
    *,
    allowed_segments: list[str] | None,
    prerequisites: list[str] | None,
) -> list[sa.Row[Any]]:
    """The next waitlisted enrollments in queue order, locked (the cohort lock is held), each
    with ``eligible``: the admission's own rule, ``enrollment_unmet()`` (migration 0005)."""
    unmet = sa.func.enrollment_unmet(
        enrollments.c.student_id,
        students.c.segment,
        sa.bindparam("allowed_segments", allowed_segments, type_=ARRAY(sa.Text)),
        sa.bindparam("prerequisites", prerequisites, type_=ARRAY(sa.Text)),
    )
    query = (
        sa.select(
            enrollments.c.id,
            enrollments.c.student_id,
            enrollments.c.priority,
            enrollments.c.queue_seq,
            students.c.segment,
            (sa.func.jsonb_array_length(unmet) == 0).label("eligible"),
        )
        .join(students, students.c.id == enrollments.c.student_id)
        .where(enrollments.c.cohort_id == cohort_id, enrollments.c.state == "waitlisted")
        .order_by(enrollments.c.priority, enrollments.c.queue_seq)
        .limit(limit)
        .with_for_update(of=enrollments)
    )
    if after is not None:
        query = query.where(
            sa.tuple_(enrollments.c.priority, enrollments.c.queue_seq)
            > sa.tuple_(sa.literal(after[0]), sa.literal(after[1]))
        )
    return list((await session.execute(query)).all())


async def waitlist_entries(
    session: AsyncSession, cohort_id: int, limit: int, offset: int
) -> list[sa.Row[Any]]:
    query = (
        sa.select(*ENROLLMENT_COLUMNS)
        .where(enrollments.c.cohort_id == cohort_id, enrollments.c.state == "waitlisted")
        .order_by(enrollments.c.priority, enrollments.c.queue_seq)
        .limit(limit)
        .offset(offset)
    )
    return list((await session.execute(query)).all())


async def reprioritise_waitlist(
    session: AsyncSession, cohort_id: int, priorities: dict[str, int], default: int
) -> None:
    """Recompute waitlist priorities after the cohort's ordering rules changed."""
    segment = sa.select(students.c.segment).where(students.c.id == enrollments.c.student_id)
    value: Any = sa.literal(default)
    if priorities:
        value = sa.case(
            *[(segment.scalar_subquery() == seg, prio) for seg, prio in priorities.items()],
            else_=default,
        )
    await session.execute(
        sa.update(enrollments)
        .where(enrollments.c.cohort_id == cohort_id, enrollments.c.state == "waitlisted")
        .values(priority=value)
    )


async def due_offers(session: AsyncSession, cohort_id: int, now: datetime) -> list[sa.Row[Any]]:
    query = (
        sa.select(enrollments.c.id)
        .where(
            enrollments.c.cohort_id == cohort_id,
            enrollments.c.state == "offered",
            enrollments.c.offer_expires_at <= now,
        )
        .order_by(enrollments.c.offer_expires_at)
        .with_for_update()
    )
    return list((await session.execute(query)).all())


async def cohorts_with_due_offers(session: AsyncSession, now: datetime, limit: int) -> list[int]:
    rows = await session.execute(
        sa.select(enrollments.c.cohort_id)
        .where(enrollments.c.state == "offered", enrollments.c.offer_expires_at <= now)
        .group_by(enrollments.c.cohort_id)
        .limit(limit)
    )
    return [int(r[0]) for r in rows]


async def list_enrollments(
    session: AsyncSession,
    cohort_id: int,
    state: str | None,
    after: uuid.UUID | None,
    limit: int,
) -> list[sa.Row[Any]]:
    query = sa.select(*ENROLLMENT_COLUMNS).where(enrollments.c.cohort_id == cohort_id)
    if state is not None:
        query = query.where(enrollments.c.state == state)
    if after is not None:
        query = query.where(enrollments.c.id > after)
    return list((await session.execute(query.order_by(enrollments.c.id).limit(limit))).all())


async def history(session: AsyncSession, enrollment_id: uuid.UUID) -> list[sa.Row[Any]]:
    rows = await session.execute(
        sa.select(
            enrollment_history.c.from_state,
            enrollment_history.c.to_state,
            enrollment_history.c.actor,
            enrollment_history.c.reason,
            enrollment_history.c.at,
        )
        .where(enrollment_history.c.enrollment_id == enrollment_id)
        .order_by(enrollment_history.c.id)
    )
    return list(rows.all())


# --- outbox ------------------------------------------------------------------------------------


async def enqueue(
    session: AsyncSession, enrollment_id: uuid.UUID, kind: str, now: datetime
) -> None:
    # ON CONFLICT: a charge (or refund) is enqueued once per enrollment, whatever retries.
    await session.execute(
        insert(outbox)
        .values(enrollment_id=enrollment_id, kind=kind, next_attempt_at=now, created_at=now)
        .on_conflict_do_nothing(constraint="uq_outbox_enrollment_kind")
    )


async def lease_jobs(
    session: AsyncSession, now: datetime, lease_until: datetime, limit: int
) -> list[sa.Row[Any]]:
    """Claim due jobs for this worker: SKIP LOCKED lets replicas take disjoint sets, and the
    lease (``next_attempt_at`` pushed ahead) hides them from others after we commit."""
    due = (
        sa.select(outbox.c.id)
        .where(outbox.c.status == "pending", outbox.c.next_attempt_at <= now)
        .order_by(outbox.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = await session.execute(
        sa.update(outbox)
        .where(outbox.c.id.in_(due))
        .values(next_attempt_at=lease_until, attempts=outbox.c.attempts + 1)
        .returning(outbox.c.id, outbox.c.enrollment_id, outbox.c.kind, outbox.c.attempts)
    )
    return list(rows.all())


async def finish_job(
    session: AsyncSession, job_id: int, status: str, now: datetime, error: str | None = None
) -> None:
    await session.execute(
        sa.update(outbox)
        .where(outbox.c.id == job_id)
        .values(status=status, done_at=now, last_error=error)
    )


async def retry_job(session: AsyncSession, job_id: int, at: datetime, error: str) -> None:
    await session.execute(
        sa.update(outbox)
        .where(outbox.c.id == job_id, outbox.c.status == "pending")
        .values(next_attempt_at=at, last_error=error[:2000])
    )


async def outbox_jobs(session: AsyncSession, enrollment_id: uuid.UUID) -> list[sa.Row[Any]]:
    rows = await session.execute(
        sa.select(
            outbox.c.kind,
            outbox.c.status,
            outbox.c.attempts,
            outbox.c.next_attempt_at,
            outbox.c.last_error,
        )
        .where(outbox.c.enrollment_id == enrollment_id)
        .order_by(outbox.c.id)
    )
    return list(rows.all())


async def pending_jobs(session: AsyncSession) -> int:
    query = sa.select(sa.func.count()).select_from(outbox).where(outbox.c.status == "pending")
    return int((await session.execute(query)).scalar_one())


async def cohort_gauges(session: AsyncSession) -> list[sa.Row[Any]]:
    """What the per-cohort gauges show, for every cohort (deleted ones too: to remove them)."""
    rows = await session.execute(
        sa.select(
            cohorts.c.namespace,
            cohorts.c.name,
            cohorts.c.capacity,
            cohorts.c.seats_taken,
            cohorts.c.waitlisted,
            cohorts.c.deleted_at,
        )
    )
    return list(rows.all())


# --- analytics ---------------------------------------------------------------------------------


async def history_counts(session: AsyncSession, cohort_id: int | None) -> dict[str, int]:
    """Counts over the append-only history, of one cohort or (None) of all."""
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


async def seat_wait_medians(session: AsyncSession, cohort_id: int | None) -> tuple[Any, Any]:
    """Median seconds from request to seat: of every seated enrollment, of those waitlisted."""
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
    return row.all, row.from_waitlist


async def enrolled_per_day(
    session: AsyncSession, cohort_id: int, since: datetime
) -> list[tuple[date, int]]:
    h = enrollment_history.c
    day = sa.func.date(sa.func.timezone("UTC", h.at))
    rows = await session.execute(
        sa.select(day.label("day"), sa.func.count())
        .where(h.cohort_id == cohort_id, h.to_state == "enrolled", h.at >= since)
        .group_by(day)
        .order_by(day)
    )
    return [(d, int(n)) for d, n in rows]


async def live_state_counts(session: AsyncSession) -> dict[str, int]:
    """Enrollments by state over every live (not deleted) cohort."""
    rows = await session.execute(
        sa.select(enrollments.c.state, sa.func.count())
        .select_from(enrollments.join(cohorts, cohorts.c.id == enrollments.c.cohort_id))
        .where(cohorts.c.deleted_at.is_(None))
        .group_by(enrollments.c.state)
    )
    return {s: int(n) for s, n in rows}
