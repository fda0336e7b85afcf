"""Application factory for azora-orchestrator."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI

from azora_common.app import create_service_app
from azora_common.listener import RevisionListener
from azora_orchestrator import __version__, openapi_extra, repository
from azora_orchestrator.api import router
from azora_orchestrator.health import ActiveHealthChecker
from azora_orchestrator.proxy import Gateway, HotPath
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

        await gateway.start()
        listener = RevisionListener(settings.database_url, repository.ROUTES_CHANNEL, reload)
        checker = ActiveHealthChecker(gateway)
        try:
            await listener.start()
            await checker.start()
            app.state.listener = listener
            yield
        finally:
            await checker.stop()
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
        routers=[router],
        lifespan=lifespan,
        # The data plane enforces its own limit (max_request_bytes) so it can answer in the
        # OpenAI error shape; the shared guard only stops bodies far beyond it.
        max_body_bytes=settings.max_request_bytes * 2,
    )
    app.state.gateway = gateway
    # Hot-path routes first, so the router matches them before anything else.
    # The data-plane routes stay in the router (so a wrong method gets the usual 405 and the
    # routes are visible), but requests to them enter through HotPath, around the stack.
    app.router.routes[0:0] = gateway.routes()
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: HotPath(build_stack(), gateway)  # type: ignore[method-assign]
    openapi_extra.install(app)
    return app
