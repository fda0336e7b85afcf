"""Reversals: partial, full (idempotent), and refused when a flag would break."""

from __future__ import annotations

import httpx

from tests.ledger.conftest import balance, transfer


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
