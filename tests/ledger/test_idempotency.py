"""``Idempotency-Key`` semantics (docs/idempotency.md): a request that began executing keeps
its answer, a business-rule refusal included; a validation failure is not stored."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from tests.ledger.conftest import balance, open_account, transfer

PROBLEM = "application/problem+json"
REPLAYED = "Idempotent-Replayed"


async def test_refused_transfer_is_replayed_after_funding(wallet: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "charge-refused"}
    body = transfer("liabilities:wallet", "revenue:courses", 1500)
    refused = await wallet.post("/v1/transactions", json=body, headers=key)
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/balance-constraint-violated")
    assert REPLAYED not in refused.headers
    funded = await wallet.post(
        "/v1/transactions", json=transfer("assets:bank", "liabilities:wallet", 5000)
    )
    assert funded.status_code == 201
    # The wallet could now pay, but the key holds the refusal: the same answer, not a charge.
    again = await wallet.post("/v1/transactions", json=body, headers=key)
    assert again.status_code == 422
    assert again.headers["content-type"] == PROBLEM
    assert again.headers[REPLAYED] == "true"
    assert again.json() == refused.json()
    assert (await balance(wallet, "revenue:courses"))["posted"]["balance"] == 0
    # Another body under the same key is refused as a reuse, naming what differs.
    other = await wallet.post(
        "/v1/transactions",
        json=transfer("liabilities:wallet", "revenue:courses", 500),
        headers=key,
    )
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert other.json()["differing_fields"] == ["postings[0].amount", "postings[1].amount"]
    assert (await balance(wallet, "revenue:courses"))["posted"]["balance"] == 0


async def test_validation_failure_is_not_stored(wallet: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "charge-invalid"}
    invalid = await wallet.post(
        "/v1/transactions",
        json=transfer("liabilities:wallet", "revenue:courses", 0),
        headers=key,
    )
    assert invalid.status_code == 422
    assert invalid.json()["type"].endswith("/validation-error")
    malformed = await wallet.post(
        "/v1/transactions",
        content=b"{",
        headers={**key, "Content-Type": "application/json"},
    )
    assert malformed.status_code == 400
    # The request never began executing: the corrected one runs under the same key.
    fixed = await wallet.post(
        "/v1/transactions",
        json=transfer("liabilities:wallet", "revenue:courses", 100),
        headers=key,
    )
    assert fixed.status_code == 201
    assert REPLAYED not in fixed.headers
    assert (await balance(wallet, "revenue:courses"))["posted"]["balance"] == 100


async def test_refused_reversal_is_replayed(wallet: httpx.AsyncClient) -> None:
    charge = await wallet.post(
        "/v1/transactions", json=transfer("liabilities:wallet", "revenue:courses", 70)
    )
    tx_id = charge.json()["id"]
    key = {"Idempotency-Key": "refund-too-much"}
    refused = await wallet.post(
        f"/v1/transactions/{tx_id}/reverse", json={"amount": 100}, headers=key
    )
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/exceeds-remaining")
    again = await wallet.post(
        f"/v1/transactions/{tx_id}/reverse", json={"amount": 100}, headers=key
    )
    assert (again.status_code, again.headers[REPLAYED]) == (422, "true")
    assert again.headers["content-type"] == PROBLEM
    assert again.json() == refused.json()
    other = await wallet.post(f"/v1/transactions/{tx_id}/reverse", json={"amount": 50}, headers=key)
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert (await balance(wallet, "revenue:courses"))["posted"]["balance"] == 70


async def test_rejected_atomic_batch_is_replayed_and_wrote_nothing(
    wallet: httpx.AsyncClient,
) -> None:
    key = {"Idempotency-Key": "batch-refused"}
    body = {
        "mode": "atomic",
        "transactions": [
            transfer("liabilities:wallet", "revenue:courses", 600),
            transfer("liabilities:wallet", "revenue:courses", 600),
        ],
    }
    refused = await wallet.post("/v1/transactions:batch", json=body, headers=key)
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/batch-rejected")
    await wallet.post("/v1/transactions", json=transfer("assets:bank", "liabilities:wallet", 500))
    again = await wallet.post("/v1/transactions:batch", json=body, headers=key)
    assert (again.status_code, again.headers[REPLAYED]) == (422, "true")
    assert again.json() == refused.json()
    assert (await balance(wallet, "revenue:courses"))["posted"]["balance"] == 0


async def test_coalesced_refusal_is_stored_once_under_concurrency(
    live: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    # Through the coalescer (the production path), with 10 racing duplicates: one refusal
    # is stored and every other request replays it, before and after the funding.
    bank, wallet = unique("bank"), unique("wallet")
    await open_account(live, bank)
    await open_account(live, wallet, "liability", flags={"debits_must_not_exceed_credits": True})
    key = {"Idempotency-Key": unique("k")}
    body = transfer(wallet, bank, 300)
    racing = await asyncio.gather(
        *(live.post("/v1/transactions", json=body, headers=key) for _ in range(10))
    )
    assert {r.status_code for r in racing} == {422}
    assert sum(REPLAYED in r.headers for r in racing) == 9
    await live.post("/v1/transactions", json=transfer(bank, wallet, 1000))
    again = await live.post("/v1/transactions", json=body, headers=key)
    assert (again.status_code, again.headers[REPLAYED]) == (422, "true")
    assert (await balance(live, wallet))["posted"]["balance"] == 1000
