"""Priority tiers, model fallbacks, Retry-After and the retry budget."""

from __future__ import annotations

import aiohttp

from tests.orchestrator.conftest import Admin, Gw, backend_spec, chat, unique
from tests.orchestrator.fakes import Reply


async def _metric(http: aiohttp.ClientSession, gw: Gw, prefix: str) -> float:
    async with http.get(gw.base_url + "/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


async def test_priority_tier_is_used_only_when_the_first_has_nothing(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    primary, backup = await backends("primary"), await backends("backup")
    model = unique("tier")
    await admin.put(
        model,
        {
            "model": model,
            "backends": [backend_spec(primary), backend_spec(backup, priority=1)],
            "health": {"consecutiveFailures": 2, "baseEjection": "30s"},
        },
    )
    for _ in range(10):
        status, _, headers = await chat(http, gw, model)
        assert status == 200
        assert headers["x-azora-backend"] == "primary"
    assert backup.hits == 0
    primary.reset_counters()
    primary.status = 500
    for _ in range(10):
        status, _, headers = await chat(http, gw, model)
        assert status == 200
        assert headers["x-azora-backend"] == "backup"
    # Two failures ejected the primary (maxEjectionPercent lets a one-backend tier go), so
    # later requests went straight to the backup tier.
    assert primary.hits == 2
    assert backup.hits == 10


async def test_model_fallback_when_a_route_has_nothing_left(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    main, other = await backends("main"), await backends("other")
    main.status = 503
    fallback_model = unique("fb-target")
    model = unique("fb-source")
    await admin.put(
        fallback_model,
        {"model": fallback_model, "backends": [backend_spec(other, model="other-upstream")]},
    )
    await admin.put(
        model,
        {
            "model": model,
            "backends": [backend_spec(main)],
            "fallbacks": [fallback_model],
            "retry": {"attempts": 2, "budgetPercent": 100},
        },
    )
    before = await _metric(
        http, gw, f'azora_orchestrator_fallbacks_total{{fallback="test/{fallback_model}"'
    )
    status, body, headers = await chat(http, gw, model)
    assert status == 200, body
    assert headers["x-azora-backend"] == "other"
    assert main.hits == 2  # attempts on the route's own backend first
    assert other.bodies[0]["model"] == "other-upstream"
    after = await _metric(
        http, gw, f'azora_orchestrator_fallbacks_total{{fallback="test/{fallback_model}"'
    )
    assert after == before + 1


async def test_retry_after_is_waited_for_when_short(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    a = await backends("a")
    a.script.append(Reply(status=429, retry_after="1"))
    model = unique("ra")
    await admin.put(model, {"model": model, "backends": [backend_spec(a)]})
    status, body, _ = await chat(http, gw, model)
    assert status == 200, body
    assert a.hits == 2
    # Correctness, not speed: the retry did not come before the backend allowed it.
    assert a.times[1] - a.times[0] >= 1.0


async def test_long_retry_after_moves_on_instead_of_waiting(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    a, b = await backends("a"), await backends("b")
    a.status = 429
    a.retry_after = "120"
    model = unique("ra-long")
    await admin.put(model, {"model": model, "backends": [backend_spec(a), backend_spec(b)]})
    status, _, headers = await chat(http, gw, model)
    assert status == 200
    assert headers["x-azora-backend"] == "b"
    # a is cooling down for its Retry-After: no traffic meanwhile.
    for _ in range(6):
        status, _, headers = await chat(http, gw, model)
        assert status == 200
        assert headers["x-azora-backend"] == "b"
    assert a.hits == 1

    # Alone, a backend with a long Retry-After gets its 429 passed through at once.
    alone = await backends("alone")
    alone.status = 429
    alone.retry_after = "120"
    solo = unique("ra-solo")
    await admin.put(solo, {"model": solo, "backends": [backend_spec(alone)]})
    status, body, headers = await chat(http, gw, solo)
    assert status == 429
    assert headers["Retry-After"] == "120"
    assert body["error"]["message"].startswith("alone says 429")
    assert alone.hits == 1


async def test_retry_budget_bounds_retries(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    a, b = await backends("a"), await backends("b")
    a.status = b.status = 500
    model = unique("budget")
    await admin.put(
        model,
        {
            "model": model,
            "backends": [backend_spec(a), backend_spec(b)],
            "retry": {"attempts": 3, "budgetPercent": 10},
            "health": {"consecutiveFailures": 1000},
        },
    )
    for _ in range(20):
        status, _, _ = await chat(http, gw, model)
        assert status == 500
    # 20 first tries; retries capped at max(3 (settings minimum), 10% of 20 requests) = 3.
    assert a.hits + b.hits == 23


async def test_connect_errors_are_retried(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    b = await backends("b")
    model = unique("dead")
    await admin.put(
        model,
        {
            "model": model,
            "backends": [
                {"name": "dead", "url": "http://127.0.0.1:9/v1"},
                backend_spec(b),
            ],
        },
    )
    status, _, headers = await chat(http, gw, model)
    assert status == 200
    assert headers["x-azora-backend"] == "b"

    only_dead = unique("dead-only")
    await admin.put(
        only_dead,
        {"model": only_dead, "backends": [{"name": "dead", "url": "http://127.0.0.1:9/v1"}]},
    )
    status, body, _ = await chat(http, gw, only_dead)
    assert status == 502
    assert body["error"]["code"] == "connect_error"


async def test_per_try_timeout(gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends) -> None:
    slow, fast = await backends("slow"), await backends("fast")
    slow.delay_s = 2.0
    model = unique("pertry")
    await admin.put(
        model,
        {
            "model": model,
            "backends": [backend_spec(slow), backend_spec(fast)],
            "retry": {"perTryTimeout": "200ms"},
        },
    )
    status, _, headers = await chat(http, gw, model)
    assert status == 200
    assert headers["x-azora-backend"] == "fast"
