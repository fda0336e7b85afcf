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
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from azora_common.admin_store import ConfigPut, ConfigWritten
from azora_common.auth import AdminDep
from azora_common.db import SessionDep
from azora_common.fastpath import FastRoute
from azora_orchestrator import keys, openapi_extra, service
from azora_orchestrator.gateway import Gateway
from azora_orchestrator.routing import monotonic_to_wall
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
)


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(gateway_of)]

# -- data plane ----------------------------------------------------------------------------------
# Plain routes have no dependency solving: the handlers take the request and call gateway_of.

data_plane = APIRouter(tags=["data plane"])


@data_plane.post(
    "/v1/chat/completions",
    summary="OpenAI chat completions, routed",
    openapi_extra=openapi_extra.proxy(streams=True),
)
async def chat_completions(request: Request) -> Response:
    return await gateway_of(request).serve(request, "chat")


@data_plane.post(
    "/v1/completions",
    summary="OpenAI completions, routed",
    openapi_extra=openapi_extra.proxy(streams=True),
)
async def completions(request: Request) -> Response:
    return await gateway_of(request).serve(request, "completions")


@data_plane.post(
    "/v1/embeddings",
    summary="OpenAI embeddings, routed",
    openapi_extra=openapi_extra.proxy(streams=False),
)
async def embeddings(request: Request) -> Response:
    return await gateway_of(request).serve(request, "embeddings")


@data_plane.get(
    "/v1/models",
    summary="The public model names of all routes (OpenAI list shape)",
    openapi_extra=openapi_extra.MODELS,
)
async def models(request: Request) -> Response:
    return await gateway_of(request).serve(request, "models")


FAST_ROUTES = [
    FastRoute("/v1/chat/completions", chat_completions, methods=["POST"]),
    FastRoute("/v1/completions", completions, methods=["POST"]),
    FastRoute("/v1/embeddings", embeddings, methods=["POST"]),
    FastRoute("/v1/models", models, methods=["GET"]),
]

# -- admin ---------------------------------------------------------------------------------------

router = APIRouter(prefix="/admin/v1/routes", tags=["admin"])

_K8S_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
Namespace = Annotated[str, Path(pattern=_K8S_NAME, max_length=253)]
Name = Annotated[str, Path(pattern=_K8S_NAME, max_length=253)]


@router.get("", response_model=RouteList, summary="All stored routes (apiKey omitted)")
async def list_routes(session: SessionDep, _: AdminDep) -> dict[str, object]:
    return {"items": await service.list_routes(session)}


@router.put(
    "/{namespace}/{name}",
    summary="Store or replace a route (idempotent, generation-stamped)",
    responses={409: {"description": "stale generation"}, 422: {"description": "spec rejected"}},
)
async def put_route(
    namespace: Namespace, name: Name, body: ConfigPut, session: SessionDep, _: AdminDep
) -> ConfigWritten:
    return await service.put_route(session, namespace, name, body)


@router.delete("/{namespace}/{name}", status_code=204, summary="Remove a route (also when absent)")
async def delete_route(
    namespace: Namespace, name: Name, session: SessionDep, _: AdminDep
) -> Response:
    await service.delete_route(session, namespace, name)
    return Response(status_code=204)


@router.get(
    "/{namespace}/{name}/status",
    response_model=RouteStatus,
    summary="Live per-backend health, load and latency on this replica",
)
async def route_status(
    namespace: Namespace, name: Name, gateway: GatewayDep, session: SessionDep, _: AdminDep
) -> RouteStatus:
    row = await service.stored_route(session, namespace, name)
    live = gateway.table.by_key.get(f"{namespace}/{name}")
    backends: list[BackendStatus] = []
    now = time.monotonic()
    if live is not None:
        for b in live.backends:
            st = b.state
            ejected = st.ejected and st.ejected_until > now
            backends.append(
                BackendStatus(
                    name=b.cfg.name,
                    healthy=live.healthy(b, now),
                    ejected_until=(
                        datetime.fromtimestamp(monotonic_to_wall(st.ejected_until), UTC)
                        .isoformat()
                        .replace("+00:00", "Z")
                        if ejected
                        else None
                    ),
                    in_flight=st.in_flight,
                    effective_weight=round(live.effective_weight(b, now), 3),
                    latency_ms_ewma=None if st.ewma_s is None else round(st.ewma_s * 1000, 3),
                    error_rate=round(st.error_rate, 4),
                )
            )
        strategy = live.strategy
    else:
        # Stored but not loaded yet on this replica (the reload is under way): report the
        # configuration with neutral live values rather than nothing.
        spec = RouteSpec.model_validate(row.spec)
        strategy = spec.strategy
        for bs in spec.backends:
            backends.append(
                BackendStatus(
                    name=bs.name,
                    healthy=True,
                    ejected_until=None,
                    in_flight=0,
                    effective_weight=float(bs.weight),
                    latency_ms_ewma=None,
                    error_rate=0.0,
                )
            )
    return RouteStatus(
        revision=int(row.revision),
        generation=int(row.generation),
        strategy=strategy,
        backends=backends,
        healthy=sum(1 for b in backends if b.healthy),
        total=len(backends),
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
