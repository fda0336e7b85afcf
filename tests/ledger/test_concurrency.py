"""Invariants under concurrency, with real commits (coalescing on)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from tests.ledger.conftest import balance, open_account, transfer


async def test_hot_account_with_no_overdraft_flag_is_never_overdrawn(
    live: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    bank, wallet, shop = unique("bank"), unique("wallet"), unique("shop")
    await open_account(live, bank)
    await open_account(live, wallet, "liability", flags={"debits_must_not_exceed_credits": True})
    await open_account(live, shop, "revenue")
    assert (
        await live.post("/v1/transactions", json=transfer(bank, wallet, 1000))
    ).status_code == 201

    async def spend() -> int:
        resp = await live.post("/v1/transactions", json=transfer(wallet, shop, 30))
        return resp.status_code

    statuses = await asyncio.gather(*(spend() for _ in range(50)))
    assert sorted(set(statuses)) == [201, 422]
    assert statuses.count(201) == 33  # 33 * 30 = 990 <= 1000 < 34 * 30
    w = await balance(live, wallet)
    assert w["posted"] == {"debits": 990, "credits": 1000, "balance": 10}
    assert (await balance(live, shop))["posted"]["balance"] == 990
    account = (await live.get(f"/v1/accounts/{wallet}")).json()
    assert account["version"] == 1 + 33  # no lost update: one version per applied transfer


async def test_concurrent_post_and_void_exactly_one_wins(
    live: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    a, b = unique("a"), unique("b")
    await open_account(live, a)
    await open_account(live, b, "revenue")
    for _ in range(5):
        pending = await live.post("/v1/transactions", json=transfer(a, b, 100, pending=True))
        tx_id = pending.json()["id"]
        post, void = await asyncio.gather(
            live.post(f"/v1/transactions/{tx_id}/post"),
            live.post(f"/v1/transactions/{tx_id}/void"),
        )
        assert sorted([post.status_code, void.status_code]) in ([201, 409], [200, 409])
        status = (await live.get(f"/v1/transactions/{tx_id}")).json()["status"]
        assert status == ("posted" if post.status_code == 201 else "voided")
    bal = await balance(live, a)
    assert bal["pending"]["debits"] == 0
    assert bal["posted"]["debits"] % 100 == 0


async def test_concurrent_duplicates_make_one_transaction(
    live: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    a, b = unique("a"), unique("b")
    await open_account(live, a)
    await open_account(live, b, "revenue")
    body = transfer(a, b, 5)
    keyed = await asyncio.gather(
        *(
            live.post("/v1/transactions", json=body, headers={"Idempotency-Key": unique("k")[:40]})
            for _ in range(1)
        )
    )
    key = {"Idempotency-Key": unique("same-key")}
    same = await asyncio.gather(
        *(live.post("/v1/transactions", json=body, headers=key) for _ in range(20))
    )
    assert {r.status_code for r in same} == {201}
    assert len({r.json()["id"] for r in same}) == 1
    ref_body = transfer(a, b, 5, reference=unique("ref"))
    refs = await asyncio.gather(*(live.post("/v1/transactions", json=ref_body) for _ in range(20)))
    assert sorted({r.status_code for r in refs}) in ([201], [200, 201])
    assert [r.status_code for r in refs].count(201) == 1
    assert len({r.json()["id"] for r in refs}) == 1
    assert (await balance(live, a))["posted"]["balance"] == 5 * (len(keyed) + 2)


async def test_concurrent_partial_reversals_never_exceed_the_original(
    live: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    a, b = unique("a"), unique("b")
    await open_account(live, a)
    await open_account(live, b, "revenue")
    tx = await live.post("/v1/transactions", json=transfer(a, b, 100))
    tx_id = tx.json()["id"]
    results = await asyncio.gather(
        *(live.post(f"/v1/transactions/{tx_id}/reverse", json={"amount": 30}) for _ in range(6))
    )
    assert [r.status_code for r in results].count(201) == 3
    assert (await balance(live, a))["posted"]["balance"] == 10


async def test_pending_expires_by_itself(
    live: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    a, b = unique("a"), unique("b")
    await open_account(live, a)
    await open_account(live, b, "revenue")
    pending = await live.post(
        "/v1/transactions", json=transfer(a, b, 40, pending=True, timeout_seconds=1)
    )
    tx_id = pending.json()["id"]
    status = "pending"
    for _ in range(100):  # the expirer runs every second; wait for it, not for a time
        status = (await live.get(f"/v1/transactions/{tx_id}")).json()["status"]
        if status != "pending":
            break
        await asyncio.sleep(0.1)
    assert status == "expired"
    assert (await balance(live, a))["pending"]["debits"] == 0
    late = await live.post(f"/v1/transactions/{tx_id}/post")
    assert late.status_code == 409


async def test_concurrent_large_batches_with_singles_keep_every_total(
    live: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    # Large batches (speculative rows, their own pooled transaction) and coalesced singles on
    # the same accounts at once: the write gate orders them, nothing is lost; one atomic batch
    # refused under the locks (a flagged account) leaves nothing behind.
    codes = [unique(f"acc{i}") for i in range(20)]
    for code in codes:
        await open_account(live, code)
    wallet = unique("wallet")
    await open_account(live, wallet, "liability", flags={"debits_must_not_exceed_credits": True})

    def items(k: int) -> list[dict[str, object]]:
        return [
            transfer(codes[(k + i) % 20], codes[(k + i * 7 + 1) % 20], 1 + i % 5)
            for i in range(150)
            if (k + i) % 20 != (k + i * 7 + 1) % 20
        ]

    batches = [items(k) for k in range(4)]
    refused = [*items(9), transfer(wallet, codes[0], 5)]

    async def batch(body: list[dict[str, object]], mode: str = "atomic") -> int:
        resp = await live.post("/v1/transactions:batch", json={"mode": mode, "transactions": body})
        return resp.status_code

    async def single(i: int) -> int:
        resp = await live.post("/v1/transactions", json=transfer(codes[i], codes[i + 1], 2))
        return resp.status_code

    statuses = await asyncio.gather(
        *(batch(b) for b in batches), batch(refused), *(single(i) for i in range(19))
    )
    assert statuses == [201, 201, 201, 201, 422] + [201] * 19
    expected = dict.fromkeys(codes, 0)
    for body in batches:
        for item in body:
            postings = item["postings"]
            assert isinstance(postings, list)
            expected[postings[0]["account"]] += postings[0]["amount"]
            expected[postings[1]["account"]] -= postings[1]["amount"]
    for i in range(19):
        expected[codes[i]] += 2
        expected[codes[i + 1]] -= 2
    for code in codes:
        assert (await balance(live, code))["posted"]["balance"] == expected[code], code
    assert (await balance(live, wallet))["posted"]["balance"] == 0


async def test_a_large_batch_and_singles_racing_for_the_same_references(
    live: httpx.AsyncClient, unique: Callable[[str], str]
) -> None:
    # Every reference ends up on one transaction, and nobody waits forever for anybody.
    a, b = unique("a"), unique("b")
    await open_account(live, a)
    await open_account(live, b)
    refs = [unique(f"ref{i}") for i in range(120)]
    items = [transfer(a, b, 1, reference=r) for r in refs]

    async def batch() -> list[int]:
        resp = await live.post(
            "/v1/transactions:batch", json={"mode": "independent", "transactions": items}
        )
        assert resp.status_code == 200, resp.text
        return [r["status"] for r in resp.json()["results"]]

    async def single(r: str) -> int:
        resp = await live.post("/v1/transactions", json=transfer(a, b, 1, reference=r))
        return resp.status_code

    results = await asyncio.wait_for(
        asyncio.gather(batch(), *(single(r) for r in refs[::7])), timeout=60
    )
    batch_statuses, singles = results[0], results[1:]
    assert set(batch_statuses) <= {200, 201} and set(singles) <= {200, 201}
    assert (await balance(live, a))["posted"]["balance"] == len(refs)


async def test_verify_passes_after_the_concurrent_runs(live: httpx.AsyncClient) -> None:
    from tests.conftest import ADMIN_TOKEN

    resp = await live.post("/admin/v1/verify", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["ok"] is True
    metrics = (await live.get("/metrics")).text
    assert "azora_ledger_verify_ok 1.0" in metrics
    anonymous = await live.post("/admin/v1/verify", headers={"Authorization": ""})
    assert anonymous.status_code == 401
