"""Upstream attempts (upstream.py): priority tiers, model fallbacks, Retry-After, the retry budget,
timeouts, backend errors passed through, streams (pass-through, failover before the first byte,
a clean error after it) and the metrics every try records."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from tests.conftest import API_TOKEN
from tests.orchestrator.conftest import (
    Admin,
    Gw,
    backend_spec,
    chat,
    unique,
)
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


async def test_backend_client_errors_pass_through_without_retry(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    a, b = await backends("a"), await backends("b")
    a.status = b.status = 400
    model = unique("passthrough")
    await admin.put(model, {"model": model, "backends": [backend_spec(a), backend_spec(b)]})
    status, body, _ = await chat(http, gw, model)
    assert status == 400
    assert body["error"]["message"] == "a says 400"
    assert a.hits + b.hits == 1


async def _stream(http: aiohttp.ClientSession, gw: Gw, model: str) -> tuple[int, list[bytes], str]:
    body = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
    }
    chunks: list[bytes] = []
    # Bounded so that a hang fails the test instead of blocking the suite.
    async with asyncio.timeout(20):
        async with http.post(gw.v1 + "/chat/completions", json=body) as resp:
            async for chunk in resp.content.iter_any():
                chunks.append(chunk)
            return resp.status, chunks, resp.headers.get("x-azora-backend", "")


def _events(chunks: list[bytes]) -> list[bytes]:
    return [e for e in b"".join(chunks).split(b"\n\n") if e.strip()]


async def _two_backend_route(admin: Admin, backends, **extra: object) -> tuple[str, object, object]:
    a, b = await backends("a"), await backends("b")
    model = unique("stream")
    await admin.put(
        model,
        {"model": model, "backends": [backend_spec(a), backend_spec(b)], **extra},
    )
    return model, a, b


async def test_stream_passes_through_unchanged(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    a = await backends("a")
    a.chunks = 6
    a.chunk_delay_s = 0.01
    model = unique("stream")
    await admin.put(model, {"model": model, "backends": [backend_spec(a)]})
    status, chunks, _ = await _stream(http, gw, model)
    assert status == 200
    events = _events(chunks)
    assert events[-1] == b"data: [DONE]"
    contents = [
        orjson.loads(e[6:])["choices"][0]["delta"].get("content")
        for e in events[:-1]
        if orjson.loads(e[6:])["choices"]
    ]
    assert contents[:6] == [f"t{i} " for i in range(6)]
    # Relayed as they came, not buffered into one body.
    assert len(chunks) > 1


async def test_failure_before_first_byte_fails_over(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    for mode in ("reset", "empty"):
        model, a, b = await _two_backend_route(admin, backends)
        a.script.append(Reply(mode=mode))  # SWRR's first pick is a
        status, chunks, served_by = await _stream(http, gw, model)
        assert status == 200, mode
        assert served_by == "b"
        assert _events(chunks)[-1] == b"data: [DONE]"
        assert a.hits == 1
        assert b.hits == 1


async def test_error_status_before_first_byte_fails_over(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    model, a, _b = await _two_backend_route(admin, backends)
    a.script.append(Reply(status=503))
    status, chunks, served_by = await _stream(http, gw, model)
    assert status == 200
    assert served_by == "b"
    assert b"[DONE]" in b"".join(chunks)


async def test_mid_stream_failure_ends_with_an_error_event(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    model, a, b = await _two_backend_route(admin, backends)
    a.script.append(Reply(mode="midstream"))
    status, chunks, served_by = await _stream(http, gw, model)
    assert status == 200
    assert served_by == "a"
    events = _events(chunks)
    assert len(events) == 3  # two relayed chunks, then the error; never a retry after bytes
    error = orjson.loads(events[-1][6:])["error"]
    assert error["code"] == "upstream_stream_error"
    assert set(error) == {"message", "type", "param", "code"}
    assert b.hits == 0


async def test_stream_idle_timeout_ends_the_stream(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    a = await backends("a")
    a.chunk_delay_s = 1.0
    model = unique("idle")
    await admin.put(
        model,
        {"model": model, "backends": [backend_spec(a, timeouts={"streamIdle": "200ms"})]},
    )
    status, chunks, _ = await _stream(http, gw, model)
    assert status == 200
    last = orjson.loads(_events(chunks)[-1][6:])
    assert last["error"]["code"] == "upstream_stream_error"
    assert "idle" in last["error"]["message"]


async def test_metrics_are_exported_with_bounded_labels(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    a = await backends("a")
    model = unique("metrics")
    await admin.put(model, {"model": model, "backends": [backend_spec(a)]})
    status, _, headers = await chat(http, gw, model)
    assert status == 200
    assert float(headers["x-azora-overhead-ms"]) >= 0
    status, _, _ = await chat(http, gw, model, stream=True, stream_options={"include_usage": True})
    async with http.get(gw.base_url + "/metrics") as resp:
        text = await resp.text()
    route = f'route="test/{model}"'
    for name in (
        "azora_gen_ai_client_operation_duration_seconds_bucket",
        "azora_gen_ai_server_time_to_first_token_seconds_bucket",
        "azora_gen_ai_server_time_per_output_token_seconds_bucket",
        "azora_gen_ai_client_token_usage_bucket",
        "azora_orchestrator_requests_total",
        "azora_orchestrator_overhead_seconds_bucket",
        "azora_orchestrator_backend_healthy",
        "azora_orchestrator_backend_in_flight",
        "azora_orchestrator_backend_effective_weight",
    ):
        assert any(line.startswith(name + "{") and route in line for line in text.splitlines()), (
            name
        )
    assert 'token_type="input"' in text
    assert 'token_type="output"' in text
    assert f'azora_orchestrator_requests_total{{backend="a",outcome="success",{route}}} 2.0' in text
    # OTel's recommended boundaries, e.g. the 81.92 s top bucket of the operation duration.
    assert 'le="81.92"' in text
    assert 'le="6.7108864e+07"' in text
    assert API_TOKEN not in text
