from __future__ import annotations

import asyncio

import httpx

from tests.common.sample_app import SampleSettings, create_app
from tests.conftest import API_TOKEN, token_settings
from tests.support.apps import bearer, running
from tests.support.pg import PostgresServer


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"]["schema"] == "0001"


async def test_not_ready_when_database_is_gone() -> None:
    settings = SampleSettings(
        database_url="postgresql://postgres@127.0.0.1:1/nowhere",
        **token_settings(),  # type: ignore[arg-type]
    )
    app = create_app(settings)
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert "unreachable" in ready.json()["checks"]["database"]["reason"]


async def test_not_ready_when_schema_is_behind(pg: PostgresServer) -> None:
    await asyncio.to_thread(pg.recreate_database, "azora_test_unmigrated")
    settings = SampleSettings(
        database_url=pg.async_url("azora_test_unmigrated"),
        **token_settings(),  # type: ignore[arg-type]
    )
    app = create_app(settings)
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ready = await client.get("/readyz")
    assert ready.status_code == 503


async def test_metrics_use_route_templates(client: httpx.AsyncClient) -> None:
    await client.get("/v1/widgets/424242")
    await client.get("/v1/definitely/unknown/path")
    text = (await client.get("/metrics")).text
    assert 'route="/v1/widgets/{widget_id}"' in text
    assert "424242" not in text
    assert "/v1/definitely/unknown/path" not in text
    assert 'route="<unmatched>"' in text
    assert "azora_http_request_duration_seconds_bucket" in text


async def test_request_id_is_propagated(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/widgets", json={"name": "rid", "size": 1})).json()
    resp = await client.get(f"/v1/widgets/{created['id']}", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["x-request-id"] == "abc-123"
    assert resp.json()["request_id"] == "abc-123"
    generated = await client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    insane = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert insane.headers["x-request-id"] != "bad id\twith spaces"


async def test_listener_reloads_every_replica(settings: SampleSettings) -> None:
    replica_a, replica_b = create_app(settings), create_app(settings)
    async with running(replica_a), running(replica_b):
        await replica_b.state.listener.connected.wait()
        transport = httpx.ASGITransport(app=replica_a)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://t",
            headers=bearer(settings.admin_token.get_secret_value()),
        ) as client:
            value = f"v{id(replica_a)}"
            resp = await client.put(f"/admin/v1/config/colour?value={value}")
            assert resp.status_code == 200
        # Replica B never saw the write: only NOTIFY can tell it.
        for _ in range(200):
            if replica_b.state.snapshot["config"].get("colour") == value:
                break
            await asyncio.sleep(0.01)
        assert replica_b.state.snapshot["config"]["colour"] == value
        assert replica_b.state.listener.reloads >= 2
    _ = API_TOKEN
