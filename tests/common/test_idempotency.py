from __future__ import annotations

import asyncio
import contextlib

import httpx
import sqlalchemy as sa

from azora_common.idempotency import REPLAYED_HEADER, differing_fields
from tests.common.sample_app import SampleSettings, create_app, widgets
from tests.conftest import API_TOKEN
from tests.support.apps import bearer, committing_client, rollback_client


async def test_same_key_same_body_replays(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "k-replay"}
    first = await client.post("/v1/widgets", json={"name": "w", "size": 2}, headers=headers)
    again = await client.post("/v1/widgets", json={"name": "w", "size": 2}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert REPLAYED_HEADER not in first.headers
    assert again.headers[REPLAYED_HEADER] == "true"


async def test_same_key_different_body_is_refused(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "k-diff"}
    await client.post("/v1/widgets", json={"name": "w", "size": 2, "tags": ["a"]}, headers=headers)
    resp = await client.post(
        "/v1/widgets", json={"name": "w", "size": 3, "tags": ["b"]}, headers=headers
    )
    assert resp.status_code == 422
    body = resp.json()
    assert body["type"].endswith("/idempotency-key-reused")
    assert body["differing_fields"] == ["size", "tags[0]"]


async def test_refusal_is_stored_and_replayed(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "k-fail"}
    first = await client.post("/v1/widgets", json={"name": "taken", "size": 1}, headers=headers)
    assert first.status_code == 409
    assert first.headers["content-type"] == "application/problem+json"
    assert first.json()["instance"] == "/v1/widgets"
    assert REPLAYED_HEADER not in first.headers
    # The request began executing: its refusal is its answer for every retry with the key.
    again = await client.post("/v1/widgets", json={"name": "taken", "size": 1}, headers=headers)
    assert (again.status_code, again.headers[REPLAYED_HEADER]) == (409, "true")
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json() == first.json()
    other = await client.post("/v1/widgets", json={"name": "free", "size": 1}, headers=headers)
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-reused")


async def test_refusal_after_a_write_keeps_only_the_refusal(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "k-half"}
    body = {"name": "half-written", "size": 1}
    assert (await client.post("/v1/widgets", json=body, headers=headers)).status_code == 409
    again = await client.post("/v1/widgets", json=body, headers=headers)
    assert (again.status_code, again.headers[REPLAYED_HEADER]) == (409, "true")
    async with client.app.state.db.sessionmaker() as session:  # type: ignore[attr-defined]
        count = (
            await session.execute(
                sa.select(sa.func.count()).where(widgets.c.name == "half-written")
            )
        ).scalar_one()
    assert count == 0


async def test_validation_failure_and_server_error_are_not_stored(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "k-invalid"}
    invalid = await client.post("/v1/widgets", json={"name": "w", "size": 0}, headers=headers)
    assert invalid.status_code == 422
    fixed = await client.post("/v1/widgets", json={"name": "w", "size": 1}, headers=headers)
    assert fixed.status_code == 201
    assert REPLAYED_HEADER not in fixed.headers

    headers = {"Idempotency-Key": "k-boom"}
    body = {"name": "boom", "size": 1}
    with contextlib.suppress(RuntimeError):  # the test transport may re-raise it
        assert (await client.post("/v1/widgets", json=body, headers=headers)).status_code == 500
    async with client.app.state.db.sessionmaker() as session:  # type: ignore[attr-defined]
        keys = (
            await session.execute(
                sa.text("SELECT count(*) FROM idempotency_keys WHERE key = 'k-boom'")
            )
        ).scalar_one()
    assert keys == 0


async def test_concurrent_duplicates_one_wins(settings: SampleSettings) -> None:
    app = create_app(settings)
    name = "concurrent-" + str(id(app))
    async with committing_client(app, bearer(API_TOKEN)) as client:
        results = await asyncio.gather(
            *(
                client.post(
                    "/v1/widgets", json={"name": name, "size": 5}, headers={"Idempotency-Key": name}
                )
                for _ in range(20)
            )
        )
        assert {r.status_code for r in results} == {201}
        assert len({r.json()["id"] for r in results}) == 1
        assert sum(REPLAYED_HEADER in r.headers for r in results) == 19
        async with app.state.db.engine.begin() as conn:
            count = (
                await conn.execute(sa.select(sa.func.count()).where(widgets.c.name == name))
            ).scalar_one()
            await conn.execute(sa.delete(widgets).where(widgets.c.name == name))
            await conn.execute(sa.text("DELETE FROM idempotency_keys WHERE key = :k"), {"k": name})
        assert count == 1


def test_differing_fields() -> None:
    assert differing_fields({"a": 1, "b": {"c": [1, 2]}}, {"a": 1, "b": {"c": [1, 3]}}) == [
        "b.c[1]"
    ]
    assert differing_fields({"a": 1}, {"a": 1, "z": None}) == ["z"]


async def test_expired_key_is_forgotten(settings: SampleSettings) -> None:
    app = create_app(settings)
    async with rollback_client(app, bearer(API_TOKEN)) as client:
        headers = {"Idempotency-Key": "k-expired"}
        first = await client.post("/v1/widgets", json={"name": "old", "size": 1}, headers=headers)
        assert first.status_code == 201
        async with app.state.db.sessionmaker() as session:
            await session.execute(
                sa.text(
                    "UPDATE idempotency_keys SET created_at = now() - interval '2 days' "
                    "WHERE key = 'k-expired'"
                )
            )
            await session.commit()
        # Past the retention window the key starts afresh: a new body is a new request.
        second = await client.post("/v1/widgets", json={"name": "new", "size": 2}, headers=headers)
        assert second.status_code == 201
        assert REPLAYED_HEADER not in second.headers
        assert second.json()["id"] != first.json()["id"]
        third = await client.post("/v1/widgets", json={"name": "new", "size": 2}, headers=headers)
        assert third.headers[REPLAYED_HEADER] == "true"
