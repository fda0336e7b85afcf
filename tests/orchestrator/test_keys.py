"""Virtual keys: lifecycle through the admin API, model access, and revocation, rotation and
expiry seen by every replica."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from tests.conftest import ADMIN_TOKEN
from tests.orchestrator.conftest import (
    OTHER_TOKEN,
    Admin,
    Gw,
    backend_spec,
    bearer,
    chat,
    create_key,
    openai_error,
    unique,
    wait_for_key,
)


async def test_key_lifecycle(gw: Gw, admin: Admin, http: aiohttp.ClientSession, backends) -> None:
    a = await backends("a")
    model = unique("keys")
    await admin.put(model, {"model": model, "backends": [backend_spec(a)]})
    team = unique("team")
    secret, key = await create_key(
        http,
        gw,
        team=team,
        models=[model],
        requestsPerMinute=600,
        budget={"amount": 500, "unit": "USD", "period": "24h"},
        metadata={"purpose": "test"},
    )
    assert secret.startswith("sk-azora-") and len(secret) > 40
    assert key["state"] == "active" and key["team"] == team and key["models"] == [model]
    assert key["budget"] == {"amount": 500, "unit": "USD", "period": "86400s"}
    assert secret[:13] == key["prefix"]
    await wait_for_key([gw], key["id"])

    admin_h = bearer(ADMIN_TOKEN)
    async with http.get(f"{gw.base_url}/admin/v1/keys?team={team}", headers=admin_h) as resp:
        listing = await resp.json()
    assert [k["id"] for k in listing["items"]] == [key["id"]]
    assert secret not in str(listing)  # the secret is shown once, never again
    async with http.get(f"{gw.base_url}/admin/v1/keys/{key['id']}", headers=admin_h) as resp:
        assert (await resp.json())["id"] == key["id"]

    status, body, _ = await chat(http, gw, model, headers=bearer(secret))
    assert status == 200, body

    # Rotation: the old secret stops working, the new one works, the key stays the same.
    async with http.post(
        f"{gw.base_url}/admin/v1/keys/{key['id']}/rotate", headers=admin_h
    ) as resp:
        rotated = await resp.json()
        assert resp.status == 200
    assert rotated["id"] == key["id"] and rotated["key"] != secret
    assert rotated["rotatedAt"] is not None
    deadline = time.monotonic() + 5
    while (await chat(http, gw, model, headers=bearer(secret)))[0] != 401:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert (await chat(http, gw, model, headers=bearer(rotated["key"])))[0] == 200

    async with http.post(
        f"{gw.base_url}/admin/v1/keys/{key['id']}/revoke", headers=admin_h
    ) as resp:
        assert (await resp.json())["state"] == "revoked"
    async with http.post(
        f"{gw.base_url}/admin/v1/keys/{key['id']}/revoke", headers=admin_h
    ) as resp:
        assert resp.status == 200  # idempotent
    async with http.post(
        f"{gw.base_url}/admin/v1/keys/{key['id']}/rotate", headers=admin_h
    ) as resp:
        assert resp.status == 409
    await wait_for_key([gw], key["id"], present=False)
    status, body, _ = await chat(http, gw, model, headers=bearer(rotated["key"]))
    assert status == 401 and openai_error(body)["code"] == "invalid_api_key"


async def test_model_access(gw: Gw, admin: Admin, http: aiohttp.ClientSession, backends) -> None:
    a = await backends("a")
    allowed, other = unique("allowed"), unique("other")
    await admin.put(allowed, {"model": allowed, "backends": [backend_spec(a)]})
    await admin.put(other, {"model": other, "backends": [backend_spec(a)]})
    secret, key = await create_key(http, gw, models=[allowed])
    any_secret, any_key = await create_key(http, gw)
    await wait_for_key([gw], any_key["id"])
    await wait_for_key([gw], key["id"])
    assert (await chat(http, gw, allowed, headers=bearer(secret)))[0] == 200
    status, body, _ = await chat(http, gw, other, headers=bearer(secret))
    assert status == 403
    error = openai_error(body)
    assert error["code"] == "model_not_allowed" and error["param"] == "model"
    async with http.get(gw.v1 + "/models", headers=bearer(secret)) as resp:
        listed = [m["id"] for m in (await resp.json())["data"]]
    assert listed == [allowed]
    # A key without a model list reaches every model.
    assert (await chat(http, gw, other, headers=bearer(any_secret)))[0] == 200


async def test_revocation_seen_by_every_replica_within_a_second(
    replicas: list[Gw], admin: Admin, http: aiohttp.ClientSession, backends
) -> None:
    a = await backends("a")
    model = unique("revoke")
    await admin.put(model, {"model": model, "backends": [backend_spec(a)]})
    gw = replicas[0]
    secret, key = await create_key(http, gw)
    await wait_for_key(replicas, key["id"])
    for r in replicas:
        assert (await chat(http, r, model, headers=bearer(secret)))[0] == 200

    async with http.post(
        f"{gw.base_url}/admin/v1/keys/{key['id']}/revoke", headers=bearer(ADMIN_TOKEN)
    ) as resp:
        assert resp.status == 200
    revoked_at = time.monotonic()
    refused: dict[int, float] = {}
    while len(refused) < len(replicas) and time.monotonic() - revoked_at < 3:
        for i, r in enumerate(replicas):
            if i not in refused:
                status, _, _ = await chat(http, r, model, headers=bearer(secret))
                if status == 401:
                    refused[i] = time.monotonic() - revoked_at
        await asyncio.sleep(0.005)
    assert len(refused) == len(replicas), refused
    assert max(refused.values()) < 1.0, refused


async def test_expired_key_refused(
    gw: Gw, admin: Admin, http: aiohttp.ClientSession, backends
) -> None:
    a = await backends("a")
    model = unique("expiry")
    await admin.put(model, {"model": model, "backends": [backend_spec(a)]})
    expires = datetime.now(UTC) + timedelta(seconds=1)
    secret, key = await create_key(http, gw, expiresAt=expires.isoformat())
    await wait_for_key([gw], key["id"])
    assert (await chat(http, gw, model, headers=bearer(secret)))[0] == 200
    await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.05)
    status, body, _ = await chat(http, gw, model, headers=bearer(secret))
    assert status == 401 and "expired" in openai_error(body)["message"]
    async with http.get(
        f"{gw.base_url}/admin/v1/keys/{key['id']}", headers=bearer(ADMIN_TOKEN)
    ) as resp:
        assert (await resp.json())["state"] == "expired"


async def test_bad_key_requests_are_problems(gw: Gw, http: aiohttp.ClientSession) -> None:
    admin_h = bearer(ADMIN_TOKEN)
    bad: list[dict[str, Any]] = [
        {"team": "Not A Team", "owner": "x"},
        {"team": "t", "owner": "x", "budget": {"amount": 0, "unit": "USD"}},
        {"team": "t", "owner": "x", "budget": {"amount": 5, "unit": "dollars"}},
        {"team": "t", "owner": "x", "budget": {"amount": 5, "unit": "USD", "period": "0.5s"}},
        {"team": "t", "owner": "x", "expiresAt": "2030-01-01T00:00:00"},
        {"team": "t", "owner": "x", "requestsPerMinute": 0},
        {"team": "t", "owner": "x", "unknown": 1},
        # Found by fuzzing: booleans were read as integers (true -> 1).
        {"team": "t", "owner": "x", "tokensPerMinute": True},
        {"team": "t", "owner": "x", "budget": {"amount": True, "unit": "USD"}},
    ]
    for body in bad:
        async with http.post(f"{gw.base_url}/admin/v1/keys", json=body, headers=admin_h) as resp:
            assert resp.status == 422, body
            assert resp.content_type == "application/problem+json"
    async with http.get(f"{gw.base_url}/admin/v1/keys/vk_0000000000000000", headers=admin_h) as r:
        assert r.status == 404
    async with http.post(
        f"{gw.base_url}/admin/v1/keys",
        json={"team": "t", "owner": "x"},
        headers=bearer(OTHER_TOKEN),
    ) as r:
        assert r.status == 403  # an ai:invoke token is not an admin
