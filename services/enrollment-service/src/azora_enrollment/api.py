"""HTTP routes of azora-enrollment (routes only; rules live in ``service``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from azora_common.auth import AdminDep, Principal, require_scope
from azora_common.db import SessionDep
from azora_common.idempotency import IdempotencyKeyDep, json_response, run_idempotent
from azora_enrollment import analytics, service
from azora_enrollment import repository as repo
from azora_enrollment.clock import Clock
from azora_enrollment.schemas import (
    BulkIn,
    BulkOut,
    CohortPut,
    CohortStatus,
    EnrollmentIn,
    EnrollmentOut,
    HistoryEntry,
    PutResult,
    State,
    TransitionIn,
)
from azora_enrollment.spec import NAME_PATTERN

router = APIRouter()

ReadDep = Annotated[Principal, require_scope("enrollment:read")]
WriteDep = Annotated[Principal, require_scope("enrollment:write")]
Namespace = Annotated[str, Path(pattern=NAME_PATTERN, max_length=253)]
Name = Annotated[str, Path(pattern=NAME_PATTERN, max_length=253)]


def _now(request: Request) -> datetime:
    clock: Clock = request.app.state.clock
    return clock.now()


NowDep = Annotated[datetime, Depends(_now)]
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Cohort or enrollment not found (problem+json)"},
    409: {"description": "Refused: window closed, full, already enrolled, invalid transition"},
    422: {"description": "Invalid request (problem+json naming the field)"},
}


# --- admin (the operator's API) ----------------------------------------------------------------


@router.put(
    "/admin/v1/cohorts/{namespace}/{name}",
    tags=["admin"],
    response_model=PutResult,
    responses={409: {"description": "stale-generation"}, 422: {"description": "invalid-spec"}},
)
async def put_cohort(
    namespace: Namespace, name: Name, body: CohortPut, session: SessionDep, now: NowDep, _: AdminDep
) -> dict[str, int]:
    return await service.put_cohort(
        session,
        namespace=namespace,
        name=name,
        generation=body.generation,
        uid=body.uid,
        raw_spec=body.spec,
        now=now,
    )


@router.delete("/admin/v1/cohorts/{namespace}/{name}", tags=["admin"], status_code=204)
async def delete_cohort(
    namespace: Namespace, name: Name, session: SessionDep, now: NowDep, _: AdminDep
) -> Response:
    await service.delete_cohort(session, namespace, name, now)
    return Response(status_code=204)


@router.get("/admin/v1/cohorts", tags=["admin"])
async def list_cohorts(session: SessionDep, _: AdminDep) -> dict[str, Any]:
    return {"items": await service.list_cohorts(session)}


@router.get(
    "/admin/v1/cohorts/{namespace}/{name}/status",
    tags=["admin"],
    response_model=CohortStatus,
    responses={404: _PROBLEMS[404]},
)
async def cohort_status(
    namespace: Namespace, name: Name, session: SessionDep, now: NowDep, _: AdminDep
) -> dict[str, Any]:
    return await service.cohort_status(session, namespace, name, now)


# --- enrollments -------------------------------------------------------------------------------


@router.post(
    "/v1/enrollments",
    tags=["enrollments"],
    status_code=201,
    response_model=EnrollmentOut,
    responses=_PROBLEMS,
)
async def create_enrollment(
    body: EnrollmentIn,
    session: SessionDep,
    now: NowDep,
    principal: WriteDep,
    key: IdempotencyKeyDep = None,
) -> Response:
    namespace, name = body.cohort.split("/", 1)

    async def handler() -> tuple[int, Any]:
        view = await service.enroll(
            session,
            namespace=namespace,
            name=name,
            student=service.StudentRef(
                body.student.id, body.student.segment, body.student.attributes
            ),
            now=now,
            actor=principal.subject,
        )
        return 201, view

    return await run_idempotent(
        session,
        key=key,
        scope="POST /v1/enrollments",
        request_body=body.model_dump(mode="json"),
        handler=handler,
    )


@router.get(
    "/v1/enrollments/{enrollment_id}",
    tags=["enrollments"],
    response_model=EnrollmentOut,
    responses={404: _PROBLEMS[404]},
)
async def get_enrollment(
    enrollment_id: uuid.UUID, session: SessionDep, _: ReadDep
) -> dict[str, Any]:
    return await service.get_enrollment(session, enrollment_id)


@router.get(
    "/v1/enrollments/{enrollment_id}/history",
    tags=["enrollments"],
    responses={404: _PROBLEMS[404]},
)
async def enrollment_history(
    enrollment_id: uuid.UUID, session: SessionDep, _: ReadDep
) -> dict[str, list[HistoryEntry]]:
    rows = await repo.history(session, enrollment_id)
    if not rows:
        await service.get_enrollment(session, enrollment_id)  # 404 when it does not exist
    return {
        "items": [
            HistoryEntry(
                from_state=r.from_state,
                to_state=r.to_state,
                actor=r.actor,
                reason=r.reason,
                at=r.at.isoformat(),
            )
            for r in rows
        ]
    }


@router.post(
    "/v1/enrollments/{enrollment_id}/transitions",
    tags=["enrollments"],
    response_model=EnrollmentOut,
    responses=_PROBLEMS,
)
async def transition_enrollment(
    request: Request,
    enrollment_id: uuid.UUID,
    body: TransitionIn,
    session: SessionDep,
    now: NowDep,
    principal: WriteDep,
    key: IdempotencyKeyDep = None,
) -> Response:
    if body.to == "enrolled":
        await service.expire_offer_if_due(request.app.state.db.sessionmaker, enrollment_id, now)

    async def handler() -> tuple[int, Any]:
        view = await service.transition(
            session,
            enrollment_id,
            to_state=body.to,
            reason=body.reason,
            now=now,
            actor=principal.subject,
        )
        return 200, view

    return await run_idempotent(
        session,
        key=key,
        scope=f"POST /v1/enrollments/{enrollment_id}/transitions",
        request_body=body.model_dump(mode="json"),
        handler=handler,
    )


# --- cohorts (data plane) ----------------------------------------------------------------------


@router.get("/v1/cohorts/{namespace}/{name}", tags=["cohorts"], responses={404: _PROBLEMS[404]})
async def get_cohort(
    namespace: Namespace, name: Name, session: SessionDep, now: NowDep, _: ReadDep
) -> dict[str, Any]:
    return await service.cohort_view(session, namespace, name, now)


@router.get(
    "/v1/cohorts/{namespace}/{name}/enrollments",
    tags=["cohorts"],
    responses={404: _PROBLEMS[404]},
)
async def list_cohort_enrollments(
    namespace: Namespace,
    name: Name,
    session: SessionDep,
    _: ReadDep,
    state: State | None = None,
    after: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    cohort = await service.require_cohort(session, namespace, name)
    rows = await repo.list_enrollments(session, cohort.id, state, after, limit)
    items = [service.enrollment_view(r, cohort, None) for r in rows]
    return {"items": items, "next_after": items[-1]["id"] if len(items) == limit else None}


@router.get(
    "/v1/cohorts/{namespace}/{name}/waitlist",
    tags=["cohorts"],
    responses={404: _PROBLEMS[404]},
)
async def cohort_waitlist(
    namespace: Namespace,
    name: Name,
    session: SessionDep,
    _: ReadDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    cohort = await service.require_cohort(session, namespace, name)
    rows = await repo.waitlist_entries(session, cohort.id, limit, offset)
    return {
        "cohort": cohort.key,
        "waitlisted": cohort.waitlisted,
        "items": [service.enrollment_view(r, cohort, offset + i + 1) for i, r in enumerate(rows)],
    }


@router.post(
    "/v1/cohorts/{namespace}/{name}/enrollments:bulk",
    tags=["cohorts"],
    response_model=BulkOut,
    responses=_PROBLEMS,
)
async def bulk_enroll(
    namespace: Namespace,
    name: Name,
    body: BulkIn,
    session: SessionDep,
    now: NowDep,
    principal: WriteDep,
    key: IdempotencyKeyDep = None,
) -> Response:
    async def handler() -> tuple[int, Any]:
        result = await service.enroll_bulk(
            session,
            namespace=namespace,
            name=name,
            students=[
                service.StudentRef(i.student.id, i.student.segment, i.student.attributes)
                for i in body.items
            ],
            now=now,
            actor=principal.subject,
        )
        return 200, result

    return await run_idempotent(
        session,
        key=key,
        scope=f"POST /v1/cohorts/{namespace}/{name}/enrollments:bulk",
        request_body=body.model_dump(mode="json"),
        handler=handler,
    )


# --- analytics ---------------------------------------------------------------------------------


@router.get(
    "/v1/analytics/cohorts/{namespace}/{name}",
    tags=["analytics"],
    responses={404: _PROBLEMS[404]},
)
async def cohort_analytics(
    namespace: Namespace,
    name: Name,
    session: SessionDep,
    now: NowDep,
    _: ReadDep,
    days: Annotated[int, Query(ge=1, le=366)] = 30,
) -> Response:
    return json_response(200, await analytics.cohort_analytics(session, namespace, name, now, days))


@router.get("/v1/analytics/summary", tags=["analytics"])
async def platform_summary(session: SessionDep, now: NowDep, _: ReadDep) -> Response:
    return json_response(200, await analytics.platform_summary(session, now))
