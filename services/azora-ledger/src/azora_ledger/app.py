"""Application factory for azora-ledger."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from fastapi import FastAPI

from azora_common.app import create_service_app
from azora_common.fastpath import install_fast_routes
from azora_common.listener import libpq_url
from azora_ledger import __version__, service
from azora_ledger.api import FAST_ROUTES, router
from azora_ledger.coalescer import Coalescer
from azora_ledger.gate import WriteGate
from azora_ledger.metrics import PENDING_OUTSTANDING
from azora_ledger.repository import count_pending
from azora_ledger.settings import LedgerSettings

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("azora.ledger")


async def _expire_loop(pool: asyncpg.Pool, settings: LedgerSettings) -> None:
    """Release pending transactions whose timeout passed; refresh the outstanding gauge."""
    last_gauge = 0.0
    loop = asyncio.get_running_loop()
    while True:
        try:
            async with pool.acquire() as conn:
                while True:
                    async with conn.transaction():
                        expired = await service.expire_due(conn)
                    if expired < 100:
                        break
                if loop.time() - last_gauge >= settings.pending_gauge_interval_seconds:
                    PENDING_OUTSTANDING.set(await count_pending(conn))
                    last_gauge = loop.time()
        except asyncio.CancelledError:
            raise
        except Exception:  # keep expiring after a transient database error
            log.exception("expiring pending transactions failed")
        await asyncio.sleep(settings.expiry_interval_seconds)


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
            )
            if settings.coalesce
            else None
        )
        expirer = asyncio.create_task(_expire_loop(pool, settings))
        try:
            yield
        finally:
            expirer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await expirer
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
        routers=[router],
        lifespan=lifespan,
        openapi_tags=[
            {"name": "accounts", "description": "Accounts, balances and statements"},
            {"name": "transactions", "description": "Transfers, two-phase, reversals, batches"},
            {"name": "reports", "description": "Trial balance, balance sheet, income statement"},
            {"name": "admin", "description": "Verification (admin scope)"},
        ],
    )
    install_fast_routes(app, FAST_ROUTES)
    return app
