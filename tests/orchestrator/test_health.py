"""Passive ejection, the ejection cap, active checks and gradual recovery."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aiohttp

from azora_orchestrator.gateway import Gateway
from azora_orchestrator.health import ActiveHealthChecker
from azora_orchestrator.settings import OrchestratorSettings
from tests.orchestrator.conftest import Admin, Gw, backend_spec, chat, unique


async def _until(predicate: Any) -> None:
    # A generous bound so a broken recovery fails instead of hanging; not a speed check.
    async with asyncio.timeout(15):
        while True:
            if await predicate():
                return
            await asyncio.sleep(0.05)


async def test_failing_backend_is_ejected_then_returns(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    good, bad = await backends("good"), await backends("bad")
    model = unique("eject")
    key = f"test/{model}"
    await admin.put(
        model,
        {
            "model": model,
            "backends": [backend_spec(good), backend_spec(bad)],
            "health": {"consecutiveFailures": 3, "baseEjection": "2s"},
        },
    )
    bad.status = 503
    # Clients never see the failures: each one is retried on the healthy backend.
    for _ in range(12):
        status, body, _ = await chat(http, gw, model)
        assert status == 200, body
    assert bad.hits == 3  # exactly the failures that triggered the ejection
    st = await admin.status(key)
    bad_status = next(b for b in st["backends"] if b["name"] == "bad")
    assert bad_status["healthy"] is False
    assert bad_status["ejected_until"] is not None
    assert bad_status["error_rate"] > 0
    assert st["healthy"] == 1
    assert st["total"] == 2

    # While ejected it receives nothing, whatever the traffic.
    hits = bad.hits
    for _ in range(20):
        status, _, _ = await chat(http, gw, model)
        assert status == 200
    assert (await admin.status(key))["healthy"] == 1  # the loop ran inside the ejection
    assert bad.hits == hits

    # It recovers: back after the ejection, through slow start, and serves again.
    bad.status = 200

    async def back() -> bool:
        st = await admin.status(key)
        return bool(st["healthy"] == 2)

    await _until(back)
    before = bad.hits
    for _ in range(30):
        status, _, _ = await chat(http, gw, model)
        assert status == 200
    assert bad.hits > before


async def test_never_more_than_max_ejection_percent(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    bs = [await backends(f"b{i}") for i in range(4)]
    for b in bs:
        b.status = 500
    model = unique("cap")
    await admin.put(
        model,
        {
            "model": model,
            "backends": [backend_spec(b) for b in bs],
            "health": {"consecutiveFailures": 1, "baseEjection": "30s", "maxEjectionPercent": 50},
            "retry": {"attempts": 4, "budgetPercent": 100},
        },
    )
    for _ in range(10):
        status, _, _ = await chat(http, gw, model)
        assert status == 500  # every backend fails; the last answer is passed through
    st = await admin.status(f"test/{model}")
    assert sum(1 for b in st["backends"] if b["ejected_until"] is not None) == 2
    assert st["ejected"] == 2
    # The other two still take traffic: healthy once the default probe has had its answer,
    # "unknown" before that (they have answered nothing but 500 yet).
    assert st["healthy"] + st["unknown"] == 2


async def test_active_checks_remove_and_restore_a_backend(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    a, b = await backends("a"), await backends("b")
    model = unique("active")
    key = f"test/{model}"
    await admin.put(
        model,
        {
            "model": model,
            "backends": [backend_spec(a), backend_spec(b)],
            "health": {"activeCheck": {"path": "/models", "interval": "100ms"}},
        },
    )
    b.health_status = 503

    async def b_health() -> str:
        st = await admin.status(key)
        return str(next(x for x in st["backends"] if x["name"] == "b")["health"])

    async def b_down() -> bool:
        # "unhealthy", not merely not "healthy": before its first check it is "unknown".
        return await b_health() == "unhealthy"

    await _until(b_down)
    b.reset_counters()
    for _ in range(10):
        status, _, _ = await chat(http, gw, model)
        assert status == 200
    assert b.hits == 0
    assert a.health_hits > 0
    b.health_status = 200

    async def b_up() -> bool:
        return await b_health() == "healthy"

    await _until(b_up)
    st = await admin.status(key)
    weight = next(x for x in st["backends"] if x["name"] == "b")["effective_weight"]
    assert weight <= 1.0  # ramping up (slow start) or already back to its full weight
    for _ in range(20):
        status, _, _ = await chat(http, gw, model)
        assert status == 200
    assert b.hits > 0


async def test_routes_in_front_of_one_backend_share_its_probe(
    gw: Gw, admin: Admin, backends
) -> None:
    # Twenty routes name the same backend: each round sends it one probe, as many as the lone
    # route's backend gets over the same rounds (without sharing: twenty per round), and the
    # answer reaches every route.
    shared, alone = await backends("shared"), await backends("alone")
    check = {"activeCheck": {"path": "/models", "interval": "100ms"}}
    models = [unique("shared") for _ in range(20)]
    lone = unique("alone")
    for model in models:
        await admin.put(
            model, {"model": model, "backends": [backend_spec(shared)], "health": check}
        )
    await admin.put(lone, {"model": lone, "backends": [backend_spec(alone)], "health": check})

    async def all_healthy() -> bool:
        for model in [*models, lone]:
            if (await admin.status(f"test/{model}"))["healthy"] != 1:
                return False
        return True

    await _until(all_healthy)
    shared.health_hits = alone.health_hits = 0

    async def rounds() -> bool:
        return alone.health_hits >= 10

    await _until(rounds)
    assert shared.health_hits <= 2 * alone.health_hits + 2, (shared.health_hits, alone.health_hits)
    shared.health_status = 503  # and its failure too

    async def all_unhealthy() -> bool:
        for model in models:
            if (await admin.status(f"test/{model}"))["unhealthy"] != 1:
                return False
        return True

    await _until(all_unhealthy)
    for model in [*models, lone]:
        await admin.delete(f"test/{model}")


async def test_a_deleted_route_leaves_no_schedule_behind() -> None:
    # The schedule is rebuilt from the live table every round: routes deleted over days of
    # churn do not pile up in it. A real (not started) gateway: no session, so every probe
    # fails at once, which is all the schedule needs.
    gateway = Gateway(OrchestratorSettings())
    checker = ActiveHealthChecker(gateway)

    def row(name: str) -> SimpleNamespace:
        return SimpleNamespace(
            namespace="unit",
            name=name,
            generation=1,
            revision=1,
            spec={
                "model": name,
                "backends": [
                    {"name": "a", "url": "http://127.0.0.1:9/v1"},
                    {"name": "b", "url": "http://127.0.0.1:9/v2"},
                ],
            },
        )

    gateway.install([row("one"), row("two"), row("three")])
    await checker.tick()
    assert len(checker._due) == 6
    gateway.install([row("two")])
    await checker.tick()
    assert len(checker._due) == 2
    # Not due again within the interval: the surviving schedule was kept, not restarted.
    before = dict(checker._due)
    await checker.tick()
    assert checker._due == before
