from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.common.sample_app import MIGRATIONS, SampleSettings, create_app
from tests.conftest import API_TOKEN, migrated_database, token_settings
from tests.support.apps import bearer, rollback_client
from tests.support.pg import PostgresServer


@pytest.fixture(scope="session")
def sample_db(pg: PostgresServer) -> str:
    return migrated_database(pg, "azora_test_common", MIGRATIONS)


@pytest.fixture
def settings(sample_db: str) -> SampleSettings:
    return SampleSettings(database_url=sample_db, **token_settings())  # type: ignore[arg-type]


@pytest.fixture
async def client(settings: SampleSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with rollback_client(app, bearer(API_TOKEN)) as c:
        c.app = app  # type: ignore[attr-defined]
        yield c
