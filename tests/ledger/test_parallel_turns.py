"""Parallel write turns: writers whose accounts (and references) are disjoint hold turns at
once (gate.py), and the coalescer applies batches side by side on disjoint accounts. Nothing
may be lost, doubled or overdrawn, and no two holders may share an account."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from azora_ledger.gate import EVERYTHING, WriteGate, resources
from tests.conftest import ADMIN_TOKEN, API_TOKEN
from tests.ledger.conftest import balance, ledger_app, open_account, transfer
from tests.support.apps import bearer, committing_client


async def test_disjoint_turns_are_held_together_overlapping_ones_wait() -> None:
    gate = WriteGate(2)
    a = await gate.acquire(resources(["a", "b"]))
    b = await gate.acquire(resources(["c"]))  # disjoint: at once
    assert gate.holding == 2
    overlapping = asyncio.create_task(gate.acquire(resources(["b", "d"])))
    await asyncio.sleep(0.01)
    assert not overlapping.done()
    gate.release(b)
    await asyncio.sleep(0.01)
    assert not overlapping.done()  # still shares "b" with a holder
    gate.release(a)
    assert await asyncio.wait_for(overlapping, 1) == resources(["b", "d"])


async def test_width_caps_the_holders_and_a_reference_is_a_resource() -> None:
    gate = WriteGate(2)
    await gate.acquire(resources(["a"], ["ref-1"]))
    await gate.acquire(resources(["b"]))
    third = asyncio.create_task(gate.acquire(resources(["c"])))
    await asyncio.sleep(0.01)
    assert not third.done()  # width 2
    gate.release(resources(["b"]))
    await asyncio.wait_for(third, 1)
    gate.release(resources(["c"]))
    same_reference = asyncio.create_task(gate.acquire(resources(["z"], ["ref-1"])))
    await asyncio.sleep(0.01)
    assert not same_reference.done()
    gate.release(resources(["a"], ["ref-1"]))
    await asyncio.wait_for(same_reference, 1)


async def test_a_waiter_is_not_overtaken_by_a_later_one_it_conflicts_with() -> None:
    gate = WriteGate(4)
    holder = await gate.acquire(resources(["a"]))
    order: list[str] = []

    async def take(name: str, codes: list[str]) -> None:
        claimed = await gate.acquire(resources(codes))
        order.append(name)
        await asyncio.sleep(0.01)
        gate.release(claimed)

    big = asyncio.create_task(take("big", ["a", "b", "c"]))  # waits for the holder
    await asyncio.sleep(0)
    small = asyncio.create_task(take("small", ["c"]))  # shares "c" with big: behind it
    other = asyncio.create_task(take("other", ["x"]))  # shares nothing: goes now
    await asyncio.sleep(0.005)
    assert order == ["other"]
    gate.release(holder)
    await asyncio.wait_for(asyncio.gather(big, small, other), 1)
    assert order == ["other", "big", "small"]


async def test_a_turn_naming_nothing_runs_alone_and_a_cancelled_waiter_frees_its_place() -> None:
    gate = WriteGate(4)
    first = await gate.acquire(resources(["a"]))
    alone = asyncio.create_task(gate.acquire(EVERYTHING))
    await asyncio.sleep(0)
    later = asyncio.create_task(gate.acquire(resources(["b"])))  # behind the exclusive one
    await asyncio.sleep(0.01)
    assert not alone.done() and not later.done()
    alone.cancel()
    await asyncio.wait_for(later, 1)  # the cancelled waiter no longer holds it back
    gate.release(first)
    gate.release(resources(["b"]))
    assert gate.holding == 0
    await asyncio.wait_for(gate.acquire(EVERYTHING), 1)
    blocked = asyncio.create_task(gate.acquire(resources(["q"])))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    gate.release(EVERYTHING)
    await asyncio.wait_for(blocked, 1)


async def test_racing_writers_over_overlapping_accounts_keep_every_total(
    live_db: str, unique: Callable[[str], str]
) -> None:
    """Singles (some with keys sent twice, some with references), batches and a hot
    no-overdraft wallet, through four coalescing workers and four parallel turns: the turns do
    run side by side, and every total, version and invariant holds."""
    app = ledger_app(
        live_db,
        coalesce=True,
        coalesce_workers=4,
        write_concurrency=4,
        # Small batches over many accounts: the workers find disjoint requests to apply.
        coalesce_max_batch=4,
        db_pool_size=20,
        db_max_overflow=40,
    )
    codes = [unique(f"acc{i}") for i in range(40)]
    rng = random.Random(17)
    async with committing_client(app, headers=bearer(API_TOKEN)) as live:
        gate: WriteGate = app.state.write_gate
        most = 0
        acquire = gate.acquire

        async def counting(claimed: frozenset[object]) -> frozenset[object]:
            nonlocal most
            got = await acquire(claimed)
            most = max(most, gate.holding)
            # Holders never share anything.
            assert all(h is got or h.isdisjoint(got) for h in gate.holders), (
                "two holders share a resource"
            )
            return got

        gate.acquire = counting  # type: ignore[method-assign]
        for code in codes:
            await open_account(live, code)
        bank, wallet, shop = unique("bank"), unique("wallet"), unique("shop")
        await open_account(live, bank)
        await open_account(
            live, wallet, "liability", flags={"debits_must_not_exceed_credits": True}
        )
        await open_account(live, shop, "revenue")
        assert (
            await live.post("/v1/transactions", json=transfer(bank, wallet, 600))
        ).status_code == 201

        expected = dict.fromkeys(codes, 0)
        singles: list[tuple[dict[str, object], dict[str, str]]] = []
        for i in range(200):
            a, b = rng.sample(range(40), 2)
            amount = 1 + i % 9
            extra: dict[str, object] = {}
            headers: dict[str, str] = {}
            if i % 10 == 3:
                extra["reference"] = unique(f"ref{i}")
            if i % 10 == 7:
                headers["Idempotency-Key"] = unique(f"key{i}")
            singles.append((transfer(codes[a], codes[b], amount, **extra), headers))
            expected[codes[a]] += amount
            expected[codes[b]] -= amount
        # Each keyed and referenced single is sent twice: it must count once.
        repeats = [s for s in singles if s[1] or "reference" in s[0]]
        batches = []
        for _ in range(3):
            items = []
            for _ in range(120):
                a, b = rng.sample(range(40), 2)
                items.append(transfer(codes[a], codes[b], 3))
                expected[codes[a]] += 3
                expected[codes[b]] -= 3
            batches.append(items)

        async def single(body: dict[str, object], headers: dict[str, str]) -> int:
            return (await live.post("/v1/transactions", json=body, headers=headers)).status_code

        async def spend() -> int:
            return (
                await live.post("/v1/transactions", json=transfer(wallet, shop, 25))
            ).status_code

        async def batch(items: list[dict[str, object]]) -> int:
            resp = await live.post(
                "/v1/transactions:batch", json={"mode": "atomic", "transactions": items}
            )
            return resp.status_code

        work = [
            *(single(*s) for s in singles),
            *(single(*s) for s in repeats),
            *(spend() for _ in range(50)),
            *(batch(b) for b in batches),
        ]
        order = list(range(len(work)))
        rng.shuffle(order)
        coroutines = [work[i] for i in order]
        statuses = await asyncio.wait_for(asyncio.gather(*coroutines), timeout=120)
        by_task = dict(zip(order, statuses, strict=True))
        n_singles, n_repeats = len(singles), len(repeats)
        assert n_repeats == 40
        firsts = {i: by_task[i] for i in range(n_singles)}
        again = {singles.index(s): by_task[n_singles + j] for j, s in enumerate(repeats)}
        for i, status in firsts.items():
            body = singles[i][0]
            if "reference" in body:  # whichever of the two came second replays it: 200
                assert sorted([status, again[i]]) == [200, 201], (i, status, again[i])
            else:  # a replayed key answers the stored 201
                assert (status, again.get(i, 201)) == (201, 201), (i, status, again.get(i))
        spends = [by_task[n_singles + n_repeats + i] for i in range(50)]
        assert spends.count(201) == 24 and spends.count(422) == 26  # 24 * 25 = 600
        assert all(by_task[len(work) - 3 + i] == 201 for i in range(3))

        for code in codes:
            assert (await balance(live, code))["posted"]["balance"] == expected[code], code
        assert (await balance(live, wallet))["posted"]["balance"] == 0
        assert (await balance(live, shop))["posted"]["balance"] == 600
        assert (await live.get(f"/v1/accounts/{wallet}")).json()["version"] == 1 + 24
        verified = await live.post(
            "/admin/v1/verify", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert verified.status_code == 200, verified.text
    # Whether turns overlapped here depends on timing (on a quiet machine writers may finish
    # one after another); that disjoint turns are held together is proven deterministically by
    # test_disjoint_turns_are_held_together_overlapping_ones_wait. Here the totals must hold
    # whatever the interleaving, and `counting` refused any two holders sharing a resource.
    assert most >= 1
