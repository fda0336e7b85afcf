"""Routes of reports (JSON, or CSV with ``Accept: text/csv``): they call ``reports.service``
only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from azora_common.db import SessionDep
from azora_common.idempotency import json_response
from azora_ledger.http import Instant, ReadDep, utc
from azora_ledger.reports import service
from azora_ledger.schemas import Timestamp

router = APIRouter(tags=["reports"])

CsvNote = "JSON by default; `Accept: text/csv` returns the rows as CSV."
Currency = Annotated[str | None, Query(pattern=r"^[A-Z][A-Z0-9_]{2,15}$")]
From = Annotated[Timestamp | None, Query(alias="from", description="RFC 3339 with offset")]
To = Annotated[Timestamp | None, Query(alias="to", description="RFC 3339 with offset")]


def wants_csv(request: Request) -> bool:
    return "text/csv" in request.headers.get("accept", "")


def report_response(request: Request, report: dict[str, Any]) -> Response:
    if wants_csv(request):
        return Response(service.to_csv(report["rows"]), media_type="text/csv; charset=utf-8")
    return json_response(200, report)


def point_in_time_report(
    path: str,
    build: Callable[[AsyncSession, datetime | None, str | None], Awaitable[dict[str, Any]]],
    *,
    summary: str,
) -> None:
    """Add ``GET path``: the report ``build`` makes as of an instant (default: now), of one
    currency or all. The route is named after ``build`` (its OpenAPI operationId)."""

    async def report(
        request: Request,
        session: SessionDep,
        _: ReadDep,
        as_of: Instant = None,
        currency: Currency = None,
    ) -> Response:
        return report_response(request, await build(session, utc(as_of, "as_of"), currency))

    router.add_api_route(
        path, report, methods=["GET"], name=build.__name__, summary=summary, description=CsvNote
    )


point_in_time_report("/v1/reports/trial-balance", service.trial_balance, summary="Trial balance")
point_in_time_report("/v1/reports/balance-sheet", service.balance_sheet, summary="Balance sheet")


@router.get(
    "/v1/reports/income-statement",
    summary="Income statement for the period (from, to]",
    description=CsvNote,
)
async def income_statement(
    request: Request,
    session: SessionDep,
    _: ReadDep,
    start: From = None,
    end: To = None,
    currency: Currency = None,
) -> Response:
    return report_response(
        request,
        await service.income_statement(session, utc(start, "from"), utc(end, "to"), currency),
    )


@router.get(
    "/v1/reports/totals",
    summary="Posted volume by category or tag for the period [from, to)",
    description=CsvNote,
)
async def totals(
    request: Request,
    session: SessionDep,
    _: ReadDep,
    group_by: Literal["category", "tag"] = "category",
    start: From = None,
    end: To = None,
) -> Response:
    return report_response(
        request, await service.totals(session, group_by, utc(start, "from"), utc(end, "to"))
    )
