"""Pending transactions (post, partial post, void) and reversals."""

from __future__ import annotations

import httpx
import pytest

from tests.ledger.conftest import balance, open_account, transfer


@pytest.fixture
async def wallet(client: httpx.AsyncClient) -> httpx.AsyncClient:
    # A student wallet (liability) that may not go negative, funded with 1000.
    await open_account(client, "assets:bank")
    await open_account(
        client,
        "liabilities:wallet",
        "liability",
        flags={"debits_must_not_exceed_credits": True},
    )
    await open_account(client, "revenue:courses", "revenue")
    resp = await client.post(
        "/v1/transactions", json=transfer("assets:bank", "liabilities:wallet", 1000)
    )
    assert resp.status_code == 201
    return client


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


async def test_partial_reversals_never_exceed_what_is_left(wallet: httpx.AsyncClient) -> None:
    charge = await wallet.post(
        "/v1/transactions", json=transfer("liabilities:wallet", "revenue:courses", 500)
    )
    tx_id = charge.json()["id"]
    first = await wallet.post(f"/v1/transactions/{tx_id}/reverse", json={"amount": 200})
    assert first.status_code == 201, first.text
    assert first.json()["kind"] == "reversal"
    assert [(p["account"], p["direction"], p["amount"]) for p in first.json()["postings"]] == [
        ("liabilities:wallet", "credit", 200),
        ("revenue:courses", "debit", 200),
    ]
    too_much = await wallet.post(f"/v1/transactions/{tx_id}/reverse", json={"amount": 301})
    assert too_much.status_code == 422
    assert too_much.json()["remaining"] == 300
    rest = await wallet.post(f"/v1/transactions/{tx_id}/reverse")
    assert rest.status_code == 201
    assert rest.json()["postings"][0]["amount"] == 300
    assert (await balance(wallet, "revenue:courses"))["posted"]["balance"] == 0
    assert (await balance(wallet, "liabilities:wallet"))["posted"]["balance"] == 1000
    done = await wallet.post(f"/v1/transactions/{tx_id}/reverse")
    assert done.status_code == 409
    assert done.json()["type"].endswith("/already-reversed")


async def test_full_reversal_is_idempotent(wallet: httpx.AsyncClient) -> None:
    charge = await wallet.post(
        "/v1/transactions", json=transfer("liabilities:wallet", "revenue:courses", 70)
    )
    tx_id = charge.json()["id"]
    key = {"Idempotency-Key": "refund-1"}
    first = await wallet.post(f"/v1/transactions/{tx_id}/reverse", headers=key)
    replay = await wallet.post(f"/v1/transactions/{tx_id}/reverse", headers=key)
    assert first.status_code == replay.status_code == 201
    assert replay.json()["id"] == first.json()["id"]
    # Without a key, a second full reversal returns the one that happened.
    again = await wallet.post(f"/v1/transactions/{tx_id}/reverse")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert (await balance(wallet, "revenue:courses"))["posted"]["balance"] == 0


async def test_reversal_that_would_break_a_flag_is_refused(wallet: httpx.AsyncClient) -> None:
    # Top-up of 1000 reversed after 900 of it was spent would overdraw the wallet.
    topup_id = (await wallet.get("/v1/transactions")).json()["items"][-1]["id"]
    await wallet.post(
        "/v1/transactions", json=transfer("liabilities:wallet", "revenue:courses", 900)
    )
    resp = await wallet.post(f"/v1/transactions/{topup_id}/reverse")
    assert resp.status_code == 422
    assert resp.json()["constraint"] == "debits_must_not_exceed_credits"
    assert (await balance(wallet, "liabilities:wallet"))["posted"]["balance"] == 100


async def test_overdraft_limit(client: httpx.AsyncClient) -> None:
    await open_account(client, "assets:card", "asset")
    await open_account(
        client, "liabilities:credit-line", "liability", flags={"overdraft_limit": 500}
    )
    ok = await client.post(
        "/v1/transactions", json=transfer("liabilities:credit-line", "assets:card", 500)
    )
    assert ok.status_code == 201
    assert (await balance(client, "liabilities:credit-line"))["available"] == -500
    over = await client.post(
        "/v1/transactions", json=transfer("liabilities:credit-line", "assets:card", 1)
    )
    assert over.status_code == 422
    assert over.json()["constraint"] == "overdraft_limit"
