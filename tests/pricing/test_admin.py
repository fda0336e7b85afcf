"""The PricingRule admin API (operator convention) and live reload on every replica."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import httpx

from tests.conftest import API_TOKEN
from tests.pricing.conftest import ADMIN, make_app
from tests.pricing.test_api import assert_problem, put_product, quote_body, uniq
from tests.support.apps import bearer, committing_client

SPEC = {"action": {"percentOff": "10"}}


async def eventually(condition: Callable[[], bool]) -> None:
    # A bound for a hung listener, not a speed check.
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition never became true")


def path(name: str) -> str:
    return f"/admin/v1/pricing-rules/default/{name}"


async def test_generations_revisions_and_idempotent_put(client: httpx.AsyncClient) -> None:
    name = uniq("rule")
    first = await client.put(
        path(name), json={"generation": 2, "uid": "u1", "spec": SPEC}, headers=ADMIN
    )
    assert first.status_code == 200
    revision = first.json()["revision"]
    same = await client.put(
        path(name), json={"generation": 2, "uid": "u1", "spec": SPEC}, headers=ADMIN
    )
    assert same.json() == {"revision": revision, "generation": 2}
    stale = await client.put(
        path(name), json={"generation": 1, "uid": "u1", "spec": SPEC}, headers=ADMIN
    )
    problem = assert_problem(stale, 409)
    assert problem["type"].endswith("/stale-generation")
    assert problem["stored_generation"] == 2
    newer = await client.put(
        path(name),
        json={"generation": 3, "uid": "u1", "spec": {"action": {"percentOff": "20"}}},
        headers=ADMIN,
    )
    assert newer.json()["revision"] > revision
    items = (await client.get("/admin/v1/pricing-rules", headers=ADMIN)).json()["items"]
    mine = next(i for i in items if i["name"] == name)
    assert (mine["generation"], mine["uid"], mine["spec"]) == (
        3,
        "u1",
        {"action": {"percentOff": "20"}},
    )


async def test_delete_is_idempotent_and_status_404s_after(client: httpx.AsyncClient) -> None:
    name = uniq("gone")
    await client.put(path(name), json={"generation": 1, "uid": "u", "spec": SPEC}, headers=ADMIN)
    assert (await client.get(path(name) + "/status", headers=ADMIN)).status_code == 200
    assert (await client.delete(path(name), headers=ADMIN)).status_code == 204
    assert (await client.delete(path(name), headers=ADMIN)).status_code == 204
    assert_problem(await client.get(path(name) + "/status", headers=ADMIN), 404)


async def test_status_reports_schedule_mode_and_redemptions(client: httpx.AsyncClient) -> None:
    name = uniq("later")
    spec = {
        "action": {"percentOff": "10"},
        "mode": "shadow",
        "schedule": {"validFrom": "2999-01-01T00:00:00Z"},
        "promotion": {"code": uniq("FUTURE"), "maxRedemptions": 3},
    }
    put = await client.put(
        path(name), json={"generation": 4, "uid": "u", "spec": spec}, headers=ADMIN
    )
    status = (await client.get(path(name) + "/status", headers=ADMIN)).json()
    assert status["revision"] == put.json()["revision"]
    assert status["generation"] == 4
    assert (status["active"], status["mode"]) == (False, "shadow")
    assert status["redemptions"] == {"used": 0, "limit": 3, "remaining": 3}


async def test_promotion_codes_are_unique_across_rules(client: httpx.AsyncClient) -> None:
    code = uniq("DUP")
    spec = {"action": {"percentOff": "10"}, "promotion": {"code": code}}
    ok = await client.put(path(uniq("a")), json={"generation": 1, "spec": spec}, headers=ADMIN)
    assert ok.status_code == 200
    clash = {**spec, "promotion": {"code": code.lower()}}
    problem = assert_problem(
        await client.put(path(uniq("b")), json={"generation": 1, "spec": clash}, headers=ADMIN),
        422,
    )
    assert (problem["reason"], problem["field"]) == (
        "DuplicatePromotionCode",
        "spec.promotion.code",
    )


async def test_stale_generation_leaves_the_rule_unchanged(client: httpx.AsyncClient) -> None:
    name, sku = uniq("keep"), uniq("p")
    await put_product(client, sku)
    spec = {"target": {"products": [sku]}, "action": {"percentOff": "10"}}
    await client.put(path(name), json={"generation": 5, "spec": spec}, headers=ADMIN)
    await client.put(
        path(name),
        json={"generation": 4, "spec": {**spec, "action": {"percentOff": "90"}}},
        headers=ADMIN,
    )
    assert (await client.post("/v1/quotes", json=quote_body(sku))).json()["total"] == 900


async def test_a_change_reaches_every_replica_through_notify(pricing_db: str) -> None:
    # Two app instances on one database stand for two replicas; only A receives the write.
    sku, name = uniq("p"), uniq("live")
    replica_a = make_app(pricing_db)
    replica_b = make_app(pricing_db)
    async with (
        committing_client(replica_a, headers=bearer(API_TOKEN)) as a,
        committing_client(replica_b, headers=bearer(API_TOKEN)),
    ):
        await put_product(a, sku)
        put = await a.put(
            path(name),
            headers=ADMIN,
            json={
                "generation": 1,
                "spec": {"target": {"products": [sku]}, "action": {"percentOff": "10"}},
            },
        )
        revision = put.json()["revision"]
        try:
            holder = replica_b.state.snapshot
            await eventually(lambda: holder.snapshot.revision >= revision)
            # B's snapshot was rebuilt by its listener, without any request to B.
            assert f"default/{name}" in holder.snapshot.index.by_key
            assert sku in holder.snapshot.products
        finally:
            await a.delete(path(name), headers=ADMIN)
        await eventually(lambda: f"default/{name}" not in holder.snapshot.index.by_key)


async def test_uid_is_stored(client: httpx.AsyncClient) -> None:
    name, uid = uniq("uid"), str(uuid.uuid4())
    await client.put(path(name), json={"generation": 1, "uid": uid, "spec": SPEC}, headers=ADMIN)
    items = (await client.get("/admin/v1/pricing-rules", headers=ADMIN)).json()["items"]
    assert next(i for i in items if i["name"] == name)["uid"] == uid
