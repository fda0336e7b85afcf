"""The service application factory shared by all four services."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from azora_common import health
from azora_common.auth import TokenAuthenticator
from azora_common.db import Database
from azora_common.errors import (
    install_problem_handlers,
    problem_body,
    problem_openapi,
    problem_response,
)
from azora_common.logs import RequestIdMiddleware, configure_logging
from azora_common.metrics import SERVICE_INFO, MetricsMiddleware, metrics_endpoint
from azora_common.migrations import head_revision
from azora_common.settings import ServiceSettings

ServiceLifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


class BodySizeLimit:
    """Refuse bodies over a limit with a 413 problem, before the app buffers them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._reject(scope, send)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._reject(scope, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        response = problem_response(
            problem_body(
                413,
                "payload-too-large",
                "Payload too large",
                f"the request body exceeds {self.max_bytes} bytes",
                scope["path"],
            )
        )
        await response(scope, _no_receive, send)


class _TooLarge(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


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
) -> FastAPI:
    """Build a FastAPI app with the platform's plumbing in place.

    ``app.state`` holds ``settings``, ``db`` (:class:`Database`), ``auth`` and ``expected_head``;
    a service's own ``lifespan`` runs inside, after the database exists.
    """
    configure_logging(settings.log_level, settings.log_json)

    @contextlib.asynccontextmanager
    async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = Database(settings)
        try:
            if lifespan is not None:
                async with lifespan(app):
                    yield
            else:
                yield
        finally:
            await app.state.db.dispose()

    app = FastAPI(
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
    # Outermost last: request id first, then metrics (so they see the final status), then size.
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(MetricsMiddleware, service=settings.service_name)
    app.add_middleware(RequestIdMiddleware)
    SERVICE_INFO.labels(settings.service_name, version).set(1)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            app.openapi_schema = problem_openapi(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                    tags=app.openapi_tags,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
