"""Whether azora-pricing can price a cohort (``priceability``), against a real pricing process:
asked on PUT (422 UnknownProduct / UnpricedCurrency), accepted as unverified while pricing is
down, and verified later without anyone re-applying the cohort."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import API_TOKEN
from tests.enrollment.conftest import AppFactory
from tests.enrollment.helpers import (
    ADMIN,
    enroll,
    eventually,
    paying_app,
    put_cohort,
    spec,
    status,
)
from tests.support.apps import bearer, committing_client, rollback_client
from tests.support.services import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@pytest.fixture
async def remote(pricing: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers=bearer(API_TOKEN), timeout=10) as client:
        yield client


async def _product(
    remote: httpx.AsyncClient,
    pricing: ServiceProcess,
    sku: str,
    prices: dict[str, int],
    *,
    active: bool = True,
) -> None:
    response = await remote.put(
        f"{pricing.url}/v1/products/{sku}",
        json={
            "name": sku,
            "active": active,
            "prices": {c: {"model": "perUnit", "unitAmount": a} for c, a in prices.items()},
        },
    )
    assert response.status_code in (200, 201), response.text


def _priced(sku: str, currency: str = "EUR", **more: Any) -> dict[str, Any]:
    return spec(pricing={"product": sku, "currency": currency}, **more)


async def _refused(
    client: httpx.AsyncClient, ns: str, name: str, body: dict[str, Any], generation: int = 1
) -> dict[str, Any]:
    response = await client.put(
        f"/admin/v1/cohorts/{ns}/{name}",
        json={"generation": generation, "uid": "uid-1", "spec": body},
        headers=ADMIN,
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = dict(response.json())
    assert problem["type"].endswith("/invalid-spec")
    return problem


async def test_put_asks_pricing_for_the_product_and_its_currency(
    make_app: AppFactory,
    ledger: ServiceProcess,
    pricing: ServiceProcess,
    remote: httpx.AsyncClient,
    ns: str,
) -> None:
    sku = f"{ns}-sku"
    await _product(remote, pricing, sku, {"EUR": 9_900})
    await _product(remote, pricing, f"{ns}-retired", {"EUR": 9_900}, active=False)
    app = paying_app(make_app, ledger, pricing, background_tasks=False)
    async with rollback_client(app, headers=bearer(API_TOKEN)) as client:
        unknown = await _refused(client, ns, "c", _priced(f"{ns}-nope"))
        assert unknown["reason"] == "UnknownProduct"
        assert unknown["field"] == "spec.pricing.product"
        assert [e["field"] for e in unknown["errors"]] == ["spec.pricing.product"]
        assert (unknown["product"], unknown["currency"]) == (f"{ns}-nope", "EUR")
        assert f"'{ns}-nope'" in unknown["detail"]
        retired = await _refused(client, ns, "c", _priced(f"{ns}-retired"))
        assert retired["reason"] == "UnknownProduct"
        unpriced = await _refused(client, ns, "c", _priced(sku, "USD"))
        assert unpriced["reason"] == "UnpricedCurrency"
        assert unpriced["field"] == "spec.pricing.currency"
        assert "has no price in USD" in unpriced["detail"]
        assert "(it has: EUR)" in unpriced["detail"]
        # Nothing was stored by the refusals.
        gone = await client.get(f"/admin/v1/cohorts/{ns}/c/status", headers=ADMIN)
        assert gone.status_code == 404

        await put_cohort(client, ns, "c", _priced(sku))
        pricing_status = (await status(client, ns, "c"))["pricing"]
        assert pricing_status["checked_at"]
        assert pricing_status | {"checked_at": None} == {
            "verified": True,
            "state": "verified",
            "reason": None,
            "detail": None,
            "product": sku,
            "currency": "EUR",
            "checked_at": None,
        }
        assert (await enroll(client, f"{ns}/c", "s1"))["state"] == "pending_payment"
        # A free cohort does not ask pricing and has no pricing status.
        await put_cohort(client, ns, "free", spec())
        assert (await status(client, ns, "free"))["pricing"] is None
        # The price goes away: re-applying the same generation (the operator's resync) is
        # refused too, so Ready=False says why; the stored cohort is untouched.
        await _product(remote, pricing, sku, {"USD": 9_900})
        again = await _refused(client, ns, "c", _priced(sku))
        assert again["reason"] == "UnpricedCurrency"
        assert (await status(client, ns, "c"))["generation"] == 1
        # A stale generation is still a 409, whatever pricing says.
        await put_cohort(client, ns, "c", spec(), generation=5)
        stale = await client.put(
            f"/admin/v1/cohorts/{ns}/c",
            json={"generation": 2, "uid": "uid-1", "spec": _priced(sku)},
            headers=ADMIN,
        )
        assert stale.status_code == 409, stale.text


async def test_pricing_down_at_put_accepts_unverified_then_verifies(
    make_app: AppFactory,
    ledger: ServiceProcess,
    pricing: ServiceProcess,
    remote: httpx.AsyncClient,
    ns: str,
) -> None:
    """Configuration does not wait for a dependency: the cohort is taken and says it is not
    verified; the service checks again on its own once pricing is back."""
    sku = f"{ns}-sku"
    await _product(remote, pricing, sku, {"EUR": 9_900})
    app = paying_app(make_app, ledger, pricing)
    async with committing_client(app, headers=bearer(API_TOKEN)) as client:
        pricing.stop()
        try:
            await put_cohort(client, ns, "c", _priced(sku))
            unverified = (await status(client, ns, "c"))["pricing"]
            assert unverified["verified"] is False
            assert unverified["state"] == "unverified"
            assert unverified["reason"] == "PricingUnavailable"
            assert unverified["detail"]
            assert (await status(client, ns, "c"))["open"] is True
            # Not refused: enrollments wait in pending_payment for the outbox, as in any outage.
            waiting = await enroll(client, f"{ns}/c", "s1")
            assert waiting["state"] == "pending_payment"
        finally:
            pricing.start()

        async def verified() -> bool:
            return bool((await status(client, ns, "c"))["pricing"]["verified"])

        await eventually(verified, "pricing verified once it is back")

        async def charged() -> bool:
            view = (await client.get(f"/v1/enrollments/{waiting['id']}")).json()
            return bool(view["state"] == "enrolled")

        await eventually(charged, "the waiting enrollment is charged")


async def test_an_unverified_cohort_that_pricing_refuses_is_refused_later(
    make_app: AppFactory,
    ledger: ServiceProcess,
    pricing: ServiceProcess,
    remote: httpx.AsyncClient,
    ns: str,
) -> None:
    """Applied while pricing was down, for a product pricing does not have: the background
    re-check refuses it once pricing answers, before any enrollment shows it."""
    app = paying_app(make_app, ledger, pricing)
    async with committing_client(app, headers=bearer(API_TOKEN)) as client:
        pricing.stop()
        try:
            await put_cohort(client, ns, "c", _priced(f"{ns}-missing"))
        finally:
            pricing.start()

        async def refused() -> bool:
            return (await status(client, ns, "c"))["pricing"]["state"] == "refused"

        await eventually(refused, "the re-check learns the product is unknown")
        current = await status(client, ns, "c")
        assert current["pricing"]["reason"] == "UnknownProduct"
        assert current["open"] is False
        refusal = await enroll(client, f"{ns}/c", "s1", expect=409)
        assert refusal["type"].endswith("/cohort-not-priceable")
        assert refusal["reason"] == "UnknownProduct"
        # Creating the product lifts it.
        await _product(remote, pricing, f"{ns}-missing", {"EUR": 100})

        async def verified() -> bool:
            return bool((await status(client, ns, "c"))["pricing"]["verified"])

        await eventually(verified, "the product exists now")
        assert (await enroll(client, f"{ns}/c", "s2"))["state"] == "pending_payment"
