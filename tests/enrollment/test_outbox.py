"""Enroll and pay through the outbox, against the real azora-pricing and azora-ledger processes.

With the ledger stopped, priced enrollments wait in ``pending_payment``; once it is back, each
completes with exactly one ledger transaction (checked through the ledger's own API).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import API_TOKEN
from tests.enrollment.conftest import AppFactory
from tests.enrollment.helpers import enroll, move, put_cohort, spec
from tests.support.apps import bearer, committing_client
from tests.support.pg import PostgresServer
from tests.support.services import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

PRICE = 12_000


@pytest.fixture(scope="module")
def ledger(
    pg: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    url = pg.recreate_database("azora_test_enrollment_ledger")
    with ServiceProcess("ledger", url, tmp_path_factory.mktemp("ledger")) as process:
        yield process


@pytest.fixture(scope="module")
def pricing(
    pg: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    url = pg.recreate_database("azora_test_enrollment_pricing")
    with ServiceProcess("pricing", url, tmp_path_factory.mktemp("pricing")) as process:
        yield process


@pytest.fixture
async def remote(
    ledger: ServiceProcess, pricing: ServiceProcess
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers=bearer(API_TOKEN), timeout=10) as client:
        product = await client.put(
            f"{pricing.url}/v1/products/course-101",
            json={
                "name": "Course 101",
                "prices": {"EUR": {"model": "perUnit", "unitAmount": PRICE}},
            },
        )
        assert product.status_code in (200, 201), product.text
        yield client


def _app(make_app: AppFactory, ledger: ServiceProcess, pricing: ServiceProcess) -> Any:
    return make_app(
        background_tasks=True,
        pricing_url=pricing.url,
        ledger_url=ledger.url,
        service_token=API_TOKEN,
        http_timeout_s=2.0,
        outbox_poll_interval_s=0.05,
        outbox_backoff_base_s=0.05,
        outbox_backoff_max_s=0.5,
        outbox_max_refusals=2,
        gauges_interval_s=0.2,
    )


async def _eventually(check: Callable[[], Awaitable[bool]], what: str, limit: float = 60) -> None:
    """Poll until ``check`` holds (a bound on waiting, not a speed assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        await asyncio.sleep(0.05)


async def _state(client: httpx.AsyncClient, enrollment_id: str) -> dict[str, Any]:
    return dict((await client.get(f"/v1/enrollments/{enrollment_id}")).json())


async def _ledger_transactions(
    remote: httpx.AsyncClient, ledger: ServiceProcess, enrollment_id: str
) -> list[dict[str, Any]]:
    response = await remote.get(
        f"{ledger.url}/v1/transactions", params={"reference": f"enrollment:{enrollment_id}"}
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def test_ledger_outage_delays_but_never_loses_or_doubles(
    make_app: AppFactory,
    ledger: ServiceProcess,
    pricing: ServiceProcess,
    remote: httpx.AsyncClient,
    ns: str,
) -> None:
    app = _app(make_app, ledger, pricing)
    async with committing_client(app, headers=bearer(API_TOKEN)) as client:
        await put_cohort(
            client,
            ns,
            "paid",
            spec(
                capacity=10,
                pricing={"product": "course-101", "currency": "EUR"},
                refundWindow="336h",
            ),
        )
        first = await enroll(client, f"{ns}/paid", "s0", segment="pro")
        assert first["state"] == "pending_payment"

        async def first_enrolled() -> bool:
            return (await _state(client, first["id"]))["state"] == "enrolled"

        await _eventually(first_enrolled, "first enrollment charged")

        ledger.stop()
        waiting = [await enroll(client, f"{ns}/paid", f"s{i}") for i in range(1, 5)]
        assert {w["state"] for w in waiting} == {"pending_payment"}

        async def retried_against_dead_ledger() -> bool:
            async with app.state.db.sessionmaker() as session:
                rows = (
                    await session.execute(
                        sa.text(
                            "SELECT o.attempts, o.last_error FROM outbox o "
                            "JOIN enrollments e ON e.id = o.enrollment_id "
                            "WHERE o.kind = 'charge' AND e.id = ANY(:ids)"
                        ),
                        {"ids": [w["id"] for w in waiting]},
                    )
                ).all()
            return len(rows) == 4 and all(r.attempts >= 2 and r.last_error for r in rows)

        await _eventually(retried_against_dead_ledger, "charges retried while ledger is down")
        for w in waiting:
            current = await _state(client, w["id"])
            # The quote was accepted (pricing is up); only the ledger step is waiting.
            assert current["state"] == "pending_payment"
            assert current["payment"]["amount"] == PRICE
            assert current["payment"]["transaction_id"] is None

        ledger.start()

        async def all_enrolled() -> bool:
            states = [(await _state(client, w["id"]))["state"] for w in waiting]
            return states == ["enrolled"] * 4

        await _eventually(all_enrolled, "all charges completed after the ledger returned")
        for e in [first, *waiting]:
            transactions = await _ledger_transactions(remote, ledger, e["id"])
            assert len(transactions) == 1, transactions
            current = await _state(client, e["id"])
            assert current["payment"]["transaction_id"] == transactions[0]["id"]
            postings = {
                (p["account"], p["direction"], p["amount"]) for p in transactions[0]["postings"]
            }
            assert postings == {
                ("assets:receivables:enrollment:eur", "debit", PRICE),
                (f"revenue:enrollment:{ns}:paid", "credit", PRICE),
            }
        revenue = await remote.get(f"{ledger.url}/v1/accounts/revenue:enrollment:{ns}:paid")
        assert revenue.status_code == 200, revenue.text

        # A drop inside the refund window reverses the charge, once.
        dropped = await move(client, waiting[0]["id"], "dropped")
        assert dropped["state"] == "dropped"

        async def refunded() -> bool:
            payment = (await _state(client, waiting[0]["id"]))["payment"]
            return bool(payment["refund_transaction_id"])

        await _eventually(refunded, "refund recorded")
        refund_id = (await _state(client, waiting[0]["id"]))["payment"]["refund_transaction_id"]
        reversal = await remote.get(f"{ledger.url}/v1/transactions/{refund_id}")
        assert reversal.status_code == 200, reversal.text
        # The history tells the whole story.
        history = (await client.get(f"/v1/enrollments/{waiting[0]['id']}/history")).json()
        assert [(h["from_state"], h["to_state"], h["actor"]) for h in history["items"]][1:] == [
            ("pending_payment", "enrolled", "system:payment"),
            ("enrolled", "dropped", history["items"][2]["actor"]),
        ]


async def test_refused_price_rejects_and_frees_the_seat(
    make_app: AppFactory,
    ledger: ServiceProcess,
    pricing: ServiceProcess,
    remote: httpx.AsyncClient,
    ns: str,
) -> None:
    app = _app(make_app, ledger, pricing)
    async with committing_client(app, headers=bearer(API_TOKEN)) as client:
        await put_cohort(
            client,
            ns,
            "unsold",
            spec(
                capacity=1,
                waitlist={"enabled": True},
                pricing={"product": "no-such-product", "currency": "EUR"},
            ),
        )
        doomed = await enroll(client, f"{ns}/unsold", "s0")
        waiting = await enroll(client, f"{ns}/unsold", "s1")
        assert (doomed["state"], waiting["state"]) == ("pending_payment", "waitlisted")

        async def rejected() -> bool:
            return (await _state(client, doomed["id"]))["state"] == "rejected"

        await _eventually(rejected, "payment refused for good")
        current = await _state(client, doomed["id"])
        assert current["payment"]["error"]
        assert await _ledger_transactions(remote, ledger, doomed["id"]) == []
        # The seat went to the next in line (who will be refused too, in time).
        promoted = (await client.get(f"/v1/enrollments/{waiting['id']}/history")).json()
        assert ("waitlisted", "pending_payment") in {
            (h["from_state"], h["to_state"]) for h in promoted["items"]
        }
        refused = await move(client, doomed["id"], "enrolled", expect=409)
        assert refused["type"].endswith("/invalid-transition")
        assert refused["from"] == "rejected"
