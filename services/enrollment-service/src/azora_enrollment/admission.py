"""Taking a seat or a waitlist place: ``POST /v1/enrollments`` and the bulk request.

The admission rules have one home, the PL/pgSQL function ``enrollment_admit()`` (migration
0005, called only by ``repository.admit``): Idempotency-Key, eligibility (segments and
prerequisites, ``enrollment_unmet()``), duplicate, window, seat / waitlist place / refusal
under the cohort lock, the rows it writes and the response it stores with the key. This module
maps its outcomes to answers and errors, and does only what the function cannot:

- parse the cohort's spec (JSON, pydantic) into the function's parameters, from the cohort row
  this process last saw (``_cohort_hints``: no read per request; the function re-checks the
  revision and answers ``stale``, and no decision rests on the hint);
- say whether the window is open at ``now`` (the spec's instants) and write the messages of
  the refusals (they name spec values);
- refuse an enrollment into a cohort azora-pricing cannot price (``pricing_state`` on the
  cohort row, maintained by ``priceability``: no call to pricing per request);
- expire offers past their window first when the function finds some (``expire_first``):
  expiry promotes from the waitlist, and promotion is Python (``lifecycle``);
- compare a replayed key's stored request with this one (``differing_fields``).

The retry loop (``stale``: reload the spec; ``expire_first``: expire, then ask again) is
``enroll``'s, and only there.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from azora_common.db import Database, session_driver
from azora_common.errors import Conflict
from azora_common.idempotency import IdempotencyKeyReused, differing_fields
from azora_enrollment import lifecycle, metrics, priceability, views
from azora_enrollment import repository as repo
from azora_enrollment.errors import (
    AlreadyEnrolled,
    CohortFull,
    CohortNotFound,
    NotEligible,
    ProblemError,
    WindowClosed,
)
from azora_enrollment.schemas import EnrollmentIn
from azora_enrollment.spec import CohortSpec, spec_of

SCOPE = "POST /v1/enrollments"
PATH = "/v1/enrollments"
# As run_idempotent's default: a key older than this is forgotten and may be reused.
KEY_RETENTION = timedelta(hours=24)
# stale (a spec change) and expire_first each cost one more statement; more than a few in a
# row means the cohort is being rewritten faster than we can decide.
_ATTEMPTS = 5
_ACCEPTED = frozenset({"enrolled", "pending_payment", "waitlisted"})


@dataclass(frozen=True, slots=True)
class StudentRef:
    id: str
    segment: str | None = None
    attributes: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """The response of ``POST /v1/enrollments`` (JSON text), as decided or replayed."""

    status: int
    body: str
    replayed: bool


class CohortChanging(Conflict):
    type_slug = "cohort-changing"
    title = "Cohort spec changing"


# Cohort rows this process has seen, by (namespace, name). Only ever a hint: the revision is
# re-checked by ``enrollment_admit`` in the statement that decides (before and under the lock).
_cohort_hints: dict[tuple[str, str], repo.CohortRow] = {}


def _remember(namespace: str, name: str, cohort: repo.CohortRow | None) -> None:
    key = (namespace, name)
    if cohort is None:
        _cohort_hints.pop(key, None)
        return
    if len(_cohort_hints) > 10_000:
        _cohort_hints.clear()
    _cohort_hints[key] = cohort


async def enroll(
    db: Database,
    body: EnrollmentIn,
    key: str | None,
    *,
    now: datetime,
    actor: str,
) -> Answer:
    """Decide one enrollment request; with an Idempotency-Key, a refusal is stored under the
    key like an acceptance (docs/idempotency.md), so a retry replays it even after a seat was
    freed. A full cohort's refusal (the commonest under load) is stored by the statement that
    decides it (``AdmitArgs.full_response``); ``enrollment_admit`` undoes its own writes for
    any other refusal, the key included, so that one is stored in a statement of its own."""
    canonical = orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(canonical).hexdigest()
    try:
        return await _decide(db, body, key, canonical, digest, now=now, actor=actor)
    except (IdempotencyKeyReused, CohortChanging):
        raise  # not an answer to this request's body (Stripe stores neither)
    except ProblemError as refusal:
        if key is None or refusal.status >= 500:
            raise
        problem = orjson.dumps(refusal.to_problem(PATH)).decode()
        async with db.driver() as conn:
            stored = await repo.store_refusal(
                conn,
                scope=SCOPE,
                key=key,
                request_hash=digest,
                request_body=canonical.decode(),
                status=refusal.status,
                response=problem,
                now=datetime.now(UTC),
                expired_before=datetime.now(UTC) - KEY_RETENTION,
            )
        if stored is None:
            raise  # stored: the answer is this refusal
        # A concurrent request with this key stored its answer first: that one is the answer.
        if stored.request_hash != digest:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with a different request body",
                idempotency_key=key,
                differing_fields=differing_fields(
                    orjson.loads(stored.request_body or "null"), orjson.loads(canonical)
                ),
            ) from None
        assert stored.status is not None
        assert stored.response is not None
        return Answer(stored.status, stored.response, replayed=True)


async def _decide(
    db: Database,
    body: EnrollmentIn,
    key: str | None,
    canonical: bytes,
    digest: str,
    *,
    now: datetime,
    actor: str,
) -> Answer:
    """Decide one enrollment request in one statement (usually; see the retry loop below).

    Each statement gets its own pooled connection, never two at once (a request waiting for a
    second pool connection while holding one could starve the pool).
    """
    namespace, name = body.cohort.split("/", 1)
    student = StudentRef(body.student.id, body.student.segment, body.student.attributes)
    enrollment_id = uuid.uuid4()
    view = _view_template(enrollment_id, body.cohort, now)
    cohort = _cohort_hints.get((namespace, name))
    for _ in range(_ATTEMPTS):
        fresh = cohort is None
        if cohort is None:
            async with db.sessionmaker() as session:
                cohort = await repo.get_cohort(session, namespace, name)
            _remember(namespace, name, cohort)
            if cohort is None:
                metrics.DECISIONS.labels(CohortNotFound.type_slug).inc()
                raise CohortNotFound.of(namespace, name)
        spec = spec_of(cohort)
        if cohort.pricing_state == priceability.REFUSED:
            # Pricing cannot charge this cohort: refuse before any seat. A refusal is never
            # decided on a copy: the hint may predate the cohort becoming priceable again.
            if not fresh:
                cohort = None
                continue
            metrics.DECISIONS.labels(priceability.CohortNotPriceable.type_slug).inc()
            raise priceability.not_priceable(cohort, spec)
        full = _full_refusal(cohort, spec)
        args = _admit_args(
            cohort,
            spec,
            student,
            now=now,
            actor=actor,
            enrollment_id=enrollment_id,
            view=view,
            key=key,
            request=canonical.decode() if key is not None else None,
            request_hash=digest if key is not None else None,
            full_response=full if key is not None else None,
        )
        async with db.driver() as conn:
            decided = await repo.admit(conn, args)
        outcome = decided.outcome
        if outcome == "stale":
            cohort = None  # the spec changed since we saw it: reload, decide again
            continue
        if outcome == "expire_first":
            await lifecycle.expire_cohort_offers(db.sessionmaker, cohort.id, now)
            continue
        if outcome == "replay":
            assert decided.status is not None
            assert decided.response is not None
            if decided.request_hash != digest:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used with a different request body",
                    idempotency_key=key,
                    differing_fields=differing_fields(
                        orjson.loads(decided.request_body or "null"), orjson.loads(canonical)
                    ),
                )
            return Answer(decided.status, decided.response, replayed=True)
        if outcome == "full" and decided.status == 409:
            # Stored under the key by the deciding statement: the answer is that problem.
            metrics.DECISIONS.labels(CohortFull.type_slug).inc()
            return Answer(409, full, replayed=False)
        if outcome == "not_found":
            _remember(namespace, name, None)
        _count(outcome, cohort, spec, student, decided, now)
        assert decided.response is not None
        return Answer(201, decided.response, replayed=False)
    raise CohortChanging(
        f"cohort {namespace}/{name} changed under {_ATTEMPTS} decisions in a row; retry",
        cohort=f"{namespace}/{name}",
    )


def _count(
    outcome: str,
    cohort: repo.CohortRow,
    spec: CohortSpec,
    student: StudentRef,
    decided: repo.Admission,
    now: datetime,
) -> None:
    """Count the decision; raise the problem for a refusal."""
    if outcome in _ACCEPTED:
        metrics.DECISIONS.labels(outcome).inc()
        return
    try:
        _raise_refusal(cohort, spec, student, decided, now)
    except ProblemError as problem:
        metrics.DECISIONS.labels(problem.type_slug).inc()
        raise


def _admit_args(
    cohort: repo.CohortRow,
    spec: CohortSpec,
    student: StudentRef,
    *,
    now: datetime,
    actor: str,
    enrollment_id: uuid.UUID,
    view: str,
    key: str | None = None,
    request: str | None = None,
    request_hash: str | None = None,
    full_response: str | None = None,
) -> repo.AdmitArgs:
    waitlist = spec.waitlist
    priorities, default_priority = waitlist.priorities()
    return repo.AdmitArgs(
        scope=SCOPE,
        key=key,
        request_hash=request_hash,
        request_body=request,
        key_expired_before=datetime.now(UTC) - KEY_RETENTION,
        view=view,
        namespace=cohort.namespace,
        name=cohort.name,
        revision=cohort.revision,
        open=views.is_open(cohort, spec, now),
        student=student.id,
        segment=student.segment,
        attributes=None
        if student.attributes is None
        else orjson.dumps(student.attributes).decode(),
        allowed_segments=spec.eligibility.segments or None,
        prerequisites=spec.eligibility.prerequisites or None,
        priorities=orjson.dumps(priorities).decode(),
        default_priority=default_priority,
        seat_state="pending_payment" if spec.pricing is not None else "enrolled",
        waitlist_enabled=waitlist.enabled,
        waitlist_capacity=waitlist.capacity,
        offer_mode=waitlist.mode == "offer",
        position_visible=waitlist.position_visible,
        id=enrollment_id,
        now=now,
        actor=actor,
        reason="enrollment requested",
        full_response=full_response,
    )


def _view_template(enrollment_id: uuid.UUID, cohort: str, now: datetime) -> str:
    """The new enrollment's view without what the decision fills in (``enrollment_admit``
    adds student, state, waitlist position, seated_at and payment): JSON text."""
    return orjson.dumps(
        {
            "id": str(enrollment_id),
            "cohort": cohort,
            "offer_expires_at": None,
            "created_at": now.isoformat(),
            "updated_at": now.isoformat(),
        }
    ).decode()


# A full cohort's problem as the problem handler renders ``_cohort_full`` (JSON text), by
# (cohort id, revision): it names only the cohort and its spec.
_full_refusals: dict[tuple[int, int], str] = {}


def _cohort_full(cohort: repo.CohortRow, spec: CohortSpec) -> CohortFull:
    return CohortFull(
        f"cohort {cohort.key} has no free seat and "
        + ("its waitlist is full" if spec.waitlist.enabled else "no waitlist"),
        cohort=cohort.key,
        capacity=cohort.capacity,
        waitlist_enabled=spec.waitlist.enabled,
        waitlist_capacity=spec.waitlist.capacity,
    )


def _full_refusal(cohort: repo.CohortRow, spec: CohortSpec) -> str:
    key = (cohort.id, cohort.revision)
    known = _full_refusals.get(key)
    if known is not None:
        return known
    text = orjson.dumps(_cohort_full(cohort, spec).to_problem(PATH), default=str).decode()
    if len(_full_refusals) > 10_000:
        _full_refusals.clear()
    _full_refusals[key] = text
    return text


def _check_open(cohort: repo.CohortRow, spec: CohortSpec, now: datetime) -> None:
    if cohort.capacity == 0:
        raise WindowClosed(f"cohort {cohort.key} is closed (capacity 0)", cohort=cohort.key)
    if not spec.window_open(now):
        raise WindowClosed(
            f"cohort {cohort.key} takes enrollments from "
            f"{views.iso(spec.opens_at) or 'any time'} until "
            f"{views.iso(spec.closes_at) or 'any time'}; now is {now.isoformat()}",
            cohort=cohort.key,
            opens_at=views.iso(spec.opens_at),
            closes_at=views.iso(spec.closes_at),
        )


def _raise_refusal(
    cohort: repo.CohortRow,
    spec: CohortSpec,
    student: StudentRef,
    decided: repo.Admission,
    now: datetime,
) -> None:
    """The problem for a refusal ``enrollment_admit`` decided at ``cohort.revision``."""
    outcome = decided.outcome
    if outcome == "not_found":
        raise CohortNotFound.of(cohort.namespace, cohort.name)
    if outcome == "closed":
        _check_open(cohort, spec, now)
        raise AssertionError("enrollment_admit says closed, the spec says open")
    if outcome == "not_eligible":
        raise NotEligible(
            f"student {student.id} does not meet the requirements of {cohort.key}",
            unmet=orjson.loads(decided.unmet or "[]"),
        )
    if outcome == "already_enrolled":
        raise AlreadyEnrolled(
            f"student {student.id} already has an enrollment in {cohort.key} "
            f"({decided.existing_state})",
            enrollment_id=str(decided.existing_id),
            state=decided.existing_state,
        )
    if outcome == "full":
        raise _cohort_full(cohort, spec)
    raise AssertionError(f"enrollment_admit: unexpected outcome {outcome}")


async def enroll_bulk(
    session: AsyncSession,
    *,
    namespace: str,
    name: str,
    students: list[StudentRef],
    now: datetime,
    actor: str,
) -> dict[str, Any]:
    """Up to 1,000 students in one request, decided in order as one queue.

    One cohort lock for the whole batch (taken here, first: the lock order of every path), so
    ``enrollment_admit`` never finds the revision changed or new dead offers; each item is its
    own ``enrollment_admit`` statement in this transaction, and a refused item leaves no trace
    (the function undoes its own writes) and does not stop the rest.
    """
    cohort = await repo.lock_cohort(session, namespace, name)
    if cohort is None:
        raise CohortNotFound.of(namespace, name)
    spec = spec_of(cohort)
    _check_open(cohort, spec, now)
    if cohort.pricing_state == priceability.REFUSED:
        raise priceability.not_priceable(cohort, spec)
    if spec.waitlist.mode == "offer":
        await lifecycle.expire_due_offers(session, cohort, spec, now)
    results: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    async with session_driver(session) as conn:
        for index, student in enumerate(students):
            enrollment_id = uuid.uuid4()
            view = _view_template(enrollment_id, cohort.key, now)
            args = _admit_args(
                cohort, spec, student, now=now, actor=actor, enrollment_id=enrollment_id, view=view
            )
            decided = await repo.admit(conn, args)
            try:
                _count(decided.outcome, cohort, spec, student, decided, now)
            except ProblemError as exc:
                problem = exc.to_problem()
                results.append({"index": index, "status": problem["status"], "problem": problem})
                outcome = exc.type_slug
            else:
                enrollment = orjson.loads(decided.response or "")
                results.append({"index": index, "status": 201, "enrollment": enrollment})
                outcome = decided.outcome
            counts[outcome] = counts.get(outcome, 0) + 1
    return {"cohort": cohort.key, "summary": counts, "results": results}
