"""Redemption limits hold under concurrent accepts (real commits, real row locks)."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from tests.pricing.conftest import ADMIN
from tests.pricing.test_api import put_product, quote_body, uniq


async def _quotes(
    client: httpx.AsyncClient, sku: str, code: str, customers: list[str]
) -> list[str]:
    ids = []
    for customer in customers:
        response = await client.post(
            "/v1/quotes", json=quote_body(sku, codes=[code], customer={"id": customer})
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


async def _accept_all(client: httpx.AsyncClient, ids: list[str]) -> Counter[int]:
    responses = await asyncio.gather(
        *(
            client.post(f"/v1/quotes/{qid}/accept", headers={"Idempotency-Key": f"k-{qid}"})
            for qid in ids
        )
    )
    return Counter(r.status_code for r in responses)


async def test_hundred_concurrent_accepts_with_ten_redemptions_left(
    committing: httpx.AsyncClient,
) -> None:
    sku, name, code = uniq("race"), uniq("race"), uniq("RACE")
    await put_product(committing, sku)
    rule_path = f"/admin/v1/pricing-rules/default/{name}"
    put = await committing.put(
        rule_path,
        headers=ADMIN,
        json={
            "generation": 1,
            "spec": {
                "target": {"products": [sku]},
                "action": {"percentOff": "10"},
                "promotion": {"code": code, "maxRedemptions": 12},
            },
        },
    )
    assert put.status_code == 200
    try:
        # Two redemptions are used first, so ten are left when the race starts.
        used = await _quotes(committing, sku, code, ["warmup-1", "warmup-2"])
        assert await _accept_all(committing, used) == Counter({200: 2})
        ids = await _quotes(committing, sku, code, [f"c-{i}" for i in range(100)])
        outcome = await _accept_all(committing, ids)
        assert outcome == Counter({200: 10, 409: 90})
        status = (await committing.get(rule_path + "/status", headers=ADMIN)).json()
        assert status["redemptions"] == {"used": 12, "limit": 12, "remaining": 0}
        # Accepted quotes stay accepted on retry; the losers stay refused and consume nothing.
        assert (await _accept_all(committing, ids)) == Counter({200: 10, 409: 90})
        assert (await committing.get(rule_path + "/status", headers=ADMIN)).json()["redemptions"][
            "used"
        ] == 12
    finally:
        await committing.delete(rule_path, headers=ADMIN)


async def test_one_per_customer_under_concurrency(committing: httpx.AsyncClient) -> None:
    sku, name, code = uniq("once"), uniq("once"), uniq("ONCE")
    await put_product(committing, sku)
    rule_path = f"/admin/v1/pricing-rules/default/{name}"
    await committing.put(
        rule_path,
        headers=ADMIN,
        json={
            "generation": 1,
            "spec": {
                "target": {"products": [sku]},
                "action": {"percentOff": "10"},
                "promotion": {"code": code, "perCustomerLimit": 1},
            },
        },
    )
    try:
        customer = uniq("cust")
        ids = await _quotes(committing, sku, code, [customer] * 20)
        outcome = await _accept_all(committing, ids)
        assert outcome == Counter({200: 1, 409: 19})
    finally:
        await committing.delete(rule_path, headers=ADMIN)
