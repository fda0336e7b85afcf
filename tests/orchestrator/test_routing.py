"""Weighted splits (exact for smooth WRR, statistical for P2C), live weight changes, latency."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from azora_orchestrator.routing import Backend, BackendState, Route, build_route
from azora_orchestrator.settings import OrchestratorSettings
from tests.orchestrator.conftest import Admin, Gw, backend_spec, chat, unique
from tests.orchestrator.fakes import FakeBackend

TOTAL = 4000


async def _blast(http: aiohttp.ClientSession, gw: Gw, model: str, n: int, concurrency: int) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    queue = iter(range(n))

    async def worker() -> None:
        for _ in queue:
            async with http.post(gw.v1 + "/chat/completions", json=body) as resp:
                await resp.read()
                assert resp.status == 200

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _share(a: FakeBackend, b: FakeBackend) -> float:
    return a.hits / (a.hits + b.hits)


# Smooth WRR is exact whatever the concurrency. P2C honours weights when the backends are
# equally loaded (sequential traffic: every comparison is a tie, won by the weighted first
# draw); under unequal load it deliberately prefers the less loaded backend (tested below).
@pytest.mark.parametrize(
    ("strategy", "tolerance", "concurrency"),
    [("weighted-round-robin", 0.01, 8), ("least-request", 0.03, 1)],
)
async def test_weighted_split_and_live_weight_change(
    gw: Gw,
    http: aiohttp.ClientSession,
    admin: Admin,
    backends,
    strategy: str,
    tolerance: float,
    concurrency: int,
) -> None:
    a, b = await backends("a"), await backends("b")
    model = unique("split")

    def spec(wa: int, wb: int) -> dict[str, Any]:
        return {
            "model": model,
            "strategy": strategy,
            "backends": [backend_spec(a, weight=wa), backend_spec(b, weight=wb)],
        }

    await admin.put(model, spec(3, 1))
    await _blast(http, gw, model, TOTAL, concurrency)
    assert a.hits + b.hits == TOTAL
    assert abs(_share(a, b) - 0.75) <= tolerance, (a.hits, b.hits)
    if strategy == "weighted-round-robin":
        assert (a.hits, b.hits) == (3000, 1000)  # exact, not just within 1%

    # Live change through the admin API while nothing restarts.
    a.reset_counters()
    b.reset_counters()
    await admin.put(model, spec(1, 3))
    await _blast(http, gw, model, TOTAL, concurrency)
    assert a.hits + b.hits == TOTAL
    assert abs(_share(a, b) - 0.25) <= tolerance, (a.hits, b.hits)
    if strategy == "weighted-round-robin":
        assert (a.hits, b.hits) == (1000, 3000)


def _route(strategy: str, weights: list[int]) -> Route:
    row = SimpleNamespace(
        namespace="unit",
        name="r",
        generation=1,
        revision=1,
        spec={
            "model": "m",
            "strategy": strategy,
            "backends": [
                {"name": f"b{i}", "url": f"http://127.0.0.1:{9000 + i}/v1", "weight": w}
                for i, w in enumerate(weights)
            ],
        },
    )
    route = build_route(row, OrchestratorSettings(slow_start_s=10), {}, {})
    route.rng = random.Random(7)
    return route


def test_swrr_is_the_smooth_nginx_sequence() -> None:
    route = _route("weighted-round-robin", [5, 1, 1])
    (tier,) = route.tiers
    picks = [route.pick(tier, 0.0, None) for _ in range(14)]
    names = "".join(p.cfg.name[-1] if p else "-" for p in picks)
    # nginx's documented sequence for {a:5, b:1, c:1}: a a b a c a a, repeated.
    assert names == "00102000010200"


def test_swrr_skips_excluded_and_saturated_backends() -> None:
    route = _route("weighted-round-robin", [1, 1, 1])
    (tier,) = route.tiers
    b0, b1, b2 = tier.backends
    object.__setattr__(b2, "cfg", b2.cfg.__class__(**{**_fields(b2), "max_concurrency": 1}))
    b2.state.in_flight = 1
    seen = {route.pick(tier, 0.0, {b0}) for _ in range(10)}
    assert seen == {b1}


def _fields(b: Backend) -> dict[str, Any]:
    return {f: getattr(b.cfg, f) for f in b.cfg.__dataclass_fields__}


def test_least_request_prefers_the_idle_backend() -> None:
    route = _route("least-request", [1, 1])
    (tier,) = route.tiers
    busy, idle = tier.backends
    busy.state.in_flight = 5
    picks = [route.pick(tier, 0.0, None) for _ in range(200)]
    # Both candidates are always drawn (two backends), so the idle one always wins.
    assert all(p is idle for p in picks)


def test_latency_penalises_fast_failures() -> None:
    route = _route("latency", [1, 1])
    (tier,) = route.tiers
    slow_ok, fast_fail = tier.backends
    for _ in range(5):
        route.record_success(slow_ok, 0.2)  # 200 ms per token, healthy
        route.record_failure(fast_fail, 0.0)  # answers 503 in no time
    picks = [route.pick(tier, 0.0, None) for _ in range(200)]
    assert all(p is slow_ok for p in picks)
    for _ in range(1000):  # a long outage: the penalty stays bounded, recovery stays possible
        route.record_failure(fast_fail, 0.0)
    assert fast_fail.state.ewma_s is not None
    assert fast_fail.state.ewma_s <= 60.0


def test_slow_start_ramps_effective_weight() -> None:
    route = _route("weighted-round-robin", [10])
    backend = next(iter(route.backends))
    backend.state.ramp_from = 100.0
    assert route.effective_weight(backend, 100.0) == pytest.approx(1.0)
    assert route.effective_weight(backend, 105.0) == pytest.approx(5.5)
    assert route.effective_weight(backend, 110.0) == 10.0
    # A pure function of the clock: asking again earlier gives the earlier answer.
    assert route.effective_weight(backend, 105.0) == pytest.approx(5.5)


def test_state_survives_a_swap_for_the_same_name_and_url() -> None:
    settings = OrchestratorSettings()
    row = SimpleNamespace(
        namespace="unit",
        name="r",
        generation=1,
        revision=1,
        spec={"model": "m", "backends": [{"name": "a", "url": "http://127.0.0.1:1/v1"}]},
    )
    old: dict[Any, BackendState] = {}
    first = build_route(row, settings, {}, old)
    next(iter(first.backends)).state.in_flight = 3
    row.spec = {
        "model": "m",
        "backends": [{"name": "a", "url": "http://127.0.0.1:1/v1", "weight": 7}],
    }
    second = build_route(row, settings, old, {})
    assert next(iter(second.backends)).state.in_flight == 3
    row.spec = {"model": "m", "backends": [{"name": "a", "url": "http://127.0.0.1:2/v1"}]}
    third = build_route(row, settings, old, {})
    assert next(iter(third.backends)).state.in_flight == 0  # new URL: a new backend


async def test_latency_strategy_prefers_the_faster_backend(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    fast, slow = await backends("fast"), await backends("slow")
    slow.delay_s = 0.05
    model = unique("lat")
    await admin.put(
        model,
        {
            "model": model,
            "strategy": "latency",
            "backends": [backend_spec(fast), backend_spec(slow)],
        },
    )
    for _ in range(60):
        status, _, _ = await chat(http, gw, model)
        assert status == 200
    assert fast.hits > 3 * slow.hits, (fast.hits, slow.hits)


async def test_in_flight_requests_finish_on_their_backend_across_a_swap(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    old, new = await backends("old"), await backends("new")
    old.delay_s = 0.5
    model = unique("swap")
    await admin.put(model, {"model": model, "backends": [backend_spec(old)]})
    pending = asyncio.ensure_future(chat(http, gw, model))
    async with asyncio.timeout(10):
        while True:  # until the slow request is in flight on the old backend
            if old.hits:
                break
            await asyncio.sleep(0.005)
    await admin.put(model, {"model": model, "backends": [backend_spec(new)]})
    status, _, headers = await pending
    assert status == 200
    assert headers["x-azora-backend"] == "old"
    status, _body, headers = await chat(http, gw, model)
    assert status == 200
    assert headers["x-azora-backend"] == "new"
