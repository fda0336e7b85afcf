"""Fixtures for azora-pricing: one migrated database per session, apps with real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from azora_pricing.app import MIGRATIONS, create_app
from azora_pricing.settings import PricingSettings
from tests.conftest import ADMIN_TOKEN, API_TOKEN, migrated_database, token_settings
from tests.support.apps import bearer, committing_client, rollback_client
from tests.support.pg import PostgresServer

DB_NAME = "azora_test_pricing"


@pytest.fixture(scope="session")
def pricing_db(pg: PostgresServer) -> str:
    return migrated_database(pg, DB_NAME, MIGRATIONS)


def make_settings(database_url: str, **overrides: Any) -> PricingSettings:
    values: dict[str, Any] = {"database_url": database_url, **token_settings(), **overrides}
    return PricingSettings(**values)


def make_app(database_url: str, **overrides: Any) -> FastAPI:
    return create_app(make_settings(database_url, **overrides))


@pytest.fixture
async def client(pricing_db: str) -> AsyncIterator[httpx.AsyncClient]:
    """Every request of the test in one transaction that is rolled back afterwards."""
    async with rollback_client(make_app(pricing_db), headers=bearer(API_TOKEN)) as c:
        yield c


@pytest.fixture
async def committing(pricing_db: str) -> AsyncIterator[httpx.AsyncClient]:
    async with committing_client(make_app(pricing_db), headers=bearer(API_TOKEN)) as c:
        yield c


ADMIN = bearer(ADMIN_TOKEN)
