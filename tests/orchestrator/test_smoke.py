from __future__ import annotations

import aiohttp

from tests.orchestrator.conftest import Admin, Gw, backend_spec, chat, unique


async def test_proxy_round_trip(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    a = await backends("a")
    model = unique("smoke")
    await admin.put(model, {"model": model, "backends": [backend_spec(a, model="up-model")]})
    status, body, headers = await chat(http, gw, model, temperature=0.5, unknown_field={"x": 1})
    assert status == 200, body
    assert a.bodies[0]["model"] == "up-model"
    assert a.bodies[0]["unknown_field"] == {"x": 1}
    assert "x-azora-overhead-ms" in headers
