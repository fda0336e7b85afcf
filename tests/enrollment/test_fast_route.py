"""The plain Starlette route for ``POST /v1/enrollments`` (``fastpath.py``): the same problem
shapes as the FastAPI route, Idempotency-Key semantics kept by the one statement
(``enrollment_admit_keyed``), and a refusal leaving nothing behind, the key included."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import httpx
import pytest

from tests.conftest import API_TOKEN
from tests.enrollment.conftest import AppFactory
from tests.enrollment.helpers import put_cohort, spec, status
from tests.support.apps import bearer, committing_client


def _slug(response: httpx.Response) -> str:
    return str(response.json()["type"]).rsplit("/", 1)[1]


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


async def test_unknown_cohort_is_a_404(client: httpx.AsyncClient, ns: str) -> None:
    response = await client.post(
        "/v1/enrollments",
        json={"cohort": f"{ns}/absent", "student": {"id": "s"}},
        headers={"Idempotency-Key": "k"},
    )
    assert response.status_code == 404
    assert _slug(response) == "cohort-not-found"


async def test_refusal_leaves_the_key_free(client: httpx.AsyncClient, ns: str) -> None:
    # A refusal rolls the key back with everything else: the same key may be retried once
    # the cohort has room, and then it decides (it does not replay the refusal).
    await put_cohort(client, ns, "c", spec(capacity=0))
    body = {"cohort": f"{ns}/c", "student": {"id": "amy", "segment": "pro"}}
    refused = await client.post("/v1/enrollments", json=body, headers={"Idempotency-Key": "k"})
    assert refused.status_code == 409
    assert "Idempotent-Replayed" not in refused.headers
    await put_cohort(client, ns, "c", spec(capacity=1), generation=2)
    taken = await client.post("/v1/enrollments", json=body, headers={"Idempotency-Key": "k"})
    assert taken.status_code == 201, taken.text
    assert taken.json()["state"] == "enrolled"
    assert taken.json()["student"] == {"id": "amy", "segment": "pro"}
    replay = await client.post("/v1/enrollments", json=body, headers={"Idempotency-Key": "k"})
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == taken.json()


async def test_waitlist_response_and_replay(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(client, ns, "c", spec(capacity=1, waitlist={"enabled": True}))
    first = await client.post("/v1/enrollments", json={"cohort": f"{ns}/c", "student": {"id": "a"}})
    assert first.json()["seated_at"] == first.json()["created_at"]
    body = {"cohort": f"{ns}/c", "student": {"id": "b"}}
    waiting = await client.post("/v1/enrollments", json=body, headers={"Idempotency-Key": "w"})
    assert waiting.status_code == 201
    view = waiting.json()
    assert view["state"] == "waitlisted"
    assert view["waitlist_position"] == 1
    assert view["seated_at"] is None and view["payment"] is None
    assert (await client.get(f"/v1/enrollments/{view['id']}")).json()["state"] == "waitlisted"
    replay = await client.post("/v1/enrollments", json=body, headers={"Idempotency-Key": "w"})
    assert replay.json() == view
    other = await client.post(
        "/v1/enrollments",
        json={"cohort": f"{ns}/c", "student": {"id": "b", "segment": "x"}},
        headers={"Idempotency-Key": "w"},
    )
    assert other.status_code == 422
    assert other.json()["differing_fields"] == ["student.segment"]


async def test_concurrent_duplicates_take_one_place(make_app: AppFactory) -> None:
    # Two replicas, the same key sent 20 times at once: one decision, the rest replay it.
    ns = "t-" + uuid.uuid4().hex[:10]
    one, two = make_app(), make_app()
    async with (
        committing_client(one, headers=bearer(API_TOKEN)) as a,
        committing_client(two, headers=bearer(API_TOKEN)) as b,
    ):
        await put_cohort(a, ns, "c", spec(capacity=5))
        body = {"cohort": f"{ns}/c", "student": {"id": "dup"}}
        responses = await asyncio.gather(
            *(
                (a if i % 2 else b).post(
                    "/v1/enrollments", json=body, headers={"Idempotency-Key": "same"}
                )
                for i in range(20)
            )
        )
        assert Counter(r.status_code for r in responses) == {201: 20}
        assert len({r.json()["id"] for r in responses}) == 1
        assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 19
        assert (await status(a, ns, "c"))["enrolled"] == 1
