"""Routes of reports (JSON, or CSV with ``Accept: text/csv``): they call ``reports.service``
only."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from azora_common.db import SessionDep
from azora_common.idempotency import json_response
from azora_ledger.http import Instant, ReadDep, utc
from azora_ledger.reports import service
from azora_ledger.schemas import Timestamp

router = APIRouter(tags=["reports"])

CsvNote = "JSON by default; `Accept: text/csv` returns the rows as CSV."
Currency = Annotated[str | None, Query(pattern=r"^[A-Z][A-Z0-9_]{2,15}$")]


def wants_csv(request: Request) -> bool:
    return "text/csv" in request.headers.get("accept", "")


def report_response(request: Request, report: dict[str, Any]) -> Response:
    if wants_csv(request):
        return Response(service.to_csv(report["rows"]), media_type="text/csv; charset=utf-8")
    return json_response(200, report)


@router.get("/v1/reports/trial-balance", summary="Trial balance", description=CsvNote)
async def trial_balance(
    request: Request,
    session: SessionDep,
    _: ReadDep,
    as_of: Instant = None,
    currency: Currency = None,
) -> Response:
    return report_response(
        request, await service.trial_balance(session, utc(as_of, "as_of"), currency)
    )


@router.get("/v1/reports/balance-sheet", summary="Balance sheet", description=CsvNote)
async def balance_sheet(
    request: Request,
    session: SessionDep,
    _: ReadDep,
    as_of: Instant = None,
    currency: Currency = None,
) -> Response:
    return report_response(
        request, await service.balance_sheet(session, utc(as_of, "as_of"), currency)
    )


@router.get(
    "/v1/reports/income-statement",
    summary="Income statement for the period (from, to]",
    description=CsvNote,
)
async def income_statement(
    request: Request,
    session: SessionDep,
    _: ReadDep,
    start: Annotated[
        Timestamp | None, Query(alias="from", description="RFC 3339 with offset")
    ] = None,
    end: Annotated[Timestamp | None, Query(alias="to", description="RFC 3339 with offset")] = None,
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
    start: Annotated[
        Timestamp | None, Query(alias="from", description="RFC 3339 with offset")
    ] = None,
    end: Annotated[Timestamp | None, Query(alias="to", description="RFC 3339 with offset")] = None,
) -> Response:
    return report_response(
        request, await service.totals(session, group_by, utc(start, "from"), utc(end, "to"))
    )
