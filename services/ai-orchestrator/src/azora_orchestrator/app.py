"""Application factory for azora-orchestrator."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from azora_common.app import create_service_app
from azora_common.fastpath import install_fast_routes
from azora_common.listener import RevisionListener
from azora_orchestrator import __version__, openapi_extra, repository
from azora_orchestrator.api import FAST_ROUTES, data_plane, key_router, router, usage_router
from azora_orchestrator.gateway import Gateway
from azora_orchestrator.health import ActiveHealthChecker
from azora_orchestrator.insight import HealthWatch
from azora_orchestrator.settings import OrchestratorSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: OrchestratorSettings | None = None) -> FastAPI:
    settings = settings or OrchestratorSettings()
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def reload() -> None:
            async with app.state.db.engine.connect() as conn:
                rows = await repository.load_routes(conn)
            gateway.install(rows)

        async def reload_keys() -> None:
            async with app.state.db.engine.connect() as conn:
                rows = await repository.load_active_keys(conn)
            gateway.install_keys(rows)

        await gateway.start()
        listener = RevisionListener(settings.database_url, repository.ROUTES_CHANNEL, reload)
        key_listener = RevisionListener(settings.database_url, repository.KEYS_CHANNEL, reload_keys)
        checker = ActiveHealthChecker(gateway)
        watch = HealthWatch(gateway, app.state.changes)
        try:
            await listener.start()
            await key_listener.start()
            await checker.start()
            await watch.start()
            app.state.listener = listener
            app.state.key_listener = key_listener
            yield
        finally:
            await watch.stop()
            await checker.stop()
            await key_listener.stop()
            await listener.stop()
            await gateway.stop()

    app = create_service_app(
        settings=settings,
        title="Azora AI Orchestrator",
        version=__version__,
        description=(
            "An OpenAI-compatible gateway with weighted, health-aware routing. The data plane "
            "(/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models) answers errors "
            "in the OpenAI error shape; the admin API answers application/problem+json."
        ),
        migrations=MIGRATIONS,
        routers=[data_plane, router, key_router, usage_router],
        lifespan=lifespan,
        insight_plurals=["routes"],
        # The data plane enforces its own limit (max_request_bytes) so it can answer in the
        # OpenAI error shape; the shared guard only stops bodies far beyond it.
        max_body_bytes=settings.max_request_bytes * 2,
    )
    app.state.gateway = gateway
    # The data plane answers as ServiceApp plain routes: the platform middleware (request id,
    # azora_http_* metrics, body guard) around a direct call of the handler.
    install_fast_routes(app, FAST_ROUTES)
    platform_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # The platform documents a problem+json 400 for every JSON body; the data plane answers
        # in the OpenAI error shape (its `default` response, openapi_extra.py) instead.
        return openapi_extra.without_problem_answers(platform_openapi())

    app.openapi = openapi  # type: ignore[method-assign]
    return app
