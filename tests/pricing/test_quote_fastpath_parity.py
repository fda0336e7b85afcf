"""The plain ``POST /v1/quotes`` route answers bad requests exactly as the FastAPI route does.

The FastAPI route stays registered behind the fast one (it documents the API); an app with the
fast route removed is the reference, and every case must get the same status, content type and
problem document from both.
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from azora_common.fastpath import FastRoute, ServiceApp
from tests.conftest import API_TOKEN
from tests.pricing.conftest import make_app
from tests.support.apps import bearer, rollback_client

AUTH = bearer(API_TOKEN)
JSON = {"Content-Type": "application/json"}
GOOD = b'{"currency": "EUR", "lines": [{"product": "nope", "quantity": 1}]}'

CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("malformed json, no token", b'{"currency": ', JSON),
    ("malformed json", b'{"currency": ', {**JSON, **AUTH}),
    ("no token", GOOD, JSON),
    ("bad token", GOOD, {**JSON, "Authorization": "Bearer nope"}),
    ("empty body", b"", {**JSON, **AUTH}),
    ("not json content type", GOOD, {"Content-Type": "text/plain", **AUTH}),
    (
        "negative quantity",
        b'{"currency":"EUR","lines":[{"product":"a","quantity":-1}]}',
        {**JSON, **AUTH},
    ),
    ("no lines", b'{"currency":"EUR","lines":[]}', {**JSON, **AUTH}),
    (
        "extra field",
        b'{"currency":"EUR","lines":[{"product":"a","quantity":1}],"x":1}',
        {**JSON, **AUTH},
    ),
    (
        "huge integer",
        b'{"currency":"EUR","lines":[{"product":"a","quantity":123456789012345678901}]}',
        {**JSON, **AUTH},
    ),
    ("empty idempotency key", GOOD, {**JSON, **AUTH, "Idempotency-Key": ""}),
    ("empty key and bad body", b'{"currency":1}', {**JSON, **AUTH, "Idempotency-Key": ""}),
    ("unknown product", GOOD, {**JSON, **AUTH}),
    (
        "unknown currency",
        b'{"currency":"XXQ","lines":[{"product":"a","quantity":1}]}',
        {**JSON, **AUTH},
    ),
]


def without_fast_route(app: FastAPI) -> FastAPI:
    app.router.routes[:] = [r for r in app.router.routes if not isinstance(r, FastRoute)]
    assert isinstance(app, ServiceApp)
    app.fast_routes.clear()  # nor the direct dispatch in front of the middleware stack
    return app


@pytest.mark.parametrize(("case", "content", "headers"), CASES, ids=[c[0] for c in CASES])
async def test_fast_route_answers_like_the_fastapi_route(
    pricing_db: str, case: str, content: bytes, headers: dict[str, str]
) -> None:
    answers = []
    for app in (make_app(pricing_db), without_fast_route(make_app(pricing_db))):
        async with rollback_client(app) as client:
            response = await client.post("/v1/quotes", content=content, headers=headers)
        answers.append(
            (
                response.status_code,
                response.headers.get("content-type"),
                response.json(),
            )
        )
    fast, reference = answers
    assert fast == reference
    assert 400 <= fast[0] < 500
