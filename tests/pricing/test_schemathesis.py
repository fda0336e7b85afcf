"""Property-based API fuzzing of azora-pricing running as a real process: no 5xx."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.pg import PostgresServer
from tests.support.schemathesis import run_schemathesis
from tests.support.services import ADMIN_TOKEN, API_TOKEN, ServiceProcess


@pytest.mark.slow
def test_pricing_api_has_no_server_errors(pg: PostgresServer, tmp_path: Path) -> None:
    pg.recreate_database("azora_test_pricing_fuzz")
    with ServiceProcess("pricing", pg.url("azora_test_pricing_fuzz"), tmp_path) as service:
        # Seed data so generated requests also reach the paths behind the first lookups.
        with httpx.Client(base_url=service.url, timeout=10) as http:
            auth = {"Authorization": f"Bearer {API_TOKEN}"}
            http.put(
                "/v1/products/course",
                headers=auth,
                json={
                    "name": "Course",
                    "labels": ["course"],
                    "prices": {"EUR": {"model": "perUnit", "unitAmount": 1000}},
                },
            ).raise_for_status()
            http.put(
                "/admin/v1/pricing-rules/default/sale",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                json={
                    "generation": 1,
                    "spec": {"action": {"percentOff": "10"}, "promotion": {"code": "SALE"}},
                },
            ).raise_for_status()
        result = run_schemathesis(service.url, API_TOKEN, max_examples=30)
    assert result.returncode == 0, result.stdout[-5000:]
