"""A small OpenAI-compatible model backend as its own process, for tests that need real
processes behind the gateway (the fault suite, the fuzzing run).

``python -m tests.support.openai_stub --port N --name a`` serves ``/v1/chat/completions``
(plain and SSE), ``/v1/completions``, ``/v1/embeddings``, ``GET /v1/models`` and ``/healthz``
on 127.0.0.1 with deterministic answers that name the instance (``system_fingerprint``), so a
kill -9 of the process is a real backend outage. It answers instantly: the gateway, not the
model, is under test. ``StubBackend`` runs it as a :class:`ManagedProcess`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from azora_devenv.procs import ManagedProcess, free_port


def _app(name: str) -> web.Application:
    fingerprint = f"stub:{name}"

    async def models(_: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": name}]}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "instance": name})

    async def body_of(request: web.Request) -> dict[str, Any] | None:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None

    def bad_request() -> web.Response:
        error = {"message": "invalid JSON body", "type": "invalid_request_error", "code": None}
        return web.json_response({"error": error}, status=400)

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await body_of(request)
        if body is None:
            return bad_request()
        model = str(body.get("model") or "stub")
        created = int(time.time())
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if body.get("stream") is True:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for piece in ("ok ", name):
                chunk = {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": fingerprint,
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            final = {
                "id": "chatcmpl-stub",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": usage,
            }
            await resp.write(b"data: " + orjson.dumps(final) + b"\n\ndata: [DONE]\n\n")
            await resp.write_eof()
            return resp
        if request.path.endswith("/completions") and "chat" not in request.path:
            choice: dict[str, Any] = {"index": 0, "text": f"ok {name}", "finish_reason": "stop"}
            kind = "text_completion"
        else:
            message = {"role": "assistant", "content": f"ok {name}"}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            kind = "chat.completion"
        return web.json_response(
            {
                "id": "cmpl-stub",
                "object": kind,
                "created": created,
                "model": model,
                "system_fingerprint": fingerprint,
                "choices": [choice],
                "usage": usage,
            }
        )

    async def embeddings(request: web.Request) -> web.Response:
        body = await body_of(request)
        if body is None:
            return bad_request()
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        data = [
            {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(count)
        ]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": str(body.get("model") or "stub"),
                "usage": {"prompt_tokens": count, "total_tokens": count},
            }
        )

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/healthz", healthz)
    return app


class StubBackend:
    """The stub as a process on a fixed port (kept across restarts)."""

    def __init__(self, name: str, work_dir: Path, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.process = ManagedProcess(
            f"stub-{name}:{self.port}",
            [
                sys.executable,
                "-m",
                "tests.support.openai_stub",
                "--port",
                str(self.port),
                "--name",
                name,
            ],
            log_path=work_dir / f"stub-{name}.log",
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 30.0) -> StubBackend:
        self.process.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.process.check_alive()
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/healthz", timeout=1
                ) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not up in {timeout}s:\n{self.process.log_tail()}")

    def stop(self) -> None:
        self.process.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="stub")
    args = parser.parse_args()
    web.run_app(_app(args.name), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
