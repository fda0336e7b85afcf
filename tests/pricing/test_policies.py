"""PricingPolicy: rounding per currency set through the admin API, live without a redeploy."""

from __future__ import annotations

from typing import Any

import httpx

from tests.pricing.conftest import ADMIN
from tests.pricing.test_api import assert_problem, put_rule, uniq


def policy_path(name: str) -> str:
    return f"/admin/v1/pricing-policies/default/{name}"


async def put_policy(
    client: httpx.AsyncClient, name: str, rounding: dict[str, str], generation: int = 1
) -> httpx.Response:
    return await client.put(
        policy_path(name),
        json={"generation": generation, "uid": "uid-" + name, "spec": {"rounding": rounding}},
        headers=ADMIN,
    )


async def half_cent_quote(client: httpx.AsyncClient, currency: str) -> dict[str, Any]:
    """A line whose exact total is x.5 minor units: 50 % off 1,001."""
    sku = uniq("tie")
    body = {"name": sku, "prices": {currency: {"model": "perUnit", "unitAmount": 1001}}}
    assert (await client.put(f"/v1/products/{sku}", json=body)).status_code == 201
    rule = await put_rule(
        client, uniq("half"), {"action": {"percentOff": "50"}, "target": {"products": [sku]}}
    )
    assert rule.status_code == 200, rule.text
    quote = await client.post(
        "/v1/quotes", json={"currency": currency, "lines": [{"product": sku, "quantity": 1}]}
    )
    assert quote.status_code == 201, quote.text
    rounding: dict[str, Any] = quote.json()["lines"][0]["rounding"]
    return rounding


async def test_a_policy_changes_rounding_of_its_currency_only_and_live(
    client: httpx.AsyncClient,
) -> None:
    assert await half_cent_quote(client, "CHF") == {
        "mode": "half-even",
        "exact": "500.5",
        "total": 500,
    }
    name = uniq("chf")
    written = await put_policy(client, name, {"CHF": "half-up"})
    assert written.status_code == 200, written.text
    assert await half_cent_quote(client, "CHF") == {
        "mode": "half-up",
        "exact": "500.5",
        "total": 501,
    }
    assert (await half_cent_quote(client, "EUR"))["mode"] == "half-even"
    status = await client.get(policy_path(name) + "/status", headers=ADMIN)
    assert status.status_code == 200
    assert status.json()["rounding"] == {"CHF": "half-up"}
    assert status.json()["loaded"] is True
    listed = (await client.get("/admin/v1/pricing-policies", headers=ADMIN)).json()["items"]
    assert [p["spec"] for p in listed if p["name"] == name] == [{"rounding": {"CHF": "half-up"}}]

    assert (await client.delete(policy_path(name), headers=ADMIN)).status_code == 204
    assert (await half_cent_quote(client, "CHF"))["total"] == 500
    assert (await client.delete(policy_path(name), headers=ADMIN)).status_code == 204


async def test_a_currency_is_set_by_one_policy_only(client: httpx.AsyncClient) -> None:
    first = uniq("a")
    assert (await put_policy(client, first, {"CHF": "half-up", "JPY": "half-down"})).is_success
    clash = await put_policy(client, uniq("b"), {"SEK": "half-up", "JPY": "half-up"})
    problem = assert_problem(clash, 422, "spec.rounding.JPY")
    assert problem["reason"] == "CurrencyConflict"
    assert f"default/{first}" in problem["detail"]
    # The owner itself may change its modes.
    assert (await put_policy(client, first, {"JPY": "half-up"}, generation=2)).is_success


async def test_bad_policies_are_refused_naming_the_field(client: httpx.AsyncClient) -> None:
    unknown = await put_policy(client, uniq("x"), {"XYZ": "half-up"})
    assert assert_problem(unknown, 422, "spec.rounding.XYZ")["reason"] == "UnknownCurrency"
    bad_mode = await put_policy(client, uniq("x"), {"CHF": "up"})
    assert assert_problem(bad_mode, 422)["reason"] == "InvalidSpec"
    stale = uniq("s")
    assert (await put_policy(client, stale, {"CHF": "half-up"}, generation=3)).is_success
    older = await put_policy(client, stale, {"CHF": "half-down"}, generation=2)
    assert_problem(older, 409)


async def test_delete_checks_the_documented_namespace_and_name_patterns(
    client: httpx.AsyncClient,
) -> None:
    """The deep fuzz run flagged ``DELETE …/pricing-policies/0/false`` (204): both segments are
    valid (they match the declared patterns) and deleting an absent policy is a no-op. Segments
    that break the patterns are refused with a problem naming the path parameter."""
    ok = await client.delete("/admin/v1/pricing-policies/0/false", headers=ADMIN)
    assert ok.status_code == 204, ok.text
    for path, field in [
        ("/admin/v1/pricing-policies/Bad_NS/x", "path.namespace"),
        ("/admin/v1/pricing-policies/default/-x", "path.name"),
    ]:
        assert_problem(await client.delete(path, headers=ADMIN), 422, field)
