from __future__ import annotations

import gc

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


def test_the_running_gateway_has_the_tuned_collector(gw: Gw) -> None:
    # create_service_app's lifespan (azora_common.runtime.tune_gc) ran after the gateway's own
    # start: the warmed-up heap is frozen and the young threshold raised.
    assert gc.get_threshold()[0] == gw.app.state.settings.gc_threshold == 50_000
    assert gc.get_freeze_count() > 0
