"""schemathesis from outside, over the services as real processes, with stateful links.

``make test`` runs the light mode: the AI gateway's whole API (its data plane is fuzzed nowhere
else; enrollment, ledger and pricing have their light runs in their own test packages, and the
gateway's admin API in tests/orchestrator). ``make fuzz`` sets ``AZORA_FUZZ=deep``: all four
services, every check, positive and negative data, ``AZORA_FUZZ_EXAMPLES`` (300) examples per
operation, the stateful phase; it asserts zero 5xx and writes the counts of every check to
``AZORA_FUZZ_OUT`` (one JSON per service) for bench/results/fuzz-<date>.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fuzz.runner import run_fuzz
from tests.support.openai_stub import StubBackend
from tests.support.pg import PostgresServer
from tests.support.services import ADMIN_TOKEN, API_TOKEN, ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEEP = os.environ.get("AZORA_FUZZ", "").lower() == "deep"
EXAMPLES = int(os.environ.get("AZORA_FUZZ_EXAMPLES", "300" if DEEP else "10"))
# Per service: half an hour for the deep run on a loaded 2-core machine; minutes for the light.
TIMEOUT = float(os.environ.get("AZORA_FUZZ_TIMEOUT", "1800" if DEEP else "240"))
ALL_SERVICES = ["enrollment", "ledger", "pricing", "orchestrator"]
# ``make fuzz`` runs one pytest per service (AZORA_FUZZ_SERVICES=ledger), one after another.
SERVICES = os.environ.get("AZORA_FUZZ_SERVICES", "").split() or (
    ALL_SERVICES if DEEP else ["orchestrator"]
)
# One token with every API scope and admin, so the admin routes are fuzzed past auth too
# (schemathesis sends one Authorization header; its ignored_auth check drops it).
FUZZ_TOKEN = "fuzz-token-0123456789abcdef"


def _env(prefix: str) -> dict[str, str]:
    return {f"{prefix}API_TOKENS": json.dumps({FUZZ_TOKEN: ["*", "admin"], API_TOKEN: ["*"]})}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _seed(service: str, url: str, stub: StubBackend) -> None:
    """Data behind the first lookups, so generated requests also reach the deeper paths."""
    with httpx.Client(base_url=url, timeout=10, headers=_auth(API_TOKEN)) as http:
        admin = _auth(ADMIN_TOKEN)
        if service == "ledger":
            for code, kind in [("a", "asset"), ("b", "revenue"), ("0", "asset")]:
                http.post(
                    "/v1/accounts", json={"code": code, "type": kind, "currency": "EUR"}
                ).raise_for_status()
            posting = {"amount": 5, "currency": "EUR"}
            http.post(
                "/v1/transactions",
                json={
                    "postings": [
                        {"account": "a", "direction": "debit", **posting},
                        {"account": "b", "direction": "credit", **posting},
                    ]
                },
            ).raise_for_status()
        elif service == "pricing":
            http.put(
                "/v1/products/course",
                json={
                    "name": "Course",
                    "labels": ["course"],
                    "prices": {"EUR": {"model": "perUnit", "unitAmount": 1000}},
                },
            ).raise_for_status()
            http.put(
                "/admin/v1/pricing-rules/default/sale",
                headers=admin,
                json={
                    "generation": 1,
                    "spec": {"action": {"percentOff": "10"}, "promotion": {"code": "SALE"}},
                },
            ).raise_for_status()
        elif service == "enrollment":
            http.put(
                "/admin/v1/cohorts/default/fuzz",
                headers=admin,
                json={
                    "generation": 1,
                    "uid": "fuzz-uid",
                    "spec": {"course": "fuzz", "title": "Fuzz", "capacity": 5},
                },
            ).raise_for_status()
        elif service == "orchestrator":
            http.put(
                "/admin/v1/routes/default/fuzz",
                headers=admin,
                json={
                    "generation": 1,
                    "spec": {"model": "fuzz", "backends": [{"name": "stub", "url": stub.url}]},
                },
            ).raise_for_status()


@pytest.fixture(scope="module")
def stub(outside_tmp_module: Path) -> Iterator[StubBackend]:
    backend = StubBackend("fuzz", outside_tmp_module).start()
    try:
        yield backend
    finally:
        backend.stop()


@pytest.fixture(scope="module")
def outside_tmp_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.timeout(TIMEOUT + 120)
def test_no_server_errors(
    service: str, pg: PostgresServer, stub: StubBackend, outside_tmp_module: Path
) -> None:
    prefix = {"enrollment": "ENROLLMENT_", "ledger": "LEDGER_", "pricing": "PRICING_"}.get(
        service, "ORCHESTRATOR_"
    )
    env = _env(prefix)
    if service == "enrollment":
        # The fuzzer talks to the API alone: nothing pays (no pricing, no ledger).
        env["ENROLLMENT_BACKGROUND_TASKS"] = "false"
    out = os.environ.get("AZORA_FUZZ_OUT")
    if out:
        # A run cut short must not leave the previous run's counts behind.
        (Path(out) / f"{service}.json").unlink(missing_ok=True)
    url = pg.recreate_database(f"azora_fuzz_{service}")
    with ServiceProcess(service, url, outside_tmp_module, env=env) as proc:
        _seed(service, proc.url, stub)
        result = run_fuzz(
            service, proc.url, FUZZ_TOKEN, deep=DEEP, examples=EXAMPLES, timeout=TIMEOUT
        )
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        summary = {
            "service": service,
            "deep": DEEP,
            "examples_per_operation": EXAMPLES,
            "operations": result.operations,
            "links": result.links,
            "checks": result.checks,
            "failures": result.failures(),
            "seconds": round(result.seconds, 1),
            "returncode": result.returncode,
        }
        (Path(out) / f"{service}.json").write_text(json.dumps(summary, indent=2))
        (Path(out) / f"{service}.log").write_text(result.stdout)
    print(f"{service}: {result.operations} operations, checks {result.checks}")
    # A run that tested nothing must not pass.
    assert result.checks.get("not_a_server_error", (0, 0))[1] > 0, result.stdout[-5000:]
    assert result.server_errors == 0, result.stdout[-8000:]
    if not DEEP:
        # The light run also holds the responses to the documented schema, as the suite's
        # other schemathesis runs do; the deep run records the other checks' failures.
        assert result.returncode == 0, result.stdout[-8000:]
