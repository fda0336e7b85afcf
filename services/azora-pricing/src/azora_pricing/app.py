"""Application factory for azora-pricing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI

from azora_common.app import create_service_app
from azora_common.db import Database
from azora_common.fastpath import install_fast_routes
from azora_common.listener import RevisionListener
from azora_pricing import __version__
from azora_pricing.api import FAST_ROUTES, router
from azora_pricing.quote_writer import QuoteWriter
from azora_pricing.service import PricingService
from azora_pricing.settings import PricingSettings
from azora_pricing.snapshot import SnapshotHolder

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: PricingSettings | None = None) -> FastAPI:
    settings = settings or PricingSettings()
    holder = SnapshotHolder()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db: Database = app.state.db

        async def reload() -> None:
            # REPEATABLE READ: revision, products and rules come from one consistent view.
            async with db.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
                async with conn.begin():
                    await holder.reload(conn)

        listener = RevisionListener(settings.database_url, settings.notify_channel, reload)
        await listener.start()
        app.state.listener = listener
        writer = (
            QuoteWriter(db.engine, max_batch=settings.quote_write_max_batch)
            if settings.coalesce_quote_writes
            else None
        )
        app.state.quote_writer = writer
        try:
            yield
        finally:
            # Requests have finished by now (the server drains them before the lifespan
            # ends); whatever is still queued is written and answered before the pool goes.
            try:
                if writer is not None:
                    app.state.quote_writer = None
                    await writer.close()
            finally:
                await listener.stop()

    app = create_service_app(
        settings=settings,
        title="Azora Pricing",
        version=__version__,
        description="A dynamic pricing engine: products, rules, promotions and explainable quotes.",
        migrations=MIGRATIONS,
        routers=[router],
        lifespan=lifespan,
        insight_plurals=["pricing-rules"],
        openapi_tags=[
            {"name": "products", "description": "Products and their prices per currency."},
            {"name": "quotes", "description": "Quotes with a full price trace; acceptance."},
            {"name": "admin", "description": "PricingRule admin API (called by the operator)."},
        ],
    )
    install_fast_routes(app, FAST_ROUTES)
    app.state.pricing = PricingService(settings, holder)
    app.state.quote_writer = None
    app.state.snapshot = holder
    return app
