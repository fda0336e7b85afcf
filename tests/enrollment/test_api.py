"""The HTTP layer (``azora_enrollment.api``): ``POST /v1/enrollments`` is one plain route with
FastAPI's answers for malformed bodies, auth and validation, documented from its handler."""

from __future__ import annotations

import httpx
import pytest


async def test_fast_route_is_first(client: httpx.AsyncClient) -> None:
    app = client.app  # type: ignore[attr-defined]
    assert app.router.routes[0].endpoint.__module__ == "azora_enrollment.api"


async def test_malformed_json_is_a_400_before_auth(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/enrollments",
        content=b'{"cohort": ',
        headers={"Content-Type": "application/json", "Authorization": ""},
    )
    assert response.status_code in (400, 422)
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("headers", "code"),
    [({"Authorization": ""}, 401), ({"Authorization": "Bearer nope-not-a-token"}, 401)],
)
async def test_auth_problems(client: httpx.AsyncClient, headers: dict[str, str], code: int) -> None:
    response = await client.post(
        "/v1/enrollments", json={"cohort": "a/b", "student": {"id": "s"}}, headers=headers
    )
    assert response.status_code == code
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_validation_names_body_and_header_fields(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/enrollments",
        json={"cohort": "no-slash", "student": {"id": "s", "extra": 1}},
        headers={"Idempotency-Key": "k" * 256},
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    text = response.text
    for field in ("cohort", "student.extra", "Idempotency-Key"):
        assert field in text, (field, text)


async def test_missing_body_is_a_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/enrollments")
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_post_enrollments_is_documented_from_its_one_handler(
    client: httpx.AsyncClient,
) -> None:
    app = client.app  # type: ignore[attr-defined]
    post = app.openapi()["paths"]["/v1/enrollments"]["post"]
    assert post["security"] == [{"HTTPBearer": []}]
    assert [p["name"] for p in post["parameters"]] == ["Idempotency-Key"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["cohort", "student"]
    assert body["properties"]["student"] == {"$ref": "#/components/schemas/StudentIn"}
    assert "StudentIn" in app.openapi()["components"]["schemas"]
    handlers = {
        r.endpoint
        for r in app.router.routes
        if getattr(r, "path", None) == "/v1/enrollments" and "POST" in getattr(r, "methods", ())
    }
    assert len(handlers) == 1  # the plain route and the documented route share one handler
