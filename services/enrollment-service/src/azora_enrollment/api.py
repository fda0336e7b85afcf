"""HTTP routes of azora-enrollment: routes only, each calling the service layer (``cohorts``,
``admission``, ``lifecycle``, ``views``, ``analytics``).

``POST /v1/enrollments`` is one handler, ``create_enrollment``, served as a plain route
(``FAST_ROUTES``, installed by ``app.create_app`` through ``azora_common.fastpath``: no
dependency solving, no middleware stack beyond the platform's) and documented from the same
handler (``openapi_extra``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from azora_common.admin_routes import AdminKind, admin_routes
from azora_common.admin_store import ConfigWritten
from azora_common.auth import Principal, require_scope
from azora_common.db import DatabaseDep, SessionDep, get_database
from azora_common.errors import PROBLEM_CONTENT_TYPE
from azora_common.fastpath import (
    FastRoute,
    authorize,
    plain_route_openapi,
    read_body,
    validate_request,
)
from azora_common.idempotency import (
    REPLAYED_HEADER,
    IdempotencyKeyDep,
    json_response,
    run_idempotent,
)
from azora_enrollment import admission, analytics, cohorts, lifecycle, views
from azora_enrollment.clock import Clock
from azora_enrollment.outbox import PaymentClient
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


# --- dependencies ------------------------------------------------------------------------------


def clock_of(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def _now(clock: Annotated[Clock, Depends(clock_of)]) -> datetime:
    return clock.now()


NowDep = Annotated[datetime, Depends(_now)]
ReadDep = Annotated[Principal, require_scope("enrollment:read")]
WriteDep = Annotated[Principal, require_scope("enrollment:write")]
Namespace = Annotated[str, Path(pattern=NAME_PATTERN, max_length=253)]
Name = Annotated[str, Path(pattern=NAME_PATTERN, max_length=253)]

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Cohort or enrollment not found (problem+json)"},
    409: {
        "description": "Refused: window closed, full, already enrolled, invalid transition, "
        "cohort not priceable"
    },
    422: {"description": "Invalid request (problem+json naming the field)"},
}


# --- admin (the operator's API) ----------------------------------------------------------------


async def _put_cohort(
    request: Request, session: AsyncSession, namespace: str, name: str, body: CohortPut
) -> ConfigWritten:
    pricing: PaymentClient = request.app.state.payment_client
    now = clock_of(request).now()
    return await cohorts.put_cohort(session, namespace, name, body, now, pricing)


async def _delete_cohort(
    request: Request, session: AsyncSession, namespace: str, name: str
) -> None:
    await cohorts.delete_cohort(session, namespace, name, clock_of(request).now())


async def _list_cohorts(_: Request, session: AsyncSession) -> list[dict[str, Any]]:
    return await cohorts.list_cohorts(session)


async def _cohort_status(
    request: Request, session: AsyncSession, namespace: str, name: str
) -> dict[str, Any]:
    return await views.cohort_status(session, namespace, name, clock_of(request).now())


router.include_router(
    admin_routes(
        AdminKind(
            plural="cohorts",
            noun="cohort",
            nouns="cohorts",
            context=lambda request: request,
            put=_put_cohort,
            delete=_delete_cohort,
            listing=_list_cohorts,
            status=_cohort_status,
            body=CohortPut,
            namespace_param=Namespace,
            name_param=Name,
            written_model=PutResult,
            status_model=CohortStatus,
            docs={
                "put": {
                    "responses": {
                        409: {"description": "stale-generation"},
                        422: {
                            "description": "invalid-spec, with a reason: a rule of the spec, or "
                            "azora-pricing does not know the product (UnknownProduct) or its "
                            "price in the currency (UnpricedCurrency)"
                        },
                    }
                },
                "status": {"responses": {404: _PROBLEMS[404]}},
            },
        )
    )
)


# --- enrollments -------------------------------------------------------------------------------

ENROLLMENT_IN: TypeAdapter[EnrollmentIn] = TypeAdapter(EnrollmentIn)
# The shared operation fields of a plain route (bearer security, Idempotency-Key), with the body
# schema inline: no other route or model puts EnrollmentIn in the components (StudentIn is one
# already, BulkItem's).
ENROLLMENT_OPENAPI = plain_route_openapi("EnrollmentIn")
_BODY_SCHEMA = EnrollmentIn.model_json_schema(ref_template="#/components/schemas/{model}")
_BODY_SCHEMA.pop("$defs", None)
ENROLLMENT_OPENAPI["requestBody"]["content"]["application/json"]["schema"] = _BODY_SCHEMA


@router.post(
    "/v1/enrollments",
    tags=["enrollments"],
    status_code=201,
    summary="Create Enrollment",
    response_model=EnrollmentOut,
    responses=_PROBLEMS,
    openapi_extra=ENROLLMENT_OPENAPI,
)
async def create_enrollment(request: Request) -> Response:
    # FastAPI's order: body parsed (400 when malformed), then auth, then the header and the
    # body validated together (azora_common.fastpath).
    raw = await read_body(request)
    principal = authorize(request, "enrollment:write")
    body, key = validate_request(request, raw, ENROLLMENT_IN)
    db = await get_database(request)
    answer = await admission.enroll(
        db, body, key, now=clock_of(request).now(), actor=principal.subject
    )
    return Response(
        answer.body,
        status_code=answer.status,
        # a replayed refusal is a problem (docs/idempotency.md)
        media_type=PROBLEM_CONTENT_TYPE if answer.status >= 400 else "application/json",
        headers={REPLAYED_HEADER: "true"} if answer.replayed else None,
    )


FAST_ROUTES = [FastRoute("/v1/enrollments", create_enrollment, methods=["POST"])]


@router.get(
    "/v1/enrollments/{enrollment_id}",
    tags=["enrollments"],
    response_model=EnrollmentOut,
    responses={404: _PROBLEMS[404]},
)
async def get_enrollment(
    enrollment_id: uuid.UUID, session: SessionDep, _: ReadDep
) -> dict[str, Any]:
    return await views.get_enrollment(session, enrollment_id)


@router.get(
    "/v1/enrollments/{enrollment_id}/history",
    tags=["enrollments"],
    responses={404: _PROBLEMS[404]},
)
async def enrollment_history(
    enrollment_id: uuid.UUID, session: SessionDep, _: ReadDep
) -> dict[str, list[HistoryEntry]]:
    items = await views.enrollment_history(session, enrollment_id)
    return {"items": [HistoryEntry(**item) for item in items]}


@router.post(
    "/v1/enrollments/{enrollment_id}/transitions",
    tags=["enrollments"],
    response_model=EnrollmentOut,
    responses=_PROBLEMS,
)
async def transition_enrollment(
    enrollment_id: uuid.UUID,
    body: TransitionIn,
    db: DatabaseDep,
    session: SessionDep,
    now: NowDep,
    principal: WriteDep,
    key: IdempotencyKeyDep = None,
) -> Response:
    if body.to == "enrolled":
        await lifecycle.expire_offer_if_due(db.sessionmaker, enrollment_id, now)

    async def handler() -> tuple[int, Any]:
        view = await lifecycle.transition(
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
        instance=f"/v1/enrollments/{enrollment_id}/transitions",
    )


# --- cohorts (data plane) ----------------------------------------------------------------------


@router.get("/v1/cohorts/{namespace}/{name}", tags=["cohorts"], responses={404: _PROBLEMS[404]})
async def get_cohort(
    namespace: Namespace, name: Name, session: SessionDep, now: NowDep, _: ReadDep
) -> dict[str, Any]:
    return await views.cohort_view(session, namespace, name, now)


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
    return await views.cohort_enrollments(
        session, namespace, name, state=state, after=after, limit=limit
    )


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
    return await views.cohort_waitlist(session, namespace, name, limit=limit, offset=offset)


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
        result = await admission.enroll_bulk(
            session,
            namespace=namespace,
            name=name,
            students=[
                admission.StudentRef(i.student.id, i.student.segment, i.student.attributes)
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
        instance=f"/v1/cohorts/{namespace}/{name}/enrollments:bulk",
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
