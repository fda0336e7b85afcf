"""The routes of the admin API convention (docs/architecture.md), built once for every kind of
configuration a service holds:

- ``PUT /admin/v1/{plural}/{namespace}/{name}``: store or replace (generation-checked by the
  service through :mod:`azora_common.admin_store`), answering ``{"revision", "generation"}``;
- ``DELETE /admin/v1/{plural}/{namespace}/{name}``: remove, ``204`` also when absent;
- ``GET /admin/v1/{plural}``: everything stored, as ``{"items": [...]}``;
- ``GET /admin/v1/{plural}/{namespace}/{name}/status``: live insight for the resource's status.

A service declares an :class:`AdminKind` (what each route calls, its path parameter rules, its
body and answer models) and includes :func:`admin_routes` of it. The operation names (and so the
OpenAPI operation ids and default summaries) are ``put_{noun}``, ``delete_{noun}``,
``list_{nouns}`` and ``{noun}_status``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypedDict, TypeVar

from fastapi import APIRouter, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from azora_common.admin_store import ConfigPut, ConfigWritten
from azora_common.auth import ADMIN_SCOPE, Principal, require_scope
from azora_common.db import SessionDep

Context = TypeVar("Context")
Body = TypeVar("Body", bound=ConfigPut)


class RouteDoc(TypedDict, total=False):
    """What one route adds to its OpenAPI operation."""

    summary: str
    description: str
    responses: dict[int | str, dict[str, Any]]


@dataclass(frozen=True)
class AdminKind(Generic[Context, Body]):
    """One kind of configuration behind the admin API.

    Each callback gets ``context(request)`` first (the service object, the request itself, …),
    then the request's session; none of them commits (the session dependency does).
    """

    plural: str  # the path segment: "pricing-rules"
    noun: str  # names the operations: put_rule, delete_rule, rule_status
    nouns: str  # list_rules
    context: Callable[[Request], Context]
    put: Callable[[Context, AsyncSession, str, str, Body], Awaitable[ConfigWritten]]
    delete: Callable[[Context, AsyncSession, str, str], Awaitable[None]]
    listing: Callable[[Context, AsyncSession], Awaitable[Sequence[Mapping[str, Any]]]]
    status: Callable[[Context, AsyncSession, str, str], Awaitable[Any]]
    body: type[Body]  # the PUT body: ConfigPut or a stricter subclass
    namespace_param: Any  # Annotated[str, Path(...)] with the service's rules
    name_param: Any
    written_model: Any = ConfigWritten  # the PUT answer's model in the OpenAPI document
    listing_model: Any = dict[str, Any]
    status_model: Any = dict[str, Any]
    scope: str = ADMIN_SCOPE
    docs: Mapping[str, RouteDoc] = field(default_factory=dict)  # by "put", "delete", …


def admin_routes(kind: AdminKind[Context, Body]) -> APIRouter:
    """The four routes of ``kind``, tagged ``admin``, in the order put, delete, list, status."""
    router = APIRouter(tags=["admin"])
    collection = f"/admin/v1/{kind.plural}"
    one = collection + "/{namespace}/{name}"
    params = {
        "namespace": kind.namespace_param,
        "name": kind.name_param,
        "body": kind.body,
        "_": Annotated[Principal, require_scope(kind.scope)],
    }

    def add(
        operation: str, name: str, path: str, method: str, endpoint: Any, response_model: Any
    ) -> None:
        router.add_api_route(
            path,
            _typed(endpoint, params),
            methods=[method],
            name=name,
            response_model=response_model,
            status_code=204 if method == "DELETE" else 200,
            **kind.docs.get(operation, {}),
        )

    async def put(
        namespace: str, name: str, body: Any, request: Request, session: SessionDep, _: Principal
    ) -> Any:
        return await kind.put(kind.context(request), session, namespace, name, body)

    async def delete(
        namespace: str, name: str, request: Request, session: SessionDep, _: Principal
    ) -> Response:
        await kind.delete(kind.context(request), session, namespace, name)
        return Response(status_code=204)

    async def listing(request: Request, session: SessionDep, _: Principal) -> Any:
        return {"items": await kind.listing(kind.context(request), session)}

    async def status(
        namespace: str, name: str, request: Request, session: SessionDep, _: Principal
    ) -> Any:
        return await kind.status(kind.context(request), session, namespace, name)

    add("put", f"put_{kind.noun}", one, "PUT", put, kind.written_model)
    add("delete", f"delete_{kind.noun}", one, "DELETE", delete, None)
    add("list", f"list_{kind.nouns}", collection, "GET", listing, kind.listing_model)
    add("status", f"{kind.noun}_status", f"{one}/status", "GET", status, kind.status_model)
    return router


def _typed(endpoint: Callable[..., Any], params: Mapping[str, Any]) -> Callable[..., Any]:
    """The endpoint with the kind's parameter types: FastAPI reads them from the annotations,
    and they are only known per kind."""
    annotations = endpoint.__annotations__
    annotations.update({p: t for p, t in params.items() if p in annotations})
    return endpoint
