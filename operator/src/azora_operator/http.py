"""The operator's own HTTP endpoint: ``/healthz`` (liveness), ``/readyz`` and ``/metrics``.

One small aiohttp server in the operator's event loop, started from ``@kopf.on.startup``. It
answers only while the loop runs, which is exactly what a liveness probe should check; Kopf's
own ``--liveness`` server cannot serve ``/metrics`` on the same port, so we do not use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def build_app(ready: Callable[[], dict[str, Any]]) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        state = ready()
        return web.json_response(state, status=200 if state.get("ready") else 503)

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_server(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
