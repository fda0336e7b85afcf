"""The service application factory shared by all four services."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI

from azora_common import health
from azora_common.auth import TokenAuthenticator
from azora_common.changes import ChangeFeed, changes_router
from azora_common.db import Database
from azora_common.errors import (
    install_problem_handlers,
    problem_openapi,
)
from azora_common.fastpath import ServiceApp
from azora_common.logs import configure_logging
from azora_common.metrics import SERVICE_INFO, metrics_endpoint
from azora_common.middleware import PlatformMiddleware
from azora_common.migrations import head_revision
from azora_common.runtime import tune_gc
from azora_common.settings import ServiceSettings


def parameters_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Path, query and header parameters are strings on the wire and can never be JSON null:
    an optional one (``str | None = None``) is documented by FastAPI as ``anyOf [X, null]``,
    which says less than the server enforces (a fuzzer's "null" passes as the 4-letter text).
    Being optional is ``required: false``; the schema is X alone, keeping title/description."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                param_schema = parameter.get("schema", {})
                branches = param_schema.get("anyOf")
                if not isinstance(branches, list):
                    continue
                rest = [b for b in branches if b != {"type": "null"}]
                if len(rest) == 1 and len(rest) < len(branches):
                    outer = {
                        k: v
                        for k, v in param_schema.items()
                        if k != "anyOf" and not (k == "default" and v is None)
                    }
                    parameter["schema"] = {**rest[0], **outer}
    return schema


ServiceLifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


def create_service_app(
    *,
    settings: ServiceSettings,
    title: str,
    version: str,
    description: str,
    migrations: Path,
    routers: Sequence[APIRouter],
    lifespan: ServiceLifespan | None = None,
    openapi_tags: list[dict[str, Any]] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    insight_plurals: Sequence[str] = (),
) -> FastAPI:
    """Build a FastAPI app with the platform's plumbing in place.

    ``app.state`` holds ``settings``, ``db`` (:class:`Database`), ``auth`` and ``expected_head``;
    a service's own ``lifespan`` runs inside, after the database exists. With
    ``insight_plurals`` the service also serves the insight change feed of those admin plurals
    (changes.py) from ``app.state.changes``, started before the service's own lifespan.
    """
    configure_logging(settings.log_level, settings.log_json)

    @contextlib.asynccontextmanager
    async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = Database(settings)
        feed = ChangeFeed(settings.database_url) if insight_plurals else None
        app.state.changes = feed
        if feed is not None:
            await feed.start()
        try:
            if lifespan is not None:
                async with lifespan(app):
                    tune_gc(settings.gc_threshold)  # after the service's own warm-up
                    yield
            else:
                tune_gc(settings.gc_threshold)
                yield
        finally:
            if feed is not None:
                await feed.stop()
            await app.state.db.dispose()

    app = ServiceApp(
        title=title,
        version=version,
        description=description,
        lifespan=_lifespan,
        openapi_tags=openapi_tags,
    )
    app.state.settings = settings
    app.state.auth = TokenAuthenticator.from_settings(settings)
    app.state.expected_head = head_revision(migrations)
    app.state.readiness_probes = {}
    install_problem_handlers(app)
    app.include_router(health.router)
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    for router in routers:
        app.include_router(router)
    if insight_plurals:
        app.include_router(changes_router(insight_plurals))
    app.add_middleware(
        PlatformMiddleware, service=settings.service_name, max_body_bytes=max_body_bytes
    )
    SERVICE_INFO.labels(settings.service_name, version).set(1)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            app.openapi_schema = parameters_openapi(
                problem_openapi(
                    get_openapi(
                        title=app.title,
                        version=app.version,
                        description=app.description,
                        routes=app.routes,
                        tags=app.openapi_tags,
                    )
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
