"""Every error is application/problem+json with a stable type, naming the field and reason."""

from __future__ import annotations

import httpx
import pytest

from azora_common.errors import PROBLEM_BASE, PROBLEM_CONTENT_TYPE


def assert_problem(resp: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, object] = resp.json()
    assert body["type"] == PROBLEM_BASE + slug
    assert body["status"] == status
    return body


async def test_malformed_json(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/v1/widgets",
        content=b'{"name": "a", "size": ',
        headers={"content-type": "application/json"},
    )
    body = assert_problem(resp, 400, "malformed-json")
    assert "JSON" in str(body["detail"])


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "a", "size": "big"}, "size"),
        ({"name": "a"}, "size"),
        ({"size": 3}, "name"),
        ({"name": "a", "size": 0}, "size"),
        ({"name": "a", "size": 1, "colour": "red"}, "colour"),
        ({"name": "a", "size": 1, "tags": ["x", 5]}, "tags[1]"),
    ],
)
async def test_validation_names_the_field(
    client: httpx.AsyncClient, payload: dict[str, object], field: str
) -> None:
    body = assert_problem(await client.post("/v1/widgets", json=payload), 422, "validation-error")
    errors = body["errors"]
    assert isinstance(errors, list)
    assert field in [e["field"] for e in errors]
    assert all(e["reason"] for e in errors)


async def test_unknown_route_and_wrong_method(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/v1/nothing-here"), 404, "not-found")
    assert "/v1/nothing-here" in str(body["detail"])
    assert_problem(await client.delete("/v1/widgets"), 405, "method-not-allowed")


async def test_405_lists_every_method_of_every_route_on_the_path(
    client: httpx.AsyncClient,
) -> None:
    # Two routes on one path (GET and DELETE /v1/widgets/{id}): Starlette's own 405 named
    # only the first route's methods.
    resp = await client.patch("/v1/widgets/1")
    body = assert_problem(resp, 405, "method-not-allowed")
    assert resp.headers["allow"] == "DELETE, GET"
    assert "allowed: DELETE, GET" in str(body["detail"])
    resp = await client.put("/v1/widgets")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "POST"
    # A plain route (fastpath) and the full stack's routes count alike.
    resp = await client.get("/v1/fast-widgets")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "POST"


async def test_domain_errors_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/widgets/999999"), 404, "not-found")
    assert_problem(
        await client.post("/v1/widgets", json={"name": "taken", "size": 1}), 409, "conflict"
    )


async def test_database_input_error_is_a_4xx_not_a_500(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/widgets", json={"name": "nul\u0000byte", "size": 1})
    assert_problem(resp, 422, "invalid-input")


async def test_driver_level_database_input_error_is_a_4xx_not_a_500(
    client: httpx.AsyncClient,
) -> None:
    # The hot paths talk to asyncpg directly: its own exceptions (not SQLAlchemy's wrappers)
    # must get the same answer.
    resp = await client.post("/v1/raw-widgets", json={"name": "nul\u0000byte", "size": 1})
    body = assert_problem(resp, 422, "invalid-input")
    assert "0x00" in str(body["detail"])
    ok = await client.post("/v1/raw-widgets", json={"name": "fine", "size": 1})
    assert ok.status_code == 201, ok.text


async def test_oversized_body_is_refused(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/v1/widgets",
        content=b"x" * (4 * 1024 * 1024 + 1),
        headers={"content-type": "application/json"},
    )
    assert_problem(resp, 413, "payload-too-large")


async def test_openapi_documents_problems(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "Problem" in spec["components"]["schemas"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    post = spec["paths"]["/v1/widgets"]["post"]["responses"]
    assert PROBLEM_CONTENT_TYPE in post["422"]["content"]


async def test_openapi_documents_malformed_json_on_every_json_body(
    client: httpx.AsyncClient,
) -> None:
    """Every operation that takes a JSON body documents the 400 it answers for a malformed one
    (schemathesis' content_type/status checks look the status up); others do not."""
    spec = (await client.get("/openapi.json")).json()
    with_body = 0
    for path, item in spec["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            if "application/json" in op.get("requestBody", {}).get("content", {}):
                with_body += 1
                assert PROBLEM_CONTENT_TYPE in responses["400"]["content"], (method, path)
                codes = [c for c in responses if c != "default"]
                assert codes == sorted(codes), (method, path)
                assert list(responses)[-1] == "default"
            else:
                assert "400" not in responses, (method, path)
    assert with_body >= 2
    malformed = await client.post(
        "/v1/widgets", content=b"\xff{", headers={"content-type": "application/json"}
    )
    assert_problem(malformed, 400, "malformed-json")
