"""Session-wide fixtures: one real PostgreSQL, one database per service migrated once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from azora_common.migrations import upgrade_to_head
from tests.support.kube import KubeCluster, kube_cluster
from tests.support.pg import PostgresServer, postgres_server

ADMIN_TOKEN = "test-admin-token-0123456789"
API_TOKEN = "test-api-token-0123456789abc"


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with postgres_server(tmp_path_factory.mktemp("pg")) as server:
        yield server


def migrated_database(pg: PostgresServer, name: str, migrations: Path) -> str:
    """A fresh database for this session, migrated to head; returns its asyncpg URL."""
    url = pg.recreate_database(name)
    upgrade_to_head(migrations, url)
    return pg.async_url(name)


def token_settings() -> dict[str, object]:
    return {"admin_token": ADMIN_TOKEN, "api_tokens": {API_TOKEN: ["*"]}, "log_json": False}


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """One real API server for the whole session (or AZORA_TEST_KUBECONFIG's cluster)."""
    with kube_cluster(tmp_path_factory.mktemp("kube")) as cluster:
        yield cluster
