"""Enroll and pay through the outbox, against the real azora-pricing and azora-ledger processes.

With the ledger stopped, priced enrollments wait in ``pending_payment``; once it is back, each
completes with exactly one ledger transaction (checked through the ledger's own API).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import API_TOKEN
from tests.enrollment.conftest import AppFactory
from tests.enrollment.helpers import (
    enroll,
    eventually,
    move,
    paying_app,
    put_cohort,
    spec,
    status,
)
from tests.support.apps import bearer, committing_client
from tests.support.services import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

PRICE = 12_000


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
    app = paying_app(make_app, ledger, pricing)
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

        await eventually(first_enrolled, "first enrollment charged")

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

        await eventually(retried_against_dead_ledger, "charges retried while ledger is down")
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

        await eventually(all_enrolled, "all charges completed after the ledger returned")
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

        await eventually(refunded, "refund recorded")
        refund_id = (await _state(client, waiting[0]["id"]))["payment"]["refund_transaction_id"]
        reversal = await remote.get(f"{ledger.url}/v1/transactions/{refund_id}")
        assert reversal.status_code == 200, reversal.text
        # The history tells the whole story.
        history = (await client.get(f"/v1/enrollments/{waiting[0]['id']}/history")).json()
        assert [(h["from_state"], h["to_state"], h["actor"]) for h in history["items"]][1:] == [
            ("pending_payment", "enrolled", "system:payment"),
            ("enrolled", "dropped", history["items"][2]["actor"]),
        ]


async def _product(
    remote: httpx.AsyncClient, pricing: ServiceProcess, sku: str, prices: dict[str, int]
) -> None:
    response = await remote.put(
        f"{pricing.url}/v1/products/{sku}",
        json={
            "name": sku,
            "prices": {c: {"model": "perUnit", "unitAmount": a} for c, a in prices.items()},
        },
    )
    assert response.status_code in (200, 201), response.text


async def test_refused_price_rejects_and_frees_the_seat_then_refuses_up_front(
    make_app: AppFactory,
    ledger: ServiceProcess,
    pricing: ServiceProcess,
    remote: httpx.AsyncClient,
    ns: str,
) -> None:
    """The product loses its EUR price after the cohort was applied: the enrollments already
    taken are rejected (their seat goes to the next in line), the outbox's refused quote makes
    the cohort unpriceable, and new enrollments are refused up front (409, naming product and
    currency) instead of 201 then rejected; once the price is back, the cohort takes them again.
    """
    sku = f"{ns}-sku"
    await _product(remote, pricing, sku, {"EUR": PRICE})
    app = paying_app(make_app, ledger, pricing)
    async with committing_client(app, headers=bearer(API_TOKEN)) as client:
        applied = await put_cohort(
            client,
            ns,
            "unsold",
            spec(
                capacity=2,
                waitlist={"enabled": True},
                pricing={"product": sku, "currency": "EUR"},
            ),
        )
        assert (await status(client, ns, "unsold"))["pricing"]["verified"] is True
        # A paid seat; and this process now holds the cohort row (the hint) as it was then.
        paid = await enroll(client, f"{ns}/unsold", "s0")

        async def charged() -> bool:
            return (await _state(client, paid["id"]))["state"] == "enrolled"

        await eventually(charged, "the first enrollment is charged")
        await _product(remote, pricing, sku, {"USD": PRICE})
        # One request, so neither decision can race the outbox: a seat and a waitlist place.
        bulk = await client.post(
            f"/v1/cohorts/{ns}/unsold/enrollments:bulk",
            json={"items": [{"student": {"id": "s1"}}, {"student": {"id": "s2"}}]},
        )
        assert bulk.status_code == 200, bulk.text
        doomed, waiting = (r["enrollment"] for r in bulk.json()["results"])
        assert (doomed["state"], waiting["state"]) == ("pending_payment", "waitlisted")

        async def refused() -> bool:
            return (await status(client, ns, "unsold"))["pricing"]["state"] == "refused"

        await eventually(refused, "the outbox learns that pricing cannot price the cohort")
        now = await status(client, ns, "unsold")
        assert now["open"] is False
        assert now["revision"] > applied["revision"]  # hints of every replica are re-read
        assert now["pricing"] | {"checked_at": None} == {
            "verified": False,
            "state": "refused",
            "reason": "UnpricedCurrency",
            "detail": f"product '{sku}' has no price in EUR in azora-pricing (it has: USD)",
            "product": sku,
            "currency": "EUR",
            "checked_at": None,
        }
        # This process holds the older cohort row: refused all the same (no 201).
        late = await enroll(client, f"{ns}/unsold", "s3", expect=409)
        assert late["type"].endswith("/cohort-not-priceable")
        assert (late["product"], late["currency"], late["reason"]) == (
            sku,
            "EUR",
            "UnpricedCurrency",
        )
        assert late["cohort"] == f"{ns}/unsold"
        assert "no price in EUR" in late["detail"]
        bulk_late = await client.post(
            f"/v1/cohorts/{ns}/unsold/enrollments:bulk",
            json={"items": [{"student": {"id": "s4"}}]},
        )
        assert bulk_late.status_code == 409, bulk_late.text
        assert bulk_late.json()["type"].endswith("/cohort-not-priceable")
        # Another replica (a second app on the same database) refuses too.
        other = paying_app(make_app, ledger, pricing, background_tasks=False)
        async with committing_client(other, headers=bearer(API_TOKEN)) as second:
            again = await enroll(second, f"{ns}/unsold", "s5", expect=409)
            assert again["type"].endswith("/cohort-not-priceable")

        async def rejected() -> bool:
            return (await _state(client, doomed["id"]))["state"] == "rejected"

        await eventually(rejected, "payment refused for good")
        current = await _state(client, doomed["id"])
        assert current["payment"]["error"]
        assert await _ledger_transactions(remote, ledger, doomed["id"]) == []
        # The seat went to the next in line (who will be refused too, in time).
        promoted = (await client.get(f"/v1/enrollments/{waiting['id']}/history")).json()
        assert ("waitlisted", "pending_payment") in {
            (h["from_state"], h["to_state"]) for h in promoted["items"]
        }
        refused_move = await move(client, doomed["id"], "enrolled", expect=409)
        assert refused_move["type"].endswith("/invalid-transition")
        assert refused_move["from"] == "rejected"

        # The price is back: the background re-check makes the cohort priceable again.
        await _product(remote, pricing, sku, {"EUR": PRICE, "USD": PRICE})

        async def verified() -> bool:
            return bool((await status(client, ns, "unsold"))["pricing"]["verified"])

        await eventually(verified, "the re-check finds the price again")
        assert (await status(client, ns, "unsold"))["pricing"]["reason"] is None
        welcome = await enroll(client, f"{ns}/unsold", "s6")
        assert welcome["state"] in ("pending_payment", "waitlisted")
        # A PUT of the same generation is a replay and stays one.
        assert await put_cohort(
            client,
            ns,
            "unsold",
            spec(
                capacity=2,
                waitlist={"enabled": True},
                pricing={"product": sku, "currency": "EUR"},
            ),
        ) == {"revision": (await status(client, ns, "unsold"))["revision"], "generation": 1}
