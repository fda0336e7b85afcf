"""HTTP routes of azora-pricing."""

from __future__ import annotations

import functools
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import TypeAdapter

from azora_common.admin_routes import AdminKind, admin_routes
from azora_common.admin_store import ConfigPut
from azora_common.auth import Principal, require_scope
from azora_common.db import Database, SessionDep, unit_of_work
from azora_common.fastpath import (
    FastRoute,
    authorize,
    plain_route_openapi,
    read_body,
    validate_request,
)
from azora_common.idempotency import IdempotencyKeyDep, json_response, run_idempotent
from azora_pricing.quote_writer import QuoteWriter, store_alone
from azora_pricing.schemas import (
    NAME_PATTERN,
    NAMESPACE_PATTERN,
    SKU_PATTERN,
    ProductIn,
    ProductList,
    ProductOut,
    QuoteIn,
    SimulateIn,
)
from azora_pricing.service import PricingService

router = APIRouter()

ReadDep = Annotated[Principal, require_scope("pricing:read")]
WriteDep = Annotated[Principal, require_scope("pricing:write")]
Sku = Annotated[str, PathParam(pattern=SKU_PATTERN)]
Namespace = Annotated[str, PathParam(pattern=NAMESPACE_PATTERN, max_length=63)]
Name = Annotated[str, PathParam(pattern=NAME_PATTERN, max_length=253)]
QuoteId = Annotated[uuid.UUID, PathParam()]


def _service(request: Request) -> PricingService:
    service: PricingService = request.app.state.pricing
    return service


# --- products -------------------------------------------------------------------------------


@router.put(
    "/v1/products/{sku}",
    tags=["products"],
    status_code=200,
    responses={
        200: {"model": ProductOut, "description": "Replaced"},
        201: {"model": ProductOut, "description": "Created"},
        422: {"description": "invalid-spec (`reason`, `field`) or validation-error"},
    },
)
async def put_product(
    sku: Sku, body: ProductIn, request: Request, session: SessionDep, _: WriteDep
) -> Response:
    """Create or replace a product with its prices per currency (201 when created)."""
    document, created = await _service(request).put_product(session, sku, body)
    return json_response(201 if created else 200, document)


@router.get(
    "/v1/products/{sku}",
    tags=["products"],
    response_model=None,
    responses={200: {"model": ProductOut}, 404: {"description": "not-found"}},
)
async def get_product(
    sku: Sku, request: Request, session: SessionDep, _: ReadDep
) -> dict[str, Any]:
    return await _service(request).get_product(session, sku)


@router.get(
    "/v1/products", tags=["products"], response_model=None, responses={200: {"model": ProductList}}
)
async def list_products(
    request: Request,
    session: SessionDep,
    _: ReadDep,
    after: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    return await _service(request).list_products(session, after=after, limit=limit)


# --- quotes ---------------------------------------------------------------------------------


QUOTE_IN: TypeAdapter[QuoteIn] = TypeAdapter(QuoteIn)


@router.post(
    "/v1/quotes",
    tags=["quotes"],
    status_code=201,
    summary="Create Quote",
    description="Price a basket with a full trace; the price is held until ``expires_at``.",
    responses={
        409: {"description": "promotion-exhausted, promotion-customer-limit (checked early)"},
        422: {"description": "validation-error, or promotion-code-rejected naming `codes[i]`"},
    },
    openapi_extra=plain_route_openapi("QuoteIn"),
)
async def create_quote(request: Request) -> Response:
    """A plain route (azora_common.fastpath): the body is parsed (400 when malformed), then the
    token checked, then the header and the body validated together, as FastAPI would. A quote
    without codes or Idempotency-Key is priced and stored without a session (the quote writer
    batches concurrent ones into one INSERT); anything else, or a stale snapshot, or a value
    the database refuses, is priced again on a session and stored idempotently.
    """
    raw = await read_body(request)
    authorize(request, "pricing:write")
    body, key = validate_request(request, raw, QUOTE_IN)
    service = _service(request)
    db: Database = request.app.state.db
    if key is None and not body.codes:
        writer: QuoteWriter | None = request.app.state.quote_writer
        encoded = await _store_without_session(db, writer, service, body)
        if encoded is not None:
            return Response(encoded, status_code=201, media_type="application/json")
    # The request is the unit of work, as with SessionDep: committed before the response.
    async with unit_of_work(db) as session:

        async def handler() -> tuple[int, Any]:
            return 201, await service.create_quote(session, body)

        response = await run_idempotent(
            session,
            key=key,
            scope="POST /v1/quotes",
            request_body=body.model_dump(mode="json"),
            handler=handler,
            instance="/v1/quotes",
        )
    return response


async def _store_without_session(
    db: Database, writer: QuoteWriter | None, service: PricingService, body: QuoteIn
) -> bytes | None:
    if writer is not None:
        # No session, no transaction: the writer stores the quote together with the others
        # priced meanwhile (one autocommitted INSERT) and answers once it is committed.
        return await service.create_quote_fast(body, writer.store)
    # Writer off: a pooled connection, the same statement for this quote alone (no
    # transaction to begin or commit; the pool's reset on return is a no-op).
    async with db.driver() as conn:
        return await service.create_quote_fast(body, functools.partial(store_alone, conn))


FAST_ROUTES = [FastRoute("/v1/quotes", create_quote, methods=["POST"])]


@router.get("/v1/quotes/{quote_id}", tags=["quotes"])
async def get_quote(
    quote_id: QuoteId, request: Request, session: SessionDep, _: ReadDep
) -> dict[str, Any]:
    return await _service(request).get_quote(session, quote_id)


@router.post(
    "/v1/quotes/{quote_id}/accept",
    tags=["quotes"],
    status_code=200,
    responses={
        404: {"description": "not-found"},
        409: {
            "description": "quote-expired, promotion-exhausted, promotion-customer-limit, "
            "promotion-first-purchase-only"
        },
    },
)
async def accept_quote(
    quote_id: QuoteId,
    request: Request,
    session: SessionDep,
    _: WriteDep,
    key: IdempotencyKeyDep = None,
) -> Response:
    """Accept a quote, consuming its promotion redemptions atomically (idempotent)."""
    service = _service(request)

    async def handler() -> tuple[int, Any]:
        return 200, await service.accept_quote(session, quote_id)

    return await run_idempotent(
        session,
        key=key,
        scope=f"POST /v1/quotes/{quote_id}/accept",
        request_body={"quote": str(quote_id)},
        handler=handler,
        instance=f"/v1/quotes/{quote_id}/accept",
    )


@router.post("/v1/simulate", tags=["quotes"])
async def simulate(
    body: SimulateIn, request: Request, session: SessionDep, _: ReadDep
) -> dict[str, Any]:
    """Evaluate candidate rules against baskets; nothing is stored."""
    return await _service(request).simulate(session, body)


# --- admin: pricing rules and policies ------------------------------------------------------


router.include_router(
    admin_routes(
        AdminKind(
            plural="pricing-rules",
            noun="rule",
            nouns="rules",
            context=_service,
            put=PricingService.put_rule,
            delete=PricingService.delete_rule,
            listing=PricingService.list_rules,
            status=PricingService.rule_status,
            body=ConfigPut,
            namespace_param=Namespace,
            name_param=Name,
        )
    )
)
router.include_router(
    admin_routes(
        AdminKind(
            plural="pricing-policies",
            noun="policy",
            nouns="policies",
            context=_service,
            put=PricingService.put_policy,
            delete=PricingService.delete_policy,
            listing=PricingService.list_policies,
            status=PricingService.policy_status,
            body=ConfigPut,
            namespace_param=Namespace,
            name_param=Name,
            docs={
                "put": {
                    "description": "Store or replace a PricingPolicy (rounding per currency), "
                    "live without a redeploy."
                }
            },
        )
    )
)
