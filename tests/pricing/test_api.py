"""Products, quotes, acceptance and simulation over HTTP against a real PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import sqlalchemy as sa

from azora_pricing.models import quotes
from tests.pricing.conftest import ADMIN, make_app
from tests.support.apps import bearer, rollback_client

PROBLEM = "application/problem+json"


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def put_product(client: httpx.AsyncClient, sku: str, unit: int = 1000, **extra: Any) -> None:
    body = {"name": sku, "prices": {"EUR": {"model": "perUnit", "unitAmount": unit}}, **extra}
    response = await client.put(f"/v1/products/{sku}", json=body)
    assert response.status_code in (200, 201), response.text


async def put_rule(
    client: httpx.AsyncClient, name: str, spec: dict[str, Any], generation: int = 1
) -> httpx.Response:
    return await client.put(
        f"/admin/v1/pricing-rules/default/{name}",
        json={"generation": generation, "uid": "uid-" + name, "spec": spec},
        headers=ADMIN,
    )


def quote_body(sku: str, qty: int = 1, **extra: Any) -> dict[str, Any]:
    return {"currency": "EUR", "lines": [{"product": sku, "quantity": qty}], **extra}


def assert_problem(
    response: httpx.Response, status: int, field: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return body


async def test_product_crud(client: httpx.AsyncClient) -> None:
    sku = uniq("prod")
    body = {
        "name": "Volume course",
        "labels": ["course"],
        "prices": {
            "EUR": {
                "model": "volume",
                "tiers": [{"upTo": 5, "unitAmount": 100}, {"upTo": None, "unitAmount": 80}],
            }
        },
    }
    created = await client.put(f"/v1/products/{sku}", json=body)
    assert created.status_code == 201
    replaced = await client.put(f"/v1/products/{sku}", json={**body, "name": "Renamed"})
    assert replaced.status_code == 200
    assert replaced.json()["revision"] > created.json()["revision"]
    fetched = (await client.get(f"/v1/products/{sku}")).json()
    assert (fetched["name"], fetched["labels"]) == ("Renamed", ["course"])
    listing = (await client.get("/v1/products", params={"after": sku[:-1], "limit": 1000})).json()
    assert sku in [p["sku"] for p in listing["items"]]
    assert_problem(await client.get(f"/v1/products/{uniq('absent')}"), 404)


async def test_overlapping_tiers_are_refused_naming_the_field(client: httpx.AsyncClient) -> None:
    body = {
        "name": "x",
        "prices": {
            "EUR": {
                "model": "graduated",
                "tiers": [
                    {"upTo": 10, "unitAmount": 100},
                    {"upTo": 10, "unitAmount": 90},
                    {"unitAmount": 80},
                ],
            }
        },
    }
    problem = assert_problem(await client.put(f"/v1/products/{uniq('t')}", json=body), 422)
    assert problem["reason"] == "OverlappingTiers"
    assert problem["field"] == "prices.EUR.tiers[1].upTo"


async def test_quote_trace_and_lookup(client: httpx.AsyncClient) -> None:
    sku = uniq("course")
    await put_product(client, sku, 999, labels=["course"])
    assert (
        await put_rule(
            client,
            uniq("student"),
            {
                "target": {"products": [sku], "segments": ["student"]},
                "action": {"percentOff": "15"},
            },
        )
    ).status_code == 200
    response = await client.post(
        "/v1/quotes",
        json=quote_body(
            sku, customer={"id": "c-1", "segment": "student"}, context={"fillRatio": "0.42"}
        ),
    )
    assert response.status_code == 201, response.text
    q = response.json()
    assert (q["subtotal"], q["discount_total"], q["total"]) == (999, 150, 849)
    line = q["lines"][0]
    assert line["base"] == {"amount": 999, "detail": "perUnit: 1 x 999"}
    assert [(a["kind"], a["amount"], a["exact"]) for a in line["adjustments"]] == [
        ("percentOff", -150, "-149.85")
    ]
    assert line["rounding"] == {"mode": "half-even", "exact": "849.15", "total": 849}
    assert q["revisions"]["rules"] == {
        line["adjustments"][0]["rule"]: line["adjustments"][0]["revision"]
    }
    assert q["expires_at"] > q["created_at"]
    fetched = (await client.get(f"/v1/quotes/{q['id']}")).json()
    assert fetched["total"] == 849
    assert fetched["status"] == "open"


async def test_quote_bad_input_is_a_problem_naming_the_field(client: httpx.AsyncClient) -> None:
    sku = uniq("p")
    await put_product(client, sku)
    assert_problem(
        await client.post("/v1/quotes", json=quote_body(uniq("nope"))), 422, "lines[0].product"
    )
    assert_problem(
        await client.post("/v1/quotes", json={**quote_body(sku), "currency": "XYZ"}),
        422,
        "currency",
    )
    assert_problem(
        await client.post("/v1/quotes", json={**quote_body(sku), "currency": "eur"}),
        422,
        "currency",
    )
    assert_problem(
        await client.post("/v1/quotes", json={**quote_body(sku), "currency": "USD"}),
        422,
        "lines[0].product",
    )
    assert_problem(
        await client.post("/v1/quotes", json=quote_body(sku, -1)), 422, "lines[0].quantity"
    )
    assert_problem(
        await client.post("/v1/quotes", json={**quote_body(sku), "codes": ["NOPE"]}),
        422,
        "codes[0]",
    )
    assert_problem(
        await client.post("/v1/quotes", json={**quote_body(sku), "extra": 1}), 422, "extra"
    )


async def test_malformed_rules_are_refused_with_a_reason(client: httpx.AsyncClient) -> None:
    problem = assert_problem(
        await put_rule(client, uniq("bad"), {"action": {"percentOff": "101"}}), 422
    )
    assert (problem["reason"], problem["field"]) == ("InvalidPercent", "spec.action.percentOff")
    problem = assert_problem(
        await put_rule(
            client, uniq("bad"), {"action": {"percentOff": "1"}, "target": {"currencies": ["EURO"]}}
        ),
        422,
    )
    assert problem["reason"] == "UnknownCurrency"


async def test_accept_is_idempotent_and_consumes_one_redemption(client: httpx.AsyncClient) -> None:
    sku, name, code = uniq("p"), uniq("promo"), uniq("CODE")
    await put_product(client, sku)
    await put_rule(
        client,
        name,
        {
            "target": {"products": [sku]},
            "action": {"percentOff": "10"},
            "promotion": {"code": code, "maxRedemptions": 5},
        },
    )
    q = (
        await client.post(
            "/v1/quotes", json=quote_body(sku, codes=[code.lower()], customer={"id": "c-9"})
        )
    ).json()
    assert q["total"] == 900
    first = await client.post(f"/v1/quotes/{q['id']}/accept", headers={"Idempotency-Key": "a1"})
    assert first.status_code == 200
    assert first.json()["status"] == "accepted"
    replay = await client.post(f"/v1/quotes/{q['id']}/accept", headers={"Idempotency-Key": "a1"})
    assert replay.json() == first.json()
    assert replay.headers.get("Idempotent-Replayed") == "true"
    again = await client.post(f"/v1/quotes/{q['id']}/accept")  # no key: naturally idempotent
    assert again.json() == first.json()
    status = (
        await client.get(f"/admin/v1/pricing-rules/default/{name}/status", headers=ADMIN)
    ).json()
    assert status["redemptions"] == {"used": 1, "limit": 5, "remaining": 4}


async def test_quote_create_honours_idempotency_key(client: httpx.AsyncClient) -> None:
    sku = uniq("p")
    await put_product(client, sku)
    headers = {"Idempotency-Key": uniq("k")}
    first = await client.post("/v1/quotes", json=quote_body(sku), headers=headers)
    second = await client.post("/v1/quotes", json=quote_body(sku), headers=headers)
    assert first.json()["id"] == second.json()["id"]
    reused = await client.post("/v1/quotes", json=quote_body(sku, 2), headers=headers)
    assert assert_problem(reused, 422)["differing_fields"] == ["lines[0].quantity"]


async def test_expired_quote_cannot_be_accepted(
    client: httpx.AsyncClient,
) -> None:
    sku = uniq("p")
    await put_product(client, sku)
    q = (await client.post("/v1/quotes", json=quote_body(sku))).json()
    app = client._transport.app  # type: ignore[attr-defined]
    async with app.state.db.sessionmaker() as session:  # joins the test's outer transaction
        await session.execute(
            sa.update(quotes)
            .where(quotes.c.id == uuid.UUID(q["id"]))
            .values(expires_at=sa.func.now() - sa.text("interval '1 second'"))
        )
        await session.commit()
    problem = assert_problem(await client.post(f"/v1/quotes/{q['id']}/accept"), 409)
    assert problem["type"].endswith("/quote-expired")
    assert_problem(await client.post(f"/v1/quotes/{uuid.uuid4()}/accept"), 404)


async def test_promotion_limits_are_checked_when_quoting(client: httpx.AsyncClient) -> None:
    sku, code = uniq("p"), uniq("ONCE")
    await put_product(client, sku)
    await put_rule(
        client,
        uniq("once"),
        {
            "target": {"products": [sku]},
            "action": {"percentOff": "10"},
            "promotion": {"code": code, "perCustomerLimit": 1},
        },
    )
    anonymous = await client.post("/v1/quotes", json=quote_body(sku, codes=[code]))
    assert_problem(anonymous, 422, "customer.id")
    body = quote_body(sku, codes=[code], customer={"id": "c-1"})
    q = (await client.post("/v1/quotes", json=body)).json()
    assert (await client.post(f"/v1/quotes/{q['id']}/accept")).status_code == 200
    problem = assert_problem(await client.post("/v1/quotes", json=body), 409)
    assert problem["type"].endswith("/promotion-customer-limit")


async def test_shadow_rule_is_traced_not_applied(client: httpx.AsyncClient) -> None:
    sku = uniq("p")
    await put_product(client, sku)
    await put_rule(
        client,
        uniq("watch"),
        {"mode": "shadow", "target": {"products": [sku]}, "action": {"multiplier": "1.25"}},
    )
    q = (await client.post("/v1/quotes", json=quote_body(sku))).json()
    assert q["total"] == 1000
    assert [s["amount"] for s in q["lines"][0]["shadow"]] == [250]
    metrics = (await client.get("/metrics")).text
    assert "azora_pricing_shadow_hits_total" in metrics
    assert 'azora_pricing_quotes_total{outcome="created"}' in metrics


async def test_combination_mode_can_be_chosen_per_quote(client: httpx.AsyncClient) -> None:
    sku = uniq("p")
    await put_product(client, sku)
    for name, action in (("a", {"percentOff": "10"}), ("b", {"percentOff": "20"})):
        await put_rule(client, uniq(name), {"target": {"products": [sku]}, "action": action})
    stacked = (await client.post("/v1/quotes", json=quote_body(sku))).json()
    best = (
        await client.post("/v1/quotes", json=quote_body(sku, combination_mode="bestDeal"))
    ).json()
    assert (stacked["total"], best["total"]) == (720, 800)
    assert best["combination_mode"] == "bestDeal"


async def test_simulate_evaluates_candidates_without_saving(client: httpx.AsyncClient) -> None:
    sku, name = uniq("p"), uniq("cand")
    await put_product(client, sku)
    body = {
        "rules": [
            {
                "namespace": "default",
                "name": name,
                "spec": {"target": {"products": [sku]}, "action": {"percentOff": "50"}},
            }
        ],
        "baskets": [quote_body(sku, 2)],
    }
    response = await client.post("/v1/simulate", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["total"] == 1000
    listed = (await client.get("/admin/v1/pricing-rules", headers=ADMIN)).json()["items"]
    assert name not in [r["name"] for r in listed]
    assert (await client.post("/v1/quotes", json=quote_body(sku, 2))).json()["total"] == 2000
    bad = {**body, "rules": [{**body["rules"][0], "spec": {"action": {"percentOff": "200"}}}]}
    problem = assert_problem(await client.post("/v1/simulate", json=bad), 422)
    assert problem["field"] == "rules[0].spec.action.percentOff"


async def test_scopes_are_enforced(pricing_db: str) -> None:
    reader = "reader-token-0123456789"
    app = make_app(pricing_db, api_tokens={reader: ["pricing:read"]})
    async with rollback_client(app, headers=bearer(reader)) as client:
        assert (await client.post("/v1/quotes", json=quote_body("x"))).status_code == 403
        assert (await client.get("/admin/v1/pricing-rules")).status_code == 403
        assert (await client.get("/v1/products")).status_code == 200
        anonymous = await client.get("/v1/products", headers={"Authorization": ""})
        assert anonymous.status_code == 401


async def test_simulate_replace_ignores_live_rules(client: httpx.AsyncClient) -> None:
    sku = uniq("p")
    await put_product(client, sku)
    await put_rule(
        client, uniq("live"), {"target": {"products": [sku]}, "action": {"percentOff": "10"}}
    )
    body = {
        "replace": True,
        "baskets": [quote_body(sku)],
        "at": "2026-06-01T12:00:00Z",
        "rules": [
            {
                "namespace": "default",
                "name": "only",
                "spec": {"target": {"products": [sku]}, "action": {"percentOff": "30"}},
            }
        ],
    }
    result = (await client.post("/v1/simulate", json=body)).json()
    assert result["results"][0]["total"] == 700
    assert result["evaluated_at"] == "2026-06-01T12:00:00Z"
    body["replace"] = False
    assert (await client.post("/v1/simulate", json=body)).json()["results"][0]["total"] == 630
