"""ASGI plumbing of the data plane (asgi.py, and the plain routes of api.py): how requests get in
(ServiceApp plain routes, the platform middleware's request id, wrong methods), bodies read
under a limit, answers in the OpenAI error shape, the OpenAPI generated from the handlers."""

from __future__ import annotations

import aiohttp
import pytest
from fastapi.routing import APIRoute

from azora_common.fastpath import ServiceApp
from azora_orchestrator import api
from tests.orchestrator.conftest import (
    Admin,
    Gw,
    backend_spec,
    chat,
    openai_error,
    unique,
)


async def test_oversized_chunked_body_is_refused(gw: Gw, http: aiohttp.ClientSession) -> None:
    async def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(20):
            yield b"x" * 8192

    async with http.post(gw.v1 + "/chat/completions", data=chunks()) as resp:
        assert resp.status == 413
        assert openai_error(await resp.json())["code"] == "request_too_large"


async def test_request_id_flows_to_the_backend_and_back(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    a = await backends("a")
    model = unique("rid")
    await admin.put(model, {"model": model, "backends": [backend_spec(a)]})
    status, _, headers = await chat(http, gw, model, headers={"X-Request-ID": "trace-42"})
    assert status == 200
    assert headers["X-Request-ID"] == "trace-42"
    assert a.headers[0]["X-Request-ID"] == "trace-42"
    status, _, headers = await chat(http, gw, model)
    assert len(headers["X-Request-ID"]) == 32  # generated when the client sends none


async def test_wrong_method_on_the_data_plane(gw: Gw, http: aiohttp.ClientSession) -> None:
    async with http.get(gw.v1 + "/chat/completions") as resp:
        assert resp.status == 405
    async with http.post(gw.v1 + "/models", json={}) as resp:
        assert resp.status == 405


def test_each_endpoint_has_one_handler_served_as_a_plain_route(gw: Gw) -> None:
    app = gw.app
    assert isinstance(app, ServiceApp)
    assert type(app.middleware_stack).__name__ == "_Dispatch"  # plain routes skip the stack
    plain = {(r.path, frozenset(r.methods or ())): r.endpoint for r in app.fast_routes}
    assert set(plain) == {
        ("/v1/chat/completions", frozenset({"POST"})),
        ("/v1/completions", frozenset({"POST"})),
        ("/v1/embeddings", frozenset({"POST"})),
        ("/v1/models", frozenset({"GET", "HEAD"})),
    }
    assert len(set(plain.values())) == len(plain)  # a handler per endpoint
    # The route that documents each endpoint runs the very same handler: no twin.
    documented = {
        (r.path, frozenset(r.methods)): r.endpoint
        for r in api.data_plane.routes
        if isinstance(r, APIRoute)
    }
    assert documented == {
        (path, methods - {"HEAD"}): endpoint for (path, methods), endpoint in plain.items()
    }


def test_openapi_describes_the_data_plane_from_its_handlers(gw: Gw) -> None:
    schema = gw.app.openapi()
    assert "bearer" not in schema["components"]["securitySchemes"]
    for path, streams in (
        ("/v1/chat/completions", True),
        ("/v1/completions", True),
        ("/v1/embeddings", False),
    ):
        op = schema["paths"][path]["post"]
        assert op["tags"] == ["data plane"]
        assert op["security"] == [{"HTTPBearer": []}]
        body = op["requestBody"]["content"]["application/json"]["schema"]
        assert body["required"] == ["model"]
        assert ("text/event-stream" in op["responses"]["200"]["content"]) is streams
        error = op["responses"]["default"]["content"]["application/json"]["schema"]
        assert error["required"] == ["error"]
        assert [c for c in op["responses"] if c[0] in "45"] == []
    models = schema["paths"]["/v1/models"]["get"]
    assert "default" in models["responses"]
    assert "requestBody" not in models


async def test_data_plane_requests_have_the_platform_http_metrics(
    gw: Gw, http: aiohttp.ClientSession
) -> None:
    async with http.post(gw.v1 + "/embeddings", json={"input": "no model"}) as resp:
        assert resp.status == 400
    async with http.get(gw.base_url + "/metrics") as resp:
        text = await resp.text()
    assert (
        'azora_http_requests_total{method="POST",route="/v1/embeddings",'
        'service="azora-orchestrator",status="400"}'
    ) in text


async def test_an_unexpected_error_is_an_openai_500_with_the_request_id(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await backends("a")
    model = unique("boom")
    await admin.put(model, {"model": model, "backends": [backend_spec(a)]})

    async def boom(*args: object) -> None:
        raise RuntimeError("an unexpected failure")

    for target in (gw.gateway.admission, gw.gateway.upstream):
        method = "admit" if target is gw.gateway.admission else "relay"
        with monkeypatch.context() as patch:
            patch.setattr(target, method, boom)
            status, body, headers = await chat(http, gw, model, headers={"X-Request-ID": "r-500"})
        assert status == 500
        assert openai_error(body)["code"] == "internal_error"
        assert "an unexpected failure" not in str(body)
        assert headers["X-Request-ID"] == "r-500"
    assert a.hits == 0
