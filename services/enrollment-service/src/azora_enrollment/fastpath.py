"""The hot path: ``POST /v1/enrollments`` without FastAPI's per-request machinery and in one
database round trip.

Profiling the service under the benchmark load put ~1% of the CPU time in enrollment code and
the rest in the framework: SQLAlchemy (~25%), one socket send per round trip (~20%: BEGIN, the
Idempotency-Key insert, ``enrollment_admit``, the response update, COMMIT) and FastAPI's
routing and dependency solving (~13%). This route does the same work by hand:

- body parsing, the ``enrollment:write`` scope check and validation answer exactly as the
  FastAPI route does (``azora_common.fastpath`` explains how);
- then one statement, ``enrollment_admit_keyed()`` (migration 0004), run on the pool's asyncpg
  connection in autocommit: key insert-or-detect, the decision under the cohort lock, and the
  stored response, committed (or, for a refusal, rolled back) by the statement itself.

Anything the one statement does not decide (cohorts with prerequisites, an offer past its window
to expire first, a spec that keeps changing under us) takes the general path: the FastAPI
route's code, ``run_idempotent`` around ``service.enroll`` in one SQLAlchemy session.

``install_fast_routes`` puts the plain Starlette route first in the routing table; the FastAPI
route of the same path and method stays for the OpenAPI document (and serves if this one is
removed).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI
from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from azora_common.auth import authorize
from azora_common.db import Database, unit_of_work
from azora_common.errors import ProblemError
from azora_common.fastpath import FastRoute, read_body, validate_request
from azora_common.fastpath import install_fast_routes as install_routes
from azora_common.idempotency import (
    REPLAYED_HEADER,
    IdempotencyKeyReused,
    differing_fields,
    run_idempotent,
)
from azora_enrollment import metrics, service
from azora_enrollment import repository as repo
from azora_enrollment.clock import Clock
from azora_enrollment.errors import CohortNotFound
from azora_enrollment.schemas import EnrollmentIn

SCOPE = "POST /v1/enrollments"
WRITE_SCOPE = "enrollment:write"
# As run_idempotent's default: a key older than this is forgotten and may be reused.
KEY_RETENTION = timedelta(hours=24)

_BODY = TypeAdapter(EnrollmentIn)
_REFUSED = "enrollment_admit_keyed:"

_CALL = (
    "SELECT o_replay, o_request_hash, o_request_body::text AS o_request_body, o_status, "
    "o_response::text AS o_response, o_outcome "
    "FROM enrollment_admit_keyed($1, $2, $3, $4::jsonb, $5, $6::jsonb, $7, $8, $9, $10, $11, "
    "$12, $13::jsonb, $14::text[], $15::jsonb, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)"
)


async def _load_cohort(db: Database, namespace: str, name: str) -> repo.CohortRow:
    # Its own short session, never while this request holds another pool connection (a
    # request waiting for a second connection while holding one could starve the pool).
    async with db.sessionmaker() as session:
        cohort = await repo.get_cohort(session, namespace, name)
    service.remember_cohort(namespace, name, cohort)
    if cohort is None:
        raise CohortNotFound(
            f"cohort {namespace}/{name} does not exist", cohort=f"{namespace}/{name}"
        )
    return cohort


def _refusal(exc: asyncpg.exceptions.RaiseError) -> repo.Admission | None:
    """The decision carried by ``enrollment_admit_keyed``'s exception (None: another error)."""
    if not str(exc).startswith(_REFUSED) or not exc.detail:
        return None
    d = orjson.loads(exc.detail)
    return repo.Admission(
        outcome=d["outcome"],
        segment=d["segment"],
        existing_id=uuid.UUID(d["existing_id"]) if d["existing_id"] else None,
        existing_state=d["existing_state"],
        priority=None,
        queue_seq=None,
        position=None,
        capacity=d["capacity"],
        seats_taken=d["seats_taken"],
        waitlisted=d["waitlisted"],
    )


async def _call(db: Database, args: tuple[Any, ...]) -> asyncpg.Record | None:
    """Run ``enrollment_admit_keyed`` on the asyncpg connection under a session.

    The session is only the way to the pool (and to the tests' shared connection): SQLAlchemy's
    asyncpg adapter begins its transaction lazily, on its first statement, so with no statement
    of its own the connection stays in autocommit and the call is its own transaction, with no
    BEGIN or COMMIT round trip; ``commit`` and ``close`` then send nothing either.
    """
    async with db.sessionmaker() as session:
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        conn: asyncpg.Connection = raw.driver_connection
        try:
            if conn.is_in_transaction():
                # Only when the session joined an outer transaction (the tests'
                # rollback_client): a savepoint keeps a refusal from aborting it.
                async with conn.transaction():
                    row = await conn.fetchrow(_CALL, *args)
            else:
                row = await conn.fetchrow(_CALL, *args)
        except asyncpg.PostgresError:
            raise  # the server answered: the connection is fine
        except BaseException:
            # A dead socket or a cancelled call: SQLAlchemy did not see the error (we bypassed
            # it), so tell the pool to discard this connection instead of handing it out again.
            await connection.invalidate()
            raise
        await session.commit()
        return row


async def _general(
    db: Database, data: EnrollmentIn, key: str | None, now: datetime, actor: str
) -> Response:
    """What the FastAPI route does: one session, committed when the handler returns."""
    namespace, name = data.cohort.split("/", 1)

    async with unit_of_work(db) as session:

        async def handler() -> tuple[int, Any]:
            view = await service.enroll(
                session,
                namespace=namespace,
                name=name,
                student=service.StudentRef(
                    data.student.id, data.student.segment, data.student.attributes
                ),
                now=now,
                actor=actor,
            )
            return 201, view

        return await run_idempotent(
            session,
            key=key,
            scope=SCOPE,
            request_body=data.model_dump(mode="json"),
            handler=handler,
        )


async def create_enrollment(request: Request) -> Response:
    body = await read_body(request)
    principal = authorize(request, WRITE_SCOPE)
    data, key = validate_request(request, body, _BODY)
    clock: Clock = request.app.state.clock
    now = clock.now()
    db: Database = request.app.state.db
    namespace, name = data.cohort.split("/", 1)
    student = service.StudentRef(data.student.id, data.student.segment, data.student.attributes)
    canonical = orjson.dumps(data.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(canonical).hexdigest()

    cohort = service.cohort_hint(namespace, name)
    for _ in range(3):
        if cohort is None:
            cohort = await _load_cohort(db, namespace, name)
        spec = service.spec_of(cohort)
        if spec.eligibility.prerequisites:
            break  # prerequisite checks read other cohorts' enrollments: the general path
        p = service.admit_params(cohort, spec, student, now, principal.subject)
        view = {
            "id": str(p["id"]),
            "cohort": cohort.key,
            "offer_expires_at": None,
            "created_at": now.isoformat(),
            "updated_at": now.isoformat(),
        }
        args = (
            SCOPE,
            key,
            digest,
            canonical.decode(),
            datetime.now(UTC) - KEY_RETENTION,
            orjson.dumps(view).decode(),
            p["namespace"],
            p["name"],
            p["revision"],
            p["open"],
            p["student"],
            p["segment"],
            None if p["attributes"] is None else orjson.dumps(p["attributes"]).decode(),
            p["allowed"],
            orjson.dumps(p["priorities"]).decode(),
            p["default_priority"],
            p["seat_state"],
            p["waitlist_enabled"],
            p["waitlist_capacity"],
            p["offer_mode"],
            p["position_visible"],
            p["id"],
            now,
            p["actor"],
            p["reason"],
        )
        try:
            row = await _call(db, args)
        except asyncpg.exceptions.RaiseError as exc:
            decided = _refusal(exc)
            if decided is None:
                raise
            outcome = decided.outcome
            if outcome == "stale":
                cohort = None  # the spec changed since we cached it: reload, decide again
                continue
            if outcome == "not_found":
                service.remember_cohort(namespace, name, None)
                metrics.DECISIONS.labels(CohortNotFound.type_slug).inc()
                raise CohortNotFound(
                    f"cohort {namespace}/{name} does not exist", cohort=f"{namespace}/{name}"
                ) from None
            if outcome == "expire_first":
                break  # offers past their window hold seats: the general path expires them
            try:
                service.raise_refusal(cohort, spec, student, decided, now)
            except ProblemError as problem:
                metrics.DECISIONS.labels(problem.type_slug).inc()
                raise
            raise AssertionError(f"enrollment_admit_keyed: unknown outcome {outcome}") from exc
        assert row is not None
        if row["o_replay"]:
            if row["o_request_hash"] != digest:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used with a different request body",
                    idempotency_key=key,
                    differing_fields=differing_fields(
                        orjson.loads(row["o_request_body"]), orjson.loads(canonical)
                    ),
                )
            return Response(
                row["o_response"],
                status_code=row["o_status"],
                media_type="application/json",
                headers={REPLAYED_HEADER: "true"},
            )
        metrics.DECISIONS.labels(row["o_outcome"]).inc()
        return Response(row["o_response"], status_code=201, media_type="application/json")
    return await _general(db, data, key, now, principal.subject)


def install_fast_routes(app: FastAPI) -> None:
    install_routes(app, [FastRoute("/v1/enrollments", create_enrollment, methods=["POST"])])


__all__ = ["create_enrollment", "install_fast_routes"]
