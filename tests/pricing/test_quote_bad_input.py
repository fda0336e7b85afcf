"""Bad requests to ``POST /v1/quotes`` (one handler, served as a plain route) are 4xx problems.

This was a parity test between the plain route and a FastAPI twin; the twin is gone (one
handler per endpoint), and what stays is the behaviour every case must show.
"""

from __future__ import annotations

import pytest

from azora_common.errors import PROBLEM_CONTENT_TYPE
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


@pytest.mark.parametrize(("case", "content", "headers"), CASES, ids=[c[0] for c in CASES])
async def test_bad_quote_requests_are_client_errors(
    pricing_db: str, case: str, content: bytes, headers: dict[str, str]
) -> None:
    async with rollback_client(make_app(pricing_db)) as client:
        response = await client.post("/v1/quotes", content=content, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.json()["status"] == response.status_code
