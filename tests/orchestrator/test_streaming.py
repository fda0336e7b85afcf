"""Streaming: pass-through, failover before the first byte, a clean error after it."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from tests.orchestrator.conftest import Admin, Gw, backend_spec, unique
from tests.orchestrator.fakes import Reply


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
