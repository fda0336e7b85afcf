"""Session-wide fixtures: one real PostgreSQL, one database per service migrated once."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from azora_common.migrations import upgrade_to_head
from tests.support.kube import KubeCluster, kube_cluster
from tests.support.pg import PostgresServer, postgres_server

ADMIN_TOKEN = "test-admin-token-0123456789"
API_TOKEN = "test-api-token-0123456789abc"


def _outside_pytest_tmp() -> Iterator[Path]:
    # PostgreSQL runs as an unprivileged user when the tests run as root. pytest keeps its
    # temp root at mode 0700 and resets it whenever another pytest starts, which would cut
    # that user off mid-run, so its directories live outside pytest's temp root.
    path = Path(tempfile.mkdtemp(prefix="azora-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """Like ``tmp_path``, but reachable by the unprivileged PostgreSQL user."""
    yield from _outside_pytest_tmp()


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    for work_dir in _outside_pytest_tmp():
        with postgres_server(work_dir) as server:
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
