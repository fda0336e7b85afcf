"""What every ledger route shares: scopes, path and query types, and rendering an outcome."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path, Query
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from azora_common.auth import Principal, require_scope
from azora_common.errors import InvalidField, problem_response
from azora_common.idempotency import REPLAYED_HEADER, json_response, run_idempotent
from azora_ledger.schemas import Timestamp
from azora_ledger.work import Outcome

ReadDep = Annotated[Principal, require_scope("ledger:read")]
WriteDep = Annotated[Principal, require_scope("ledger:write")]
CodePath = Annotated[
    str, Path(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.@-]+(:[A-Za-z0-9_.@-]+)*$")
]
SafeText = Annotated[str | None, Query(max_length=255, pattern=r"^[^\x00]*$")]
_UUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
# Cursors are opaque to clients, but the documents state their form, as the servers check it.
AccountCursor = Annotated[
    str | None,
    Query(
        max_length=255,
        pattern=r"^[A-Za-z0-9_.@-]+(:[A-Za-z0-9_.@-]+)*$",
        description="next_cursor of the previous page (the last account code)",
    ),
]
StatementCursor = Annotated[
    str | None,
    Query(
        max_length=64,
        pattern=rf"^[0-9]{{1,19}}\.{_UUID}\.[0-9]{{1,9}}$",
        description="next_cursor of the previous page (version.transaction.sequence)",
    ),
]
TransactionCursor = Annotated[
    str | None,
    Query(
        pattern=rf"^{_UUID}$",
        description="next_cursor of the previous page (the last transaction id)",
    ),
]
Limit = Annotated[int, Query(ge=1, le=1000)]
Instant = Annotated[Timestamp | None, Query(description="RFC 3339 with offset")]


def respond(outcome: Outcome) -> Response:
    headers = {REPLAYED_HEADER: "true"} if outcome.replayed else None
    if outcome.ok:
        return json_response(outcome.status, outcome.body, headers)
    return problem_response(outcome.body, headers)


def utc(value: datetime | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        # 0001-01-01T00:00:00+01:00 is valid RFC 3339 but before the first UTC instant Python
        # can represent (found by schemathesis): the client's error, not a 500.
        raise InvalidField(f"query.{field}", "out of range once converted to UTC") from exc


async def idempotent(
    session: AsyncSession,
    key: str | None,
    scope: str,
    body: Any,
    work: Callable[[], Awaitable[Outcome | dict[str, Any]]],
) -> Response:
    """Run a service call at most once per ``Idempotency-Key`` (azora_common.idempotency):
    its answer, a refusal included, is stored; ``scope`` is ``"POST <path>"``."""

    async def handler() -> tuple[int, Any]:
        result = await work()
        if isinstance(result, Outcome):
            return result.status, result.body
        return 200, result

    return await run_idempotent(
        session,
        key=key,
        scope=scope,
        request_body=body,
        handler=handler,
        instance=scope.removeprefix("POST "),
    )
