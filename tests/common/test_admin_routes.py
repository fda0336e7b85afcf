"""The admin routes every kind of configuration gets from azora_common.admin_routes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Path
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession

from azora_common.admin_routes import AdminKind, admin_routes
from azora_common.admin_store import ConfigPut, ConfigWritten
from azora_common.app import create_service_app
from azora_common.errors import NotFound
from tests.common.sample_app import MIGRATIONS, SampleSettings
from tests.conftest import ADMIN_TOKEN, API_TOKEN
from tests.support.apps import bearer, rollback_client

Things = dict[str, ConfigPut]
Key = Annotated[str, Path(pattern=r"^[a-z]+$", max_length=8)]


class ThingPut(ConfigPut):
    uid: str = Field(min_length=1)


async def put(things: Things, _: AsyncSession, ns: str, name: str, body: ThingPut) -> ConfigWritten:
    things[f"{ns}/{name}"] = body
    return ConfigWritten(revision=len(things), generation=body.generation)


async def delete(things: Things, _: AsyncSession, ns: str, name: str) -> None:
    things.pop(f"{ns}/{name}", None)


async def listing(things: Things, _: AsyncSession) -> list[dict[str, Any]]:
    return [{"key": key, "generation": put.generation} for key, put in sorted(things.items())]


async def status(things: Things, _: AsyncSession, ns: str, name: str) -> dict[str, Any]:
    if f"{ns}/{name}" not in things:
        raise NotFound(f"thing {ns}/{name} does not exist")
    return {"generation": things[f"{ns}/{name}"].generation}


def thing_app(settings: SampleSettings) -> FastAPI:
    things: Things = {}
    kind = AdminKind(
        plural="things",
        noun="thing",
        nouns="things",
        context=lambda _: things,
        put=put,
        delete=delete,
        listing=listing,
        status=status,
        body=ThingPut,
        namespace_param=Key,
        name_param=Key,
        docs={"delete": {"summary": "Remove a thing"}},
    )
    return create_service_app(
        settings=settings,
        title="Things",
        version="0.0.1",
        description="admin routes test app",
        migrations=MIGRATIONS,
        routers=[admin_routes(kind)],
    )


def test_operations_are_named_after_the_kind(settings: SampleSettings) -> None:
    paths = thing_app(settings).openapi()["paths"]
    one = paths["/admin/v1/things/{namespace}/{name}"]
    assert one["put"]["operationId"] == "put_thing_admin_v1_things__namespace___name__put"
    assert one["put"]["summary"] == "Put Thing"
    assert one["put"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ThingPut"
    }
    assert one["delete"]["summary"] == "Remove a thing"
    assert "204" in one["delete"]["responses"]
    assert paths["/admin/v1/things"]["get"]["operationId"] == "list_things_admin_v1_things_get"
    status = paths["/admin/v1/things/{namespace}/{name}/status"]["get"]
    assert status["operationId"] == "thing_status_admin_v1_things__namespace___name__status_get"
    admin = [op for path, ops in paths.items() if "things" in path for op in ops.values()]
    assert len(admin) == 4
    assert all(op["tags"] == ["admin"] for op in admin)


async def test_the_four_routes(settings: SampleSettings) -> None:
    async with rollback_client(thing_app(settings), bearer(ADMIN_TOKEN)) as client:
        body = {"generation": 3, "uid": "u1", "spec": {}}
        put = await client.put("/admin/v1/things/ns/a", json=body)
        assert put.status_code == 200, put.text
        assert put.json() == {"revision": 1, "generation": 3}
        listed = await client.get("/admin/v1/things")
        assert listed.json() == {"items": [{"key": "ns/a", "generation": 3}]}
        assert (await client.get("/admin/v1/things/ns/a/status")).json() == {"generation": 3}

        deleted = await client.delete("/admin/v1/things/ns/a")
        assert (deleted.status_code, deleted.content) == (204, b"")
        assert (await client.delete("/admin/v1/things/ns/a")).status_code == 204
        missing = await client.get("/admin/v1/things/ns/a/status")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"

        # The kind's body model and path rules are the ones enforced.
        no_uid = await client.put("/admin/v1/things/ns/a", json={"generation": 1, "spec": {}})
        assert no_uid.status_code == 422
        assert (await client.put("/admin/v1/things/NS/a", json=body)).status_code == 422


async def test_only_the_admin_scope_may_call_them(settings: SampleSettings) -> None:
    async with rollback_client(thing_app(settings)) as client:
        assert (await client.get("/admin/v1/things")).status_code == 401
        body = {"generation": 1, "uid": "u1", "spec": {}}
        denied = await client.put("/admin/v1/things/ns/a", json=body, headers=bearer(API_TOKEN))
        assert denied.status_code == 403
        assert denied.json()["required_scope"] == "admin"
