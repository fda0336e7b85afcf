"""HTTP routes of azora-orchestrator: the data plane (``/v1/*``, OpenAI-compatible) and the
admin API (``/admin/v1/routes``).

Each data-plane endpoint has one handler. It is registered twice with the same function: as a
ServiceApp plain route (``FAST_ROUTES``: answered without the framework's middleware stack and
dependency solving) and as the FastAPI route that documents it (``openapi_extra``). The handler
hands the request to the gateway (gateway.py) and returns what it answers: a refusal, or the
relay of the upstream attempts, which ServiceApp sends as the response.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from azora_common.admin_routes import AdminKind, admin_routes
from azora_common.admin_store import ConfigPut, ConfigWritten
from azora_common.auth import AdminDep
from azora_common.db import SessionDep
from azora_common.fastpath import FastRoute
from azora_orchestrator import keys, openapi_extra, reporting, repository, service
from azora_orchestrator.gateway import Gateway
from azora_orchestrator.routing import route_status as routing_status
from azora_orchestrator.schemas import (
    BackendStatus,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeySpend,
    KeyView,
    RouteList,
    RouteSpec,
    RouteStatus,
    UsageReport,
)


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(gateway_of)]

# -- data plane ----------------------------------------------------------------------------------
# Plain routes have no dependency solving: the handlers take the request and call gateway_of.

data_plane = APIRouter(tags=["data plane"])


def _relay(
    path: str, serves: str, summary: str, extra: dict[str, Any], method: str = "POST"
) -> FastRoute:
    """Register the endpoint that hands the request to the gateway as the FastAPI route that
    documents it; answer it as the plain route that serves it."""

    async def endpoint(request: Request) -> Response:
        return await gateway_of(request).serve(request, serves)

    operation = path.removeprefix("/v1/").replace("/", "_")  # chat_completions, models, ...
    data_plane.add_api_route(
        path, endpoint, methods=[method], name=operation, summary=summary, openapi_extra=extra
    )
    return FastRoute(path, endpoint, methods=[method])


FAST_ROUTES = [
    _relay("/v1/chat/completions", "chat", "OpenAI chat completions, routed",
           openapi_extra.proxy(streams=True)),
    _relay("/v1/completions", "completions", "OpenAI completions, routed",
           openapi_extra.proxy(streams=True)),
    _relay("/v1/embeddings", "embeddings", "OpenAI embeddings, routed",
           openapi_extra.proxy(streams=False)),
    _relay("/v1/models", "models", "The public model names of all routes (OpenAI list shape)",
           openapi_extra.MODELS, method="GET"),
]  # fmt: skip

# -- admin ---------------------------------------------------------------------------------------

_K8S_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
Namespace = Annotated[str, Path(pattern=_K8S_NAME, max_length=253)]
Name = Annotated[str, Path(pattern=_K8S_NAME, max_length=253)]


async def _put_route(
    _: Request, session: AsyncSession, namespace: str, name: str, body: ConfigPut
) -> ConfigWritten:
    return await service.put_route(session, namespace, name, body)


async def _delete_route(_: Request, session: AsyncSession, namespace: str, name: str) -> None:
    await service.delete_route(session, namespace, name)


async def _list_routes(_: Request, session: AsyncSession) -> list[dict[str, Any]]:
    return await service.list_routes(session)


async def _route_status(
    request: Request, session: AsyncSession, namespace: str, name: str
) -> RouteStatus:
    row = await service.stored_route(session, namespace, name)
    live = gateway_of(request).table.by_key.get(f"{namespace}/{name}")
    if live is not None:
        return live.status(time.monotonic()).model_copy(
            update={"revision": int(row.revision), "generation": int(row.generation)}
        )
    # Stored but not loaded yet on this replica (the reload is under way): the configuration,
    # every backend "unknown" (nothing is known of it yet), the route not ready.
    spec = RouteSpec.model_validate(row.spec)
    unknown = [
        BackendStatus(
            name=bs.name,
            healthy=False,
            health="unknown",
            ejected_until=None,
            in_flight=0,
            effective_weight=float(bs.weight),
            consecutive_failures=0,
            latency_ms_ewma=None,
            error_rate=0.0,
        )
        for bs in spec.backends
    ]
    return routing_status(int(row.revision), int(row.generation), spec.strategy, unknown)


router = admin_routes(
    AdminKind(
        plural="routes",
        noun="route",
        nouns="routes",
        context=lambda request: request,
        put=_put_route,
        delete=_delete_route,
        listing=_list_routes,
        status=_route_status,
        body=ConfigPut,
        namespace_param=Namespace,
        name_param=Name,
        listing_model=RouteList,
        status_model=RouteStatus,
        docs={
            "put": {
                "summary": "Store or replace a route (idempotent, generation-stamped)",
                "responses": {
                    409: {"description": "stale generation"},
                    422: {"description": "spec rejected"},
                },
            },
            "delete": {"summary": "Remove a route (also when absent)"},
            "list": {"summary": "All stored routes (apiKey omitted)"},
            "status": {"summary": "Live per-backend health, load and latency on this replica"},
        },
    )
)


# -- virtual keys --------------------------------------------------------------------------------

key_router = APIRouter(prefix="/admin/v1/keys", tags=["admin: keys"])

KeyId = Annotated[str, Path(pattern=r"^vk_[0-9a-f]{16}$")]


@key_router.post(
    "",
    status_code=201,
    response_model=KeyCreated,
    summary="Issue a virtual key (the secret is in this answer only)",
)
async def create_key(body: KeyCreate, session: SessionDep, _: AdminDep) -> KeyCreated:
    return await keys.create_key(session, body)


@key_router.get("", response_model=KeyList, summary="All keys (never their secrets)")
async def list_keys(
    session: SessionDep,
    _: AdminDep,
    team: Annotated[str | None, Query(max_length=63)] = None,
) -> dict[str, object]:
    return {"items": await keys.list_keys(session, team)}


@key_router.get("/{key_id}", response_model=KeyView, summary="One key")
async def get_key(key_id: KeyId, session: SessionDep, _: AdminDep) -> KeyView:
    return await keys.get_key(session, key_id)


@key_router.post(
    "/{key_id}/rotate",
    response_model=KeyCreated,
    summary="A new secret for the key; the old one stops working on every replica",
    responses={409: {"description": "the key is revoked"}},
)
async def rotate_key(key_id: KeyId, session: SessionDep, _: AdminDep) -> KeyCreated:
    return await keys.rotate_key(session, key_id)


@key_router.post(
    "/{key_id}/revoke",
    response_model=KeyView,
    summary="Revoke the key (idempotent); refused on every replica within a second",
)
async def revoke_key(key_id: KeyId, session: SessionDep, _: AdminDep) -> KeyView:
    return await keys.revoke_key(session, key_id)


@key_router.get(
    "/{key_id}/spend",
    response_model=KeySpend,
    summary="The key's shared enforcement counters: window, spent, reserved, remaining",
)
async def key_spend(key_id: KeyId, session: SessionDep, _: AdminDep) -> KeySpend:
    return await keys.key_spend(session, key_id)


# -- usage and fleet status ----------------------------------------------------------------------

usage_router = APIRouter(prefix="/admin/v1", tags=["admin: usage"])

GroupBy = Literal["key", "team", "route", "model", "backend", "none"]
Filter = Annotated[str | None, Query(max_length=256)]


@usage_router.get(
    "/usage",
    response_model=UsageReport,
    summary="Usage and spend over a window, per bucket and key/team/route/model/backend",
    responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV"}},
)
async def usage(
    request: Request,
    session: SessionDep,
    _: AdminDep,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    bucket: Annotated[str | None, Query(max_length=32)] = None,
    group_by: GroupBy = "team",
    key: Filter = None,
    team: Filter = None,
    route: Filter = None,
    model: Filter = None,
    backend: Filter = None,
    format: Literal["json", "csv"] | None = None,
) -> Any:
    filters = {
        name: value
        for name, value in (
            ("key", key), ("team", team), ("route", route), ("model", model), ("backend", backend)
        )
        if value is not None
    }  # fmt: skip
    items = await reporting.usage(
        session, start=start, end=end, bucket=bucket, group_by=group_by, filters=filters
    )
    if format == "csv" or (format is None and "text/csv" in request.headers.get("accept", "")):
        return Response(reporting.usage_csv(items), media_type="text/csv")
    return {"group_by": group_by, "items": items}


@usage_router.get(
    "/route-status/{namespace}/{name}",
    summary="Live backend status of a route merged across every replica",
)
async def fleet_status(
    namespace: Namespace, name: Name, gateway: GatewayDep, session: SessionDep, _: AdminDep
) -> dict[str, Any]:
    await service.stored_route(session, namespace, name)
    rows = await repository.fresh_statuses(session, gateway.settings.status_publish_s * 3)
    return reporting.merge(f"{namespace}/{name}", rows)
