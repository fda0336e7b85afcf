"""schemathesis over the ledger API of a real process: no 5xx, responses match the schema.

The service runs as it is deployed (uvicorn, coalescing on, the hand-written fast route for
``POST /v1/transactions``), so this also checks that the fast route and the OpenAPI document
it is published under agree. Hostile bodies beyond the schema (NUL bytes, huge numbers, wrong
types) are test_fuzz_api.py's job.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from azora_ledger.app import MIGRATIONS
from tests.conftest import migrated_database
from tests.support.pg import PostgresServer
from tests.support.schemathesis import run_schemathesis
from tests.support.services import API_TOKEN, ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_no_server_errors_and_responses_match_schema(pg: PostgresServer, tmp_path: Path) -> None:
    url = migrated_database(pg, "azora_test_ledger_schemathesis", MIGRATIONS)
    with ServiceProcess("ledger", url, tmp_path) as service:
        # A few accounts and transactions, so generated reads and writes can also get past the
        # first lookup.
        with httpx.Client(
            base_url=service.url, timeout=10, headers={"Authorization": f"Bearer {API_TOKEN}"}
        ) as http:
            for code, kind in [("a", "asset"), ("b", "revenue"), ("0", "asset")]:
                http.post(
                    "/v1/accounts", json={"code": code, "type": kind, "currency": "EUR"}
                ).raise_for_status()
            http.post(
                "/v1/transactions",
                json={
                    "postings": [
                        {"account": "a", "direction": "debit", "amount": 5, "currency": "EUR"},
                        {"account": "b", "direction": "credit", "amount": 5, "currency": "EUR"},
                    ]
                },
            ).raise_for_status()
        result = run_schemathesis(service.url, API_TOKEN, max_examples=15)
    assert result.returncode == 0, result.stdout[-5000:]
    # It really ran the operations (a schema it could not load would also exit non-zero, but
    # an empty run must not pass either).
    assert "POST /v1/transactions " in result.stdout, result.stdout[-3000:]
