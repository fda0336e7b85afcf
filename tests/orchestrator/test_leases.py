"""Leases (quota.py): a replica admits a key's requests from its slice without a round trip,
gives the unused part back, uses the exact path near the limit, and a revoked key with a live
slice is refused at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from azora_common.listener import libpq_url
from azora_orchestrator import metrics
from tests.conftest import ADMIN_TOKEN
from tests.orchestrator.conftest import (
    Admin,
    Gw,
    Served,
    ServerThread,
    backend_spec,
    bearer,
    chat,
    create_key,
    gateway_settings,
    openai_error,
    unique,
    wait_for_key,
)
from tests.orchestrator.test_budgets import (
    PRICE,
    drive_until_refused,
    flush_all,
    prompt_estimate,
    spend_of,
)

# Slices of 10 % of each limit (the default is 2 %), so that small test budgets lease at all.
TTL = 2.0
LEASE: dict[str, Any] = {"lease_permille": 100, "lease_ttl_s": TTL}
NO_SLICE = (0, 0, 0)


@pytest.fixture(scope="module")
def leased(gw: Gw, orch_db: str, server_thread: ServerThread) -> Iterator[list[Gw]]:
    """Three replicas on one database, leasing 10 % slices."""
    served = [Served(gateway_settings(orch_db, **LEASE), server_thread) for _ in range(3)]
    metrics.GAUGE_SOURCE.get = lambda: gw.gateway.table
    yield [s.gw for s in served]
    for s in served:
        s.stop()
    metrics.GAUGE_SOURCE.get = lambda: gw.gateway.table


@pytest.fixture
async def db(orch_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(libpq_url(orch_db))
    yield conn
    await conn.close()


async def key_row(db: asyncpg.Connection, key_id: str) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM key_state WHERE key_id = $1", key_id)
    assert row is not None
    return row


async def route(admin: Admin, replicas: list[Gw], backends: Any, prefix: str) -> str:
    a = await backends("a")
    model = unique(prefix)
    await admin.put(model, {"model": model, "backends": [backend_spec(a, price=PRICE)]})
    for r in replicas:
        await admin.wait_live_on(r, model)
    return model


async def until_held(
    http: aiohttp.ClientSession, gw: Gw, model: str, secret: str, key_id: str
) -> tuple[int, int, int]:
    """Requests until the replica holds a slice of the key (the second one asks for it)."""
    deadline = time.monotonic() + 10
    while (held := gw.gateway.shared.held(key_id)) == NO_SLICE:
        assert time.monotonic() < deadline, "the replica never got a slice"
        status, body, _ = await chat(http, gw, model, headers=bearer(secret), max_tokens=5)
        assert status == 200, body
    return held


async def test_a_request_admitted_from_the_slice_makes_no_round_trip(
    leased: list[Gw], admin: Admin, http: aiohttp.ClientSession, backends, db
) -> None:
    model = await route(admin, leased, backends, "lease-local")
    secret, key = await create_key(
        http,
        leased[0],
        requestsPerMinute=6000,
        tokensPerMinute=10_000_000,
        budget={"amount": 1_000_000, "unit": "USD", "period": "24h"},
    )
    await wait_for_key(leased, key["id"])
    gw = leased[0]
    shared = gw.gateway.shared
    held = await until_held(http, gw, model, secret, key["id"])
    assert held[0] <= 600 and held[1] <= 1_000_000 and held[2] <= 100_000  # 10 % of each limit
    stamp = (await key_row(db, key["id"]))["stamp"]  # every statement for the key sets it
    statements, leased_before = shared.statements, shared.leased
    for _ in range(20):
        status, body, _ = await chat(http, gw, model, headers=bearer(secret), max_tokens=5)
        assert status == 200, body
    assert shared.leased - leased_before == 20
    assert shared.statements == statements  # no statement at all, not even a top-up
    assert (await key_row(db, key["id"]))["stamp"] == stamp  # PostgreSQL saw nothing
    # The slice paid for them: the budget part of the slice went down by their estimates.
    estimate = prompt_estimate(model, max_tokens=5) + 5 * 2
    assert shared.held(key["id"])[2] == held[2] - 20 * estimate
    # Settled as before: the spend counts every request, the reservation is the slice left.
    await flush_all([gw])
    spend = await spend_of(http, gw, key["id"])
    assert spend["reserved"] == shared.held(key["id"])[2]


async def test_the_unused_slice_comes_back_on_expiry_and_on_shutdown(
    leased: list[Gw],
    admin: Admin,
    http: aiohttp.ClientSession,
    backends,
    db,
    orch_db: str,
    server_thread: ServerThread,
) -> None:
    model = await route(admin, leased, backends, "lease-back")
    rpm = 600
    secret, key = await create_key(
        http,
        leased[0],
        requestsPerMinute=rpm,
        budget={"amount": 100_000, "unit": "USD", "period": "24h"},
    )
    await wait_for_key(leased, key["id"])
    gw = leased[1]
    held = await until_held(http, gw, model, secret, key["id"])
    await flush_all(leased)
    row = await key_row(db, key["id"])
    assert row["reserved"] == held[2] > 0  # the slice is reserved like a request
    assert row["rq_level"] <= rpm - held[0]
    # Expiry: unused for lease_ttl_s, the slice goes back (budget and requests).
    deadline = time.monotonic() + TTL + 3
    while (row := await key_row(db, key["id"]))["reserved"] != 0:
        assert time.monotonic() < deadline, "the expired slice never came back"
        await asyncio.sleep(0.05)
    assert gw.gateway.shared.held(key["id"]) == NO_SLICE
    assert row["rq_level"] >= rpm - 3  # full again but for the requests made (and refill)

    # Shutdown: a replica that stops gives its slice back before closing its pool.
    extra = Served(gateway_settings(orch_db, **LEASE), server_thread)
    try:
        await wait_for_key([extra.gw], key["id"])
        await admin.wait_live_on(extra.gw, model)
        held = await until_held(http, extra.gw, model, secret, key["id"])
        await flush_all([extra.gw])
        assert (await key_row(db, key["id"]))["reserved"] == held[2] > 0
    finally:
        await asyncio.to_thread(extra.stop)
    assert (await key_row(db, key["id"]))["reserved"] == 0


async def test_near_the_limit_the_exact_path_keeps_the_bound(
    leased: list[Gw], admin: Admin, http: aiohttp.ClientSession, backends
) -> None:
    # test_budget_holds_across_three_replicas with slices: 10 % of 3,000 = 300 (9 requests);
    # granted only while the headroom holds 4 x the slice, so the last ~130 go the exact way.
    a = await backends("a")
    a.delay_s = 0.01
    model = unique("lease-budget")
    await admin.put(model, {"model": model, "backends": [backend_spec(a, price=PRICE)]})
    for r in leased:
        await admin.wait_live_on(r, model)
    budget = 3000
    secret, key = await create_key(
        http, leased[0], budget={"amount": budget, "unit": "USD", "period": "24h"}
    )
    await wait_for_key(leased, key["id"])
    actual = a.prompt_tokens * 1 + a.completion_tokens * 2
    estimate = prompt_estimate(model, max_tokens=5) * 1 + 5 * 2
    local = sum(r.gateway.shared.leased for r in leased)
    ok, refused = await drive_until_refused(http, leased, model, secret, clients=6, rounds=30)
    assert sum(r.gateway.shared.leased for r in leased) - local > 0  # slices were used
    spend = await spend_of(http, leased[0], key["id"])
    assert spend["reserved"] == 0  # no slice is left held at the limit
    assert all(r.gateway.shared.held(key["id"]) == NO_SLICE for r in leased)
    assert spend["totalSpent"] == spend["spent"] == ok * actual
    overshoot = spend["spent"] - budget
    assert -actual < overshoot <= estimate - 1, (overshoot, ok)  # the bound, as without leases
    print(f"budget {budget}, spent {spend['spent']}, overshoot {overshoot}, bound {estimate - 1}")
    error = openai_error(refused[-1]["body"])
    assert error["code"] == "insufficient_quota"
    headers = {k.lower(): v for k, v in refused[-1]["headers"].items()}
    assert int(headers["x-azora-budget-remaining"]) == max(0, budget - spend["spent"])


async def test_a_revoked_key_with_a_live_slice_is_refused_within_a_second(
    leased: list[Gw], admin: Admin, http: aiohttp.ClientSession, backends, db
) -> None:
    model = await route(admin, leased, backends, "lease-revoke")
    secret, key = await create_key(
        http,
        leased[0],
        requestsPerMinute=6000,
        budget={"amount": 1_000_000, "unit": "USD", "period": "24h"},
    )
    await wait_for_key(leased, key["id"])
    for r in leased:
        await until_held(http, r, model, secret, key["id"])
    async with http.post(
        f"{leased[0].base_url}/admin/v1/keys/{key['id']}/revoke", headers=bearer(ADMIN_TOKEN)
    ) as resp:
        assert resp.status == 200
    revoked_at = time.monotonic()
    refused: dict[int, float] = {}
    while len(refused) < len(leased) and time.monotonic() - revoked_at < 3:
        for i, r in enumerate(leased):
            if i not in refused:
                status, _, _ = await chat(http, r, model, headers=bearer(secret), max_tokens=5)
                if status == 401:
                    refused[i] = time.monotonic() - revoked_at
                else:
                    assert status == 200
        await asyncio.sleep(0.005)
    assert len(refused) == len(leased), refused
    assert max(refused.values()) < 1.0, refused
    # The revoked key's slices go back on every replica (the snapshot swap retires them).
    deadline = time.monotonic() + 3
    while True:
        await flush_all(leased)
        held = [r.gateway.shared.held(key["id"]) for r in leased]
        if held == [NO_SLICE] * 3 and (await key_row(db, key["id"]))["reserved"] == 0:
            break
        assert time.monotonic() < deadline, held
        await asyncio.sleep(0.05)
