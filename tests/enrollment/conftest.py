"""Fixtures for azora-enrollment: one migrated database per session, app factories."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from azora_enrollment.app import MIGRATIONS, create_app
from azora_enrollment.settings import EnrollmentSettings
from tests.conftest import API_TOKEN, migrated_database, token_settings
from tests.support.apps import bearer, rollback_client
from tests.support.pg import PostgresServer
from tests.support.services import ServiceProcess

AppFactory = Callable[..., FastAPI]


@pytest.fixture(scope="session")
def enrollment_db(pg: PostgresServer) -> str:
    return migrated_database(pg, "azora_test_enrollment", MIGRATIONS)


@pytest.fixture(scope="session")
def make_app(enrollment_db: str) -> AppFactory:
    def factory(**overrides: Any) -> FastAPI:
        values: dict[str, Any] = {
            **token_settings(),
            "database_url": enrollment_db,
            "background_tasks": False,
            "db_pool_size": 20,
            "db_max_overflow": 20,
            # Nothing listens here: a priced cohort PUT without a pricing test process is
            # "pricing unavailable" (accepted, unverified), never someone else's pricing.
            "pricing_url": "http://127.0.0.1:9",
        }
        values.update(overrides)
        return create_app(EnrollmentSettings(**values))

    return factory


@pytest.fixture
async def client(make_app: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    """Per-test rollback: nothing a test writes survives it."""
    app = make_app()
    async with rollback_client(app, headers=bearer(API_TOKEN)) as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


@pytest.fixture
def ns() -> str:
    """A namespace unique to the test, so committing tests never see each other's cohorts."""
    return "t-" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def ledger(
    pg: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """A real azora-ledger process (the outbox's charges land here)."""
    url = pg.recreate_database("azora_test_enrollment_ledger")
    with ServiceProcess("ledger", url, tmp_path_factory.mktemp("ledger")) as process:
        yield process


@pytest.fixture(scope="session")
def pricing(
    pg: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """A real azora-pricing process (quotes; the products a priced cohort names)."""
    url = pg.recreate_database("azora_test_enrollment_pricing")
    with ServiceProcess("pricing", url, tmp_path_factory.mktemp("pricing")) as process:
        yield process
