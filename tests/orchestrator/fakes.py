"""Controllable OpenAI-compatible backends: real HTTP servers on 127.0.0.1, random ports.

A test sets attributes (plain Python values; reads happen on the server thread under the GIL)
to change latency, status codes, Retry-After, stream shape and health while traffic flows.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Reply:
    """One scripted answer; unscripted requests get the backend's defaults."""

    status: int = 200
    retry_after: str | None = None
    # "ok" | "reset" (drop the connection before any byte) | "midstream" (drop after 2 chunks)
    # | "empty" (200 headers, then close before the first chunk)
    mode: str = "ok"


@dataclass
class FakeBackend:
    name: str
    status: int = 200
    retry_after: str | None = None
    mode: str = "ok"
    delay_s: float = 0.0
    chunks: int = 4
    chunk_delay_s: float = 0.0
    health_status: int = 200
    prompt_tokens: int = 7
    completion_tokens: int = 5
    include_usage: bool = True
    script: deque[Reply] = field(default_factory=deque)
    hits: int = 0
    health_hits: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset_counters(self) -> None:
        self.hits = 0
        self.bodies.clear()
        self.headers.clear()
        self.times.clear()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._health)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _next(self) -> Reply:
        if self.script:
            return self.script.popleft()
        return Reply(self.status, self.retry_after, self.mode)

    async def _health(self, request: web.Request) -> web.Response:
        self.health_hits += 1
        return web.json_response({"object": "list", "data": []}, status=self.health_status)

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body: dict[str, Any] = orjson.loads(await request.read())
        self.hits += 1
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        self.times.append(time.monotonic())
        return body

    def _usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        reply = self._next()
        if reply.status != 200:
            return self._error(reply)
        return web.json_response(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                "model": body.get("model"),
                "usage": {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens},
            }
        )

    def _error(self, reply: Reply) -> web.Response:
        headers = {"Retry-After": reply.retry_after} if reply.retry_after else None
        return web.json_response(
            {
                "error": {
                    "message": f"{self.name} says {reply.status}",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            },
            status=reply.status,
            headers=headers,
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        reply = self._next()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if reply.mode == "reset":
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        if reply.status != 200:
            return self._error(reply)
        model = body.get("model")
        if not body.get("stream"):
            content = {
                "id": f"chatcmpl-{self.name}",
                "object": "chat.completion",
                "created": 1,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"hello from {self.name}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": self._usage(),
            }
            return web.json_response(content)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if reply.mode == "empty":
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        for i in range(self.chunks):
            if reply.mode == "midstream" and i == 2:
                assert request.transport is not None
                request.transport.abort()
                raise asyncio.CancelledError
            chunk = {
                "id": f"chatcmpl-{self.name}",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}],
            }
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        final: dict[str, Any] = {
            "id": f"chatcmpl-{self.name}",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
        await response.write(b"data: " + orjson.dumps(final) + b"\n\n")
        if self.include_usage and (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "id": f"chatcmpl-{self.name}",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [],
                "usage": self._usage(),
            }
            await response.write(b"data: " + orjson.dumps(usage) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
