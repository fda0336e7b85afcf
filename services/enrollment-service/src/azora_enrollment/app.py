"""Application factory for azora-enrollment, with its background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI

from azora_common.app import create_service_app
from azora_common.db import Database
from azora_common.fastpath import install_fast_routes
from azora_common.tasks import stop_tasks
from azora_enrollment import __version__, lifecycle, metrics, priceability
from azora_enrollment import repository as repo
from azora_enrollment.analytics import ratio
from azora_enrollment.api import FAST_ROUTES, router
from azora_enrollment.clock import Clock
from azora_enrollment.outbox import OutboxWorker, PaymentClient
from azora_enrollment.settings import EnrollmentSettings

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("azora.enrollment")


async def _every(interval: float, name: str, work: Callable[[], Awaitable[int]]) -> None:
    """Run ``work`` forever; when it found something to do, go again without sleeping."""
    while True:
        try:
            busy = await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task %s failed; retrying", name)
            busy = 0
        if not busy:
            await asyncio.sleep(interval)


async def sweep_offers_once(db: Database, clock: Clock) -> int:
    async with db.sessionmaker() as session, session.begin():
        return await lifecycle.sweep_expired_offers(session, clock.now())


async def recheck_pricing_once(db: Database, client: PaymentClient, clock: Clock) -> int:
    await priceability.recheck(db.sessionmaker, client, clock.now())
    return 0  # never "busy": one pass per interval, whatever changed


async def refresh_gauges(db: Database) -> int:
    async with db.sessionmaker() as session:
        rows = await repo.cohort_gauges(session)
        metrics.OUTBOX_PENDING.set(await repo.pending_jobs(session))
    for r in rows:
        key = f"{r.namespace}/{r.name}"
        if r.deleted_at is not None:
            for gauge in metrics.COHORT_GAUGES:
                with contextlib.suppress(KeyError):
                    gauge.remove(key)
            continue
        metrics.COHORT_SEATS_TAKEN.labels(key).set(r.seats_taken)
        metrics.COHORT_WAITLISTED.labels(key).set(r.waitlisted)
        if r.capacity is None:
            for gauge in (metrics.COHORT_CAPACITY, metrics.COHORT_FILL_RATIO):
                with contextlib.suppress(KeyError):
                    gauge.remove(key)
        else:
            metrics.COHORT_CAPACITY.labels(key).set(r.capacity)
            fill = ratio(r.seats_taken, r.capacity)
            metrics.COHORT_FILL_RATIO.labels(key).set(float(fill) if fill is not None else 0.0)
    return 0


def create_app(settings: EnrollmentSettings | None = None) -> FastAPI:
    settings = settings or EnrollmentSettings()
    clock = Clock()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db: Database = app.state.db
        client = PaymentClient(settings)
        worker = OutboxWorker(db.sessionmaker, client, settings, app.state.clock)
        app.state.outbox = worker
        app.state.payment_client = client
        tasks: list[asyncio.Task[None]] = []
        if settings.background_tasks:
            tasks = [
                asyncio.create_task(
                    _every(settings.outbox_poll_interval_s, "outbox", worker.run_once),
                    name="enrollment-outbox",
                ),
                asyncio.create_task(
                    _every(
                        settings.offer_sweep_interval_s,
                        "offer-expiry",
                        lambda: sweep_offers_once(db, app.state.clock),
                    ),
                    name="enrollment-offer-expiry",
                ),
                asyncio.create_task(
                    _every(settings.gauges_interval_s, "gauges", lambda: refresh_gauges(db)),
                    name="enrollment-gauges",
                ),
                asyncio.create_task(
                    _every(
                        settings.pricing_recheck_interval_s,
                        "pricing-recheck",
                        lambda: recheck_pricing_once(db, client, app.state.clock),
                    ),
                    name="enrollment-pricing-recheck",
                ),
            ]
        try:
            yield
        finally:
            await stop_tasks(*tasks)
            await client.aclose()

    app = create_service_app(
        settings=settings,
        title="Azora Enrollment",
        version=__version__,
        description="Student enrollment, waitlists and analytics that never over-enroll.",
        migrations=MIGRATIONS,
        routers=[router],
        lifespan=lifespan,
        insight_plurals=["cohorts"],
        openapi_tags=[
            {"name": "enrollments", "description": "Take a seat or a waitlist place"},
            {"name": "cohorts", "description": "Cohort views, waitlists and bulk enrollment"},
            {"name": "analytics", "description": "Fill rate, conversion, time-to-seat"},
            {"name": "admin", "description": "The operator's API (admin scope)"},
        ],
    )
    app.state.clock = clock
    # POST /v1/enrollments without the framework's per-request machinery (api.create_enrollment).
    install_fast_routes(app, FAST_ROUTES)
    return app


__all__ = ["MIGRATIONS", "create_app", "repo"]
