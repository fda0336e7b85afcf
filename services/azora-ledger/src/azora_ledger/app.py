"""Application factory for azora-ledger."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.models import Schema
from pydantic import TypeAdapter

from azora_common.app import create_service_app
from azora_common.fastpath import install_fast_routes
from azora_common.listener import libpq_url
from azora_common.tasks import stop_tasks
from azora_ledger import __version__
from azora_ledger.accounts.api import router as accounts_router
from azora_ledger.gate import WriteGate
from azora_ledger.pending.api import router as pending_router
from azora_ledger.pending.service import run_expirer
from azora_ledger.reports.api import router as reports_router
from azora_ledger.reversals.api import router as reversals_router
from azora_ledger.settings import LedgerSettings
from azora_ledger.transactions.api import FAST_ROUTES, REQUEST_MODELS
from azora_ledger.transactions.api import router as transactions_router
from azora_ledger.transactions.coalescer import Coalescer
from azora_ledger.verify.api import router as verify_router
from azora_ledger.verify.service import run_verifier

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: LedgerSettings | None = None) -> FastAPI:
    settings = settings or LedgerSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The hot path talks asyncpg directly; this pool serves the coalescer, the expirer
        # and verification (request handlers use the request session's connection).
        pool = await asyncpg.create_pool(
            libpq_url(settings.database_url),
            min_size=1,
            max_size=settings.coalesce_workers + 2,
            server_settings={"application_name": settings.service_name},
        )
        app.state.ledger_pool = pool
        # Every writer of new transactions passes this gate (settings.write_concurrency).
        gate = WriteGate(settings.write_concurrency, database=settings.write_gate == "database")
        app.state.write_gate = gate
        app.state.coalescer = (
            Coalescer(
                pool,
                gate=gate,
                workers=settings.coalesce_workers,
                max_batch=settings.coalesce_max_batch,
                linger_seconds=settings.coalesce_linger_ms / 1000,
                overlap=settings.coalesce_overlap,
            )
            if settings.coalesce
            else None
        )
        expirer = asyncio.create_task(
            run_expirer(
                pool, settings.expiry_interval_seconds, settings.pending_gauge_interval_seconds
            )
        )
        tasks = [expirer]
        if settings.verify_interval_minutes > 0:
            tasks.append(
                asyncio.create_task(run_verifier(pool, settings.verify_interval_minutes * 60))
            )
        try:
            yield
        finally:
            await stop_tasks(*tasks)
            if app.state.coalescer is not None:
                await app.state.coalescer.close()
            await pool.close()

    app = create_service_app(
        settings=settings,
        title="Azora Ledger",
        version=__version__,
        description=(
            "A double-entry ledger: accounts, balanced transactions (two-phase, reversible), "
            "point-in-time balances, statements and reports."
        ),
        migrations=MIGRATIONS,
        routers=[
            accounts_router,
            transactions_router,
            pending_router,
            reversals_router,
            reports_router,
            verify_router,
        ],
        lifespan=lifespan,
        openapi_tags=[
            {"name": "accounts", "description": "Accounts, balances and statements"},
            {"name": "transactions", "description": "Transfers, two-phase, reversals, batches"},
            {"name": "reports", "description": "Trial balance, balance sheet, income statement"},
            {"name": "admin", "description": "Verification (admin scope)"},
        ],
    )
    install_fast_routes(app, FAST_ROUTES)
    app.openapi = _with_request_models(app.openapi, REQUEST_MODELS)  # type: ignore[method-assign]
    return app


def _with_request_models(
    openapi: Callable[[], dict[str, Any]], models: tuple[type[Any], ...]
) -> Callable[[], dict[str, Any]]:
    """The plain routes read their bodies themselves, so FastAPI does not see their models:
    add them (and the models they refer to) to the document's components, in FastAPI's order
    (sorted by name, the problem schema last)."""
    done = False

    def document() -> dict[str, Any]:
        nonlocal done
        schema = openapi()
        if not done:
            schemas: dict[str, Any] = schema["components"]["schemas"]
            found: dict[str, Any] = {}
            for model in models:
                generated = TypeAdapter(model).json_schema(
                    ref_template="#/components/schemas/{model}", mode="validation"
                )
                found.update(generated.pop("$defs", {}))
                found[model.__name__] = generated
            # Through FastAPI's own OpenAPI model, as it renders every other schema.
            found = {
                name: jsonable_encoder(Schema(**value), by_alias=True, exclude_none=True)
                for name, value in found.items()
            }
            problem = schemas.pop("Problem", None)
            merged = {**found, **schemas}
            schemas.clear()
            schemas.update({name: merged[name] for name in sorted(merged)})
            if problem is not None:
                schemas["Problem"] = problem
            done = True
        return schema

    return document
