"""The floor: a bare Python proxy (raw ASGI on uvicorn + httptools, one aiohttp keep-alive
session). Parses the body with orjson, picks a backend, forwards, relays. Nothing else.

``python floor.py PORT BACKEND_BASE_URL``
"""

from __future__ import annotations

import itertools
import sys

import aiohttp
import orjson
import uvicorn

BACKENDS = [sys.argv[2].rstrip("/")]
_next = itertools.cycle(BACKENDS)
session: aiohttp.ClientSession | None = None


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    global session
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=1000),
                    auto_decompress=False,
                    skip_auto_headers=("Accept-Encoding", "User-Agent"),
                )
                await send({"type": "lifespan.startup.complete"})
            else:
                assert session is not None
                await session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    payload = orjson.loads(body)
    url = next(_next) + scope["path"][3:]  # /v1/chat/completions -> base + /chat/completions
    assert session is not None
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
        if payload.get("stream"):
            await send(
                {
                    "type": "http.response.start",
                    "status": resp.status,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        content = await resp.read()
        await send(
            {
                "type": "http.response.start",
                "status": resp.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
