"""Budgets and key limits shared by three replicas (one PostgreSQL), and the errors the
official client sees."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
import openai
import pytest

from azora_common.listener import libpq_url
from azora_common.metrics import in_flight
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

# 1 minor unit per prompt token, 2 per completion token: the fake answers 7 + 5 tokens -> 17.
PRICE = {"currency": "USD", "inputPerMillion": 1_000_000, "outputPerMillion": 2_000_000}


async def flush_all(replicas: list[Gw]) -> None:
    """Write every replica's settlements. A request's usage is recorded when its handler ends,
    just after the last byte of its answer is sent, so a client can hold the answer before
    the record exists: first wait until no request is in flight (the platform middleware's
    count, shared by every replica in this process), then flush."""
    requests = in_flight(replicas[0].gateway.settings.service_name)
    deadline = time.monotonic() + 10
    while requests.count:
        assert time.monotonic() < deadline, f"{requests.count} requests still in flight"
        await asyncio.sleep(0.005)
    for r in replicas:
        await r.server.arun(r.gateway.recorder.flush())


async def spend_of(http: aiohttp.ClientSession, gw: Gw, key_id: str) -> dict[str, Any]:
    async with http.get(
        f"{gw.base_url}/admin/v1/keys/{key_id}/spend", headers=bearer(ADMIN_TOKEN)
    ) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def drive_until_refused(
    http: aiohttp.ClientSession,
    replicas: list[Gw],
    model: str,
    secret: str,
    *,
    clients: int,
    rounds: int,
) -> tuple[int, list[dict[str, Any]]]:
    """Rounds of ``clients`` concurrent clients per replica, each sending until its 402, with
    every settlement written after each round, until a whole round is refused at once.
    Returns the requests answered 200 and the refusals (body and headers) in order."""
    ok = 0
    refused: list[dict[str, Any]] = []

    async def client(gw: Gw) -> None:
        nonlocal ok
        while True:
            status, body, headers = await chat(
                http, gw, model, headers=bearer(secret), max_tokens=5
            )
            if status == 402:
                refused.append({"body": body, "headers": headers})
                return
            assert status == 200, body
            ok += 1

    for _ in range(rounds):
        before = ok
        await asyncio.gather(*(client(r) for r in replicas for _ in range(clients)))
        await flush_all(replicas)
        if ok == before:
            break
    return ok, refused


def prompt_estimate(model: str, **extra: Any) -> int:
    """The gateway's prompt estimate for tests.orchestrator.conftest.chat's body."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return len(json.dumps(body).encode()) // 4


async def test_budget_holds_across_three_replicas(
    replicas: list[Gw], admin: Admin, http: aiohttp.ClientSession, backends
) -> None:
    a = await backends("a")
    a.delay_s = 0.01  # requests overlap: reservations are in flight when the budget is crossed
    model = unique("budget")
    await admin.put(model, {"model": model, "backends": [backend_spec(a, price=PRICE)]})
    for r in replicas:
        await admin.wait_live_on(r, model)
    budget = 1000
    secret, key = await create_key(
        http, replicas[0], budget={"amount": budget, "unit": "USD", "period": "24h"}
    )
    await wait_for_key(replicas, key["id"])
    actual = a.prompt_tokens * 1 + a.completion_tokens * 2  # 17
    estimate = prompt_estimate(model, max_tokens=5) * 1 + 5 * 2
    assert estimate >= actual
    # Rounds of 3 replicas x 6 concurrent clients until a whole round is refused at once.
    ok, refused = await drive_until_refused(http, replicas, model, secret, clients=6, rounds=30)
    spend = await spend_of(http, replicas[0], key["id"])
    assert spend["reserved"] == 0
    assert spend["totalSpent"] == spend["spent"] == ok * actual  # enforcement = the backend's usage
    overshoot = spend["spent"] - budget
    # The bound (quota.py): at most the last admitted reservation minus one minor unit (every
    # actual cost is within its estimate here), and the budget is used up.
    assert -actual < overshoot <= estimate - 1, (overshoot, ok)
    print(f"budget {budget}, spent {spend['spent']}, overshoot {overshoot}, bound {estimate - 1}")

    error = openai_error(refused[-1]["body"])
    assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota"
    headers = {k.lower(): v for k, v in refused[-1]["headers"].items()}
    assert int(headers["x-azora-budget-remaining"]) == max(0, budget - spend["spent"])
    assert headers["x-azora-budget-unit"] == "USD"
    reset = datetime.fromisoformat(headers["x-azora-budget-reset"])
    assert reset.hour == 0 and reset.minute == 0  # 24h windows start at midnight UTC


async def test_budget_window_resets_on_every_replica(
    replicas: list[Gw], admin: Admin, http: aiohttp.ClientSession, backends
) -> None:
    a = await backends("a")
    model = unique("reset")
    await admin.put(model, {"model": model, "backends": [backend_spec(a, price=PRICE)]})
    for r in replicas:
        await admin.wait_live_on(r, model)
    budget, period = 120, 4  # tokens: 10 answers of 12 tokens
    secret, key = await create_key(
        http, replicas[0], budget={"amount": budget, "unit": "tokens", "period": f"{period}s"}
    )
    await wait_for_key(replicas, key["id"])
    tokens = a.prompt_tokens + a.completion_tokens
    estimate = prompt_estimate(model, max_tokens=5) + 5
    # Start right after a window boundary so the whole drive stays in one window.
    await asyncio.sleep(period - time.time() % period + 0.05)
    ok, refused = await drive_until_refused(http, replicas, model, secret, clients=3, rounds=10)
    spend = await spend_of(http, replicas[0], key["id"])
    assert spend["spent"] == ok * tokens
    assert budget <= spend["spent"] <= budget + estimate - 1  # the bound, in tokens
    reset = datetime.fromisoformat(refused[-1]["headers"]["x-azora-budget-reset"]).timestamp()
    assert reset - time.time() <= period
    await asyncio.sleep(max(0.0, reset - time.time()) + 0.05)
    for r in replicas:  # a new window: the key works again everywhere
        assert (await chat(http, r, model, headers=bearer(secret), max_tokens=5))[0] == 200
    await flush_all(replicas)
    spend = await spend_of(http, replicas[0], key["id"])
    assert spend["spent"] == len(replicas) * tokens
    assert spend["totalSpent"] == (ok + len(replicas)) * tokens


async def _hammer(
    replicas: list[Gw], http: aiohttp.ClientSession, model: str, secret: str, seconds: float
) -> tuple[int, float]:
    admitted = 0
    started = time.monotonic()

    async def client(gw: Gw) -> None:
        nonlocal admitted
        while time.monotonic() - started < seconds:
            status, body, _ = await chat(http, gw, model, headers=bearer(secret), max_tokens=5)
            if status == 200:
                admitted += 1
            else:
                assert status == 429, body
                assert openai_error(body)["code"] == "rate_limit_exceeded"
                await asyncio.sleep(0.01)

    await asyncio.gather(*(client(r) for r in replicas for _ in range(4)))
    return admitted, time.monotonic() - started


async def test_requests_per_minute_across_three_replicas(
    replicas: list[Gw], admin: Admin, http: aiohttp.ClientSession, backends
) -> None:
    a = await backends("a")
    model = unique("rpm")
    await admin.put(model, {"model": model, "backends": [backend_spec(a)]})
    for r in replicas:
        await admin.wait_live_on(r, model)
    rpm = 120
    secret, key = await create_key(http, replicas[0], requestsPerMinute=rpm)
    await wait_for_key(replicas, key["id"])
    admitted, elapsed = await _hammer(replicas, http, model, secret, 3.0)
    expected = rpm + rpm / 60 * elapsed  # a full bucket, then the refill
    assert 0.9 * expected <= admitted <= 1.1 * expected, (admitted, expected)


async def test_tokens_per_minute_across_three_replicas(
    replicas: list[Gw], admin: Admin, http: aiohttp.ClientSession, backends
) -> None:
    a = await backends("a")
    model = unique("tpm")
    await admin.put(model, {"model": model, "backends": [backend_spec(a)]})
    for r in replicas:
        await admin.wait_live_on(r, model)
    # The backend reports exactly the admission estimate, so no correction blurs the count.
    a.prompt_tokens = prompt_estimate(model, max_tokens=5)
    a.completion_tokens = 5
    per_request = a.prompt_tokens + a.completion_tokens
    tpm = per_request * 90
    secret, key = await create_key(http, replicas[0], tokensPerMinute=tpm)
    await wait_for_key(replicas, key["id"])
    admitted, elapsed = await _hammer(replicas, http, model, secret, 3.0)
    expected = (tpm + tpm / 60 * elapsed) / per_request
    assert 0.9 * expected <= admitted <= 1.1 * expected, (admitted, expected)


async def test_openai_client_sees_limit_and_budget_errors(
    gw: Gw, admin: Admin, http: aiohttp.ClientSession, backends
) -> None:
    a = await backends("a")
    model = unique("oai-limits")
    await admin.put(model, {"model": model, "backends": [backend_spec(a, price=PRICE)]})
    limited, lkey = await create_key(http, gw, requestsPerMinute=1)
    broke, bkey = await create_key(http, gw, budget={"amount": 1, "unit": "USD", "period": "24h"})
    await wait_for_key([gw], lkey["id"])
    await wait_for_key([gw], bkey["id"])
    messages: Any = [{"role": "user", "content": "hi"}]
    client = openai.AsyncOpenAI(base_url=gw.v1, api_key=limited, max_retries=0)
    try:
        await client.chat.completions.create(model=model, messages=messages)
        with pytest.raises(openai.RateLimitError) as limit:
            await client.chat.completions.create(model=model, messages=messages)
        assert limit.value.code == "rate_limit_exceeded"
        assert int(limit.value.response.headers["retry-after"]) >= 1
    finally:
        await client.close()
    client = openai.AsyncOpenAI(base_url=gw.v1, api_key=broke, max_retries=2)
    try:
        await client.chat.completions.create(model=model, messages=messages, max_tokens=5)
        await gw.server.arun(gw.gateway.recorder.flush())
        hits = a.hits
        with pytest.raises(openai.APIStatusError) as quota:
            await client.chat.completions.create(model=model, messages=messages, max_tokens=5)
        assert quota.value.status_code == 402
        assert quota.value.code == "insufficient_quota"
        assert quota.value.type == "insufficient_quota"
        assert "remaining" in quota.value.message
        assert a.hits == hits  # refused at admission; the client did not retry it
    finally:
        await client.close()


@pytest.fixture(scope="module")
def split_replicas(gw: Gw, orch_db: str, server_thread: ServerThread) -> Iterator[list[Gw]]:
    """Three replicas configured for a three-replica Deployment (route_limit_replicas=3)."""
    served = [
        Served(gateway_settings(orch_db, route_limit_replicas=3), server_thread) for _ in range(3)
    ]
    metrics.GAUGE_SOURCE.get = lambda: gw.gateway.table
    yield [s.gw for s in served]
    for s in served:
        s.stop()
    # The scrape-time gauges of this process's registry follow the last gateway started: give
    # them back to the session's gateway (one process holds several gateways only in tests).
    metrics.GAUGE_SOURCE.get = lambda: gw.gateway.table


async def test_route_limits_split_across_three_replicas(
    split_replicas: list[Gw], admin: Admin, http: aiohttp.ClientSession, backends
) -> None:
    a = await backends("a")
    model = unique("route-rpm")
    rpm = 120
    await admin.put(
        model,
        {"model": model, "backends": [backend_spec(a)], "rateLimits": {"requestsPerMinute": rpm}},
    )
    for r in split_replicas:
        await admin.wait_live_on(r, model)
    admitted = 0
    started = time.monotonic()

    async def client(gw: Gw) -> None:  # the static token, spread evenly over the replicas
        nonlocal admitted
        while time.monotonic() - started < 3.0:
            status, body, _ = await chat(http, gw, model)
            if status == 200:
                admitted += 1
            else:
                assert status == 429, body
                await asyncio.sleep(0.01)

    await asyncio.gather(*(client(r) for r in split_replicas for _ in range(4)))
    elapsed = time.monotonic() - started
    expected = rpm + rpm / 60 * elapsed
    assert 0.9 * expected <= admitted <= 1.1 * expected, (admitted, expected)


async def test_absurd_max_tokens_never_makes_a_negative_reservation(
    gw: Gw, admin: Admin, http: aiohttp.ClientSession, backends
) -> None:
    a = await backends("a")
    model = unique("absurd")
    await admin.put(model, {"model": model, "backends": [backend_spec(a, price=PRICE)]})
    secret, key = await create_key(http, gw, budget={"amount": 100, "unit": "USD"})
    await wait_for_key([gw], key["id"])
    for cap in (-(10**6), 10**30):
        status, body, _ = await chat(http, gw, model, headers=bearer(secret), max_tokens=cap)
        assert status in (200, 402), body  # never a 5xx, never a negative reservation
        spend = await spend_of(http, gw, key["id"])
        assert spend["reserved"] >= 0


async def test_a_flush_waits_for_the_one_in_progress(
    gw: Gw, admin: Admin, http: aiohttp.ClientSession, backends, orch_db: str
) -> None:
    # flush() returns once everything recorded before it is written, even what a flush already
    # in progress took (the writer's own, every interval): held here on the key's row lock.
    a = await backends("a")
    model = unique("flush")
    await admin.put(model, {"model": model, "backends": [backend_spec(a, price=PRICE)]})
    await admin.wait_live_on(gw, model)
    secret, key = await create_key(
        http, gw, budget={"amount": 1_000_000, "unit": "USD", "period": "24h"}
    )
    await wait_for_key([gw], key["id"])
    assert (await chat(http, gw, model, headers=bearer(secret), max_tokens=5))[0] == 200
    await flush_all([gw])  # the key's row exists, settled
    assert (await chat(http, gw, model, headers=bearer(secret), max_tokens=5))[0] == 200
    recorder = gw.gateway.recorder
    holder = await asyncpg.connect(libpq_url(orch_db))
    try:
        lock = holder.transaction()
        await lock.start()
        await holder.execute("SELECT 1 FROM key_state WHERE key_id = $1 FOR UPDATE", key["id"])
        first = asyncio.ensure_future(gw.server.arun(recorder.flush()))
        while recorder.settlements:  # taken by a flush, now waiting on the row lock
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(gw.server.arun(recorder.flush()))
        await asyncio.sleep(0.3)
        assert not first.done()
        assert not second.done()  # not "nothing left to write": the first is not written yet
        await lock.rollback()
        await second
        spend = await spend_of(http, gw, key["id"])
        assert spend["spent"] == 2 * (a.prompt_tokens + 2 * a.completion_tokens)
        # What is still reserved is this replica's lease slice, nothing of the two requests.
        assert spend["reserved"] == gw.gateway.shared.held(key["id"])[2]
        await first
    finally:
        await holder.close()
