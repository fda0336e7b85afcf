"""schemathesis over the enrollment API of a real process: no 5xx, responses match the schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from azora_enrollment.app import MIGRATIONS
from tests.conftest import API_TOKEN, migrated_database
from tests.support.pg import PostgresServer
from tests.support.schemathesis import run_schemathesis
from tests.support.services import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_no_server_errors(pg: PostgresServer, tmp_path: Path) -> None:
    url = migrated_database(pg, "azora_test_enrollment_fuzz", MIGRATIONS)
    # Background tasks off: the fuzzer talks to the API alone; nothing pays (no pricing).
    env = {"ENROLLMENT_BACKGROUND_TASKS": "false"}
    with ServiceProcess("enrollment", url.replace("+asyncpg", ""), tmp_path, env=env) as service:
        result = run_schemathesis(service.url, API_TOKEN, max_examples=20)
    assert result.returncode == 0, result.stdout[-5000:]
