from __future__ import annotations

import httpx
import pytest

from tests.common.sample_app import SampleSettings, create_app
from tests.conftest import ADMIN_TOKEN
from tests.support.apps import bearer, rollback_client, running


async def test_auth_scopes(sample_db: str) -> None:
    settings = SampleSettings(
        database_url=sample_db,
        admin_token=ADMIN_TOKEN,  # type: ignore[arg-type]
        api_tokens={"reader-token-0123456789": ["sample:read"]},
        log_json=False,
    )
    async with rollback_client(create_app(settings)) as client:
        anonymous = await client.post("/v1/widgets", json={"name": "a", "size": 1})
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"

        wrong = await client.get("/v1/widgets/1", headers=bearer("not-a-token"))
        assert wrong.status_code == 401

        reader = bearer("reader-token-0123456789")
        denied = await client.post("/v1/widgets", json={"name": "a", "size": 1}, headers=reader)
        assert denied.status_code == 403
        assert denied.json()["required_scope"] == "sample:write"
        assert (await client.put("/admin/v1/config/x?value=1", headers=reader)).status_code == 403

        # The admin token holds only the admin scope.
        admin = bearer(ADMIN_TOKEN)
        assert (await client.put("/admin/v1/config/x?value=1", headers=admin)).status_code == 200
        assert (await client.get("/v1/widgets/1", headers=admin)).status_code == 403


def test_production_refuses_unsafe_tokens() -> None:
    with pytest.raises(ValueError, match="admin_token"):
        SampleSettings(environment="production")
    with pytest.raises(ValueError, match="api_tokens"):
        SampleSettings(
            environment="production",
            admin_token="a-long-enough-admin-token",  # type: ignore[arg-type]
            api_tokens={"short": ["*"]},
        )


def test_database_url_is_normalised() -> None:
    s = SampleSettings(database_url="postgresql://u@h:5/db")
    assert s.database_url == "postgresql+asyncpg://u@h:5/db"
    with pytest.raises(ValueError, match="postgresql"):
        SampleSettings(database_url="mysql://u@h/db")


async def test_principal_does_not_leak_token(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/widgets", json={"name": "a", "size": 1})
    assert resp.status_code == 201, resp.text


async def test_a_wildcard_token_is_never_admin(settings: SampleSettings) -> None:
    # Found from outside: a "*" token could PUT and DELETE on every /admin route.
    wildcard = "a-wildcard-token-of-some-length"
    app = create_app(
        settings.model_copy(
            update={"api_tokens": {wildcard: ["*"], "named-admin-token-xxxx": ["admin"]}}
        )
    )
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            refused = await client.put("/admin/v1/config/x?value=1", headers=bearer(wildcard))
            assert refused.status_code == 403
            assert refused.json()["required_scope"] == "admin"
            assert (await client.get("/v1/widgets/1", headers=bearer(wildcard))).status_code != 403
            named = await client.put(
                "/admin/v1/config/x?value=1", headers=bearer("named-admin-token-xxxx")
            )
            assert named.status_code == 200
