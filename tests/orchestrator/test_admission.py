"""Admission (admission.py): the token and its scope, the body and its model, rate limits by
requests and tokens for the route and the client."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import API_TOKEN
from tests.orchestrator.conftest import (
    OTHER_TOKEN,
    READ_ONLY_TOKEN,
    Admin,
    Gw,
    backend_spec,
    bearer,
    chat,
    openai_error,
    unique,
)


async def test_auth_on_the_data_plane(gw: Gw, admin: Admin, backends) -> None:
    a = await backends("a")
    model = unique("auth")
    await admin.put(model, {"model": model, "backends": [backend_spec(a)]})
    body = {"model": model, "messages": []}
    async with aiohttp.ClientSession() as anon:
        for headers, status, etype in [
            ({}, 401, "authentication_error"),
            (bearer("not-a-token"), 401, "authentication_error"),
            ({"Authorization": "Basic " + API_TOKEN}, 401, "authentication_error"),
            (bearer(READ_ONLY_TOKEN), 403, "permission_error"),
        ]:
            async with anon.post(gw.v1 + "/chat/completions", json=body, headers=headers) as r:
                assert r.status == status
                assert openai_error(await r.json())["type"] == etype
            async with anon.get(gw.v1 + "/models", headers=headers) as r:
                assert r.status == status
    assert a.hits == 0


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (b'{"messages": []}', 400, "missing_model", "model"),
        (b'{"model": 42, "messages": []}', 400, "missing_model", "model"),
        (b'{"model": "no-such-model-anywhere", "messages": []}', 404, "model_not_found", "model"),
        (b'{"model": "x", "messages": [}', 400, "invalid_json", None),
        (b"[1, 2]", 400, "invalid_json", None),
        (b"", 400, "invalid_json", None),
        (b'{"model": "x", "pad": "' + b"a" * 70_000 + b'"}', 413, "request_too_large", None),
    ],
)
async def test_bad_input_is_a_clear_4xx(
    gw: Gw, http: aiohttp.ClientSession, body: bytes, status: int, code: str, param: str | None
) -> None:
    for path in ("/chat/completions", "/completions", "/embeddings"):
        async with http.post(
            gw.v1 + path, data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == status
            assert resp.headers["Content-Type"] == "application/json"
            error = openai_error(await resp.json())
            assert error["code"] == code
            assert error["param"] == param
            assert error["type"] == "invalid_request_error"


async def test_models_lists_route_names(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    a = await backends("a")
    model = unique("listed")
    await admin.put(model, {"model": model, "backends": [backend_spec(a)]})
    async with http.get(gw.v1 + "/models") as resp:
        body = await resp.json()
    assert body["object"] == "list"
    entry = next(m for m in body["data"] if m["id"] == model)
    assert entry["object"] == "model"


async def test_requests_per_minute_route_and_client(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    a = await backends("a")
    model = unique("rpm")
    await admin.put(
        model,
        {
            "model": model,
            "backends": [backend_spec(a)],
            "rateLimits": {"requestsPerMinute": 5, "perClient": {"requestsPerMinute": 3}},
        },
    )
    for _ in range(3):
        status, _, _ = await chat(http, gw, model)
        assert status == 200
    status, body, headers = await chat(http, gw, model)
    assert status == 429
    error = openai_error(body)
    assert error["type"] == "rate_limit_error"
    assert "client" in str(error["message"])
    assert int(headers["Retry-After"]) >= 1
    other = bearer(OTHER_TOKEN)
    for _ in range(2):  # the route still has 2 of its 5
        status, _, _ = await chat(http, gw, model, headers=other)
        assert status == 200
    status, body, _ = await chat(http, gw, model, headers=other)
    assert status == 429
    assert "route" in str(openai_error(body)["message"])
    assert a.hits == 5


async def test_tokens_per_minute_estimated_then_reconciled(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    heavy, light = await backends("heavy"), await backends("light")
    # The backend reports more than the estimate: the debt is charged after the fact.
    heavy.prompt_tokens, heavy.completion_tokens = 50, 400
    model = unique("tpm")
    await admin.put(
        model,
        {
            "model": model,
            "backends": [backend_spec(heavy)],
            "rateLimits": {"tokensPerMinute": 1000},
        },
    )
    results = [(await chat(http, gw, model, max_tokens=300))[0] for _ in range(3)]
    # ~320 estimated each; after reconciliation 1000 - 450 - 450 leaves ~100: the third waits.
    assert results == [200, 200, 429]

    # The backend reports far less than the estimate: the difference is given back, so many
    # more requests fit than the estimate alone would allow (1000 / 320 = 3).
    light.prompt_tokens, light.completion_tokens = 2, 3
    model2 = unique("tpm-light")
    await admin.put(
        model2,
        {
            "model": model2,
            "backends": [backend_spec(light)],
            "rateLimits": {"tokensPerMinute": 1000},
        },
    )
    for _ in range(8):
        status, body, _ = await chat(http, gw, model2, max_tokens=300)
        assert status == 200, body


async def test_client_tokens_per_minute(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    a = await backends("a")
    model = unique("ctpm")
    await admin.put(
        model,
        {
            "model": model,
            "backends": [backend_spec(a)],
            "rateLimits": {"perClient": {"tokensPerMinute": 500}},
        },
    )
    a.prompt_tokens, a.completion_tokens = 300, 400
    status, _, _ = await chat(http, gw, model, max_tokens=400)
    assert status == 200  # ~420 estimated of 500, then 700 reported: the client is in debt
    status, body, _ = await chat(http, gw, model, max_tokens=400)
    assert status == 429
    assert "client" in body["error"]["message"]
    status, _, _ = await chat(http, gw, model, max_tokens=400, headers=bearer(OTHER_TOKEN))
    assert status == 200
