"""What every ledger route shares: scopes, path and query types, rendering an outcome, and the
actions on one transaction (post, void, reverse).

No ``from __future__ import annotations`` here: :func:`transaction_action` declares its
endpoint's body with the model it is given, so that annotation must be evaluated where it is
written (FastAPI would resolve a string against this module's globals, where the model is not).
"""

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Path, Query
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from azora_common.auth import Principal, require_scope
from azora_common.db import SessionDep
from azora_common.errors import InvalidField, problem_response
from azora_common.idempotency import (
    REPLAYED_HEADER,
    IdempotencyKeyDep,
    json_response,
    run_idempotent,
)
from azora_ledger.schemas import Input, Timestamp, TransactionOut
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


M = TypeVar("M", bound=Input)


def transaction_action(
    router: APIRouter,
    action: str,
    model: type[M],
    work: Callable[[AsyncSession, uuid.UUID, M], Awaitable[Outcome | dict[str, Any]]],
    *,
    name: str,
    summary: str,
    status_code: int = 200,
) -> None:
    """Add ``POST /v1/transactions/{tx_id}/<action>`` to ``router``: an optional ``model`` body
    (absent: the model's defaults), ``work`` run at most once per ``Idempotency-Key``
    (azora_common.idempotency), its answer, a refusal included, stored under the scope
    ``"POST <path>"``. ``name`` is the route's name (its OpenAPI operationId)."""

    async def endpoint(
        tx_id: uuid.UUID,
        session: SessionDep,
        _: WriteDep,
        key: IdempotencyKeyDep = None,
        body: Annotated[model | None, Body()] = None,  # type: ignore[valid-type]
    ) -> Response:
        given: M = body or model()

        async def handler() -> tuple[int, Any]:
            result = await work(session, tx_id, given)
            if isinstance(result, Outcome):
                return result.status, result.body
            return 200, result

        path = f"/v1/transactions/{tx_id}/{action}"
        return await run_idempotent(
            session,
            key=key,
            scope=f"POST {path}",
            request_body=given.model_dump(mode="json"),
            handler=handler,
            instance=path,
        )

    router.add_api_route(
        f"/v1/transactions/{{tx_id}}/{action}",
        endpoint,
        methods=["POST"],
        name=name,
        summary=summary,
        status_code=status_code,
        responses={status_code: {"model": TransactionOut}},
    )
