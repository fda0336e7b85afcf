"""Pending transactions: reserve, post (full or partial), void."""

from __future__ import annotations

import httpx

from tests.ledger.conftest import balance, transfer


async def test_pending_reserves_then_partial_post_releases_the_rest(
    wallet: httpx.AsyncClient,
) -> None:
    pending = await wallet.post(
        "/v1/transactions",
        json=transfer("liabilities:wallet", "revenue:courses", 600, pending=True),
    )
    assert pending.status_code == 201
    assert pending.json()["status"] == "pending"
    w = await balance(wallet, "liabilities:wallet")
    assert w["posted"]["balance"] == 1000
    assert w["pending"]["debits"] == 600
    assert w["available"] == 400
    # Reserved funds are not available to another spend.
    over = await wallet.post(
        "/v1/transactions", json=transfer("liabilities:wallet", "revenue:courses", 401)
    )
    assert over.status_code == 422
    assert over.json()["type"].endswith("/balance-constraint-violated")

    tx_id = pending.json()["id"]
    posted = await wallet.post(f"/v1/transactions/{tx_id}/post", json={"amount": 450})
    assert posted.status_code == 201, posted.text
    assert posted.json()["kind"] == "post"
    assert posted.json()["parent_id"] == tx_id
    assert [p["amount"] for p in posted.json()["postings"]] == [450, 450]
    w = await balance(wallet, "liabilities:wallet")
    assert w["posted"]["balance"] == 550
    assert w["pending"]["debits"] == 0
    assert w["available"] == 550
    got = (await wallet.get(f"/v1/transactions/{tx_id}")).json()
    assert got["status"] == "posted"
    assert got["children"] == [{"id": posted.json()["id"], "kind": "post"}]
    again = await wallet.post(f"/v1/transactions/{tx_id}/void")
    assert again.status_code == 409
    assert again.json()["current_status"] == "posted"


async def test_void_releases_and_resolves_once(wallet: httpx.AsyncClient) -> None:
    pending = await wallet.post(
        "/v1/transactions",
        json=transfer(
            "liabilities:wallet", "revenue:courses", 300, pending=True, timeout_seconds=3600
        ),
    )
    tx_id = pending.json()["id"]
    assert pending.json()["expires_at"] is not None
    voided = await wallet.post(f"/v1/transactions/{tx_id}/void")
    assert voided.status_code == 200
    assert voided.json()["status"] == "voided"
    assert (await balance(wallet, "liabilities:wallet"))["available"] == 1000
    post = await wallet.post(f"/v1/transactions/{tx_id}/post")
    assert post.status_code == 409
    assert post.json()["type"].endswith("/not-pending")


async def test_post_more_than_pending_is_refused(wallet: httpx.AsyncClient) -> None:
    pending = await wallet.post(
        "/v1/transactions",
        json=transfer("liabilities:wallet", "revenue:courses", 300, pending=True),
    )
    resp = await wallet.post(f"/v1/transactions/{pending.json()['id']}/post", json={"amount": 301})
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "amount"


async def test_post_of_a_transfer_is_refused(wallet: httpx.AsyncClient) -> None:
    tx = await wallet.post("/v1/transactions", json=transfer("assets:bank", "revenue:courses", 5))
    resp = await wallet.post(f"/v1/transactions/{tx.json()['id']}/post")
    assert resp.status_code == 409
    missing = await wallet.post("/v1/transactions/0190d8a4-6c2e-7c1a-8f00-000000000000/post")
    assert missing.status_code == 404
