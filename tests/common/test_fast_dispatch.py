"""Plain routes (azora_common.fastpath) are answered without the framework's middleware stack,
with the platform middleware around them and the app's exception handlers behind them."""

from __future__ import annotations

import httpx
import pytest

from azora_common.errors import PROBLEM_CONTENT_TYPE
from azora_common.fastpath import ServiceApp
from tests.common.test_errors import assert_problem


async def test_plain_route_skips_the_stack_but_not_the_platform_middleware(
    client: httpx.AsyncClient,
) -> None:
    resp = await client.post(
        "/v1/fast-widgets", json={"name": "a", "size": 2}, headers={"X-Request-ID": "rid-123"}
    )
    assert resp.status_code == 201, resp.text
    assert resp.json() == {"name": "a", "size": 2}
    assert resp.headers["x-request-id"] == "rid-123"
    app = client.app  # type: ignore[attr-defined]
    assert isinstance(app, ServiceApp)
    assert type(app.middleware_stack).__name__ == "_Dispatch"
    metrics = (await client.get("/metrics")).text
    assert 'route="/v1/fast-widgets",service="sample",status="201"' in metrics


async def test_plain_route_errors_are_the_apps_problems(client: httpx.AsyncClient) -> None:
    assert_problem(
        await client.post("/v1/fast-widgets", json={"name": "taken", "size": 1}), 409, "conflict"
    )
    body = assert_problem(
        await client.post("/v1/fast-widgets", json={"name": "a", "size": 0}),
        422,
        "validation-error",
    )
    assert [e["field"] for e in body["errors"]] == ["size"]  # type: ignore[union-attr]
    assert_problem(
        await client.post(
            "/v1/fast-widgets", content=b'{"name": ', headers={"content-type": "application/json"}
        ),
        400,
        "malformed-json",
    )
    unauthorized = await client.post(
        "/v1/fast-widgets", json={"name": "a", "size": 1}, headers={"Authorization": "Bearer x"}
    )
    assert unauthorized.status_code == 401
    assert unauthorized.headers["content-type"] == PROBLEM_CONTENT_TYPE


async def test_unexpected_errors_are_a_500_problem_with_the_request_id(
    client: httpx.AsyncClient,
) -> None:
    resp = await client.post("/v1/fast-widgets", json={"name": "boom", "size": 1})
    assert_problem(resp, 500, "internal-error")
    assert resp.headers["x-request-id"]
    assert "an unexpected failure" not in resp.text  # no internals leak


async def test_body_limit_and_other_methods_still_apply(client: httpx.AsyncClient) -> None:
    too_big = await client.post(
        "/v1/fast-widgets",
        content=b"x" * (4 * 1024 * 1024 + 1),
        headers={"content-type": "application/json"},
    )
    assert_problem(too_big, 413, "payload-too-large")
    # Not a plain route's method: the full stack answers (405, as for any route).
    assert_problem(await client.get("/v1/fast-widgets"), 405, "method-not-allowed")


@pytest.mark.parametrize("path", ["/v1/widgets", "/v1/fast-widgets"])
async def test_a_body_that_is_not_utf8_is_a_client_error_on_both_kinds_of_route(
    client: httpx.AsyncClient, path: str
) -> None:
    # Found by fuzzing: the plain routes' body reader let UnicodeDecodeError through as a 500.
    response = await client.post(
        path,
        content=b'{"name": "\xff\xfe", "size": 1}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    if path == "/v1/fast-widgets":  # the plain reader also says why
        assert "not valid UTF-8" in response.text
