"""A minimal service built on azora_common, used to test each shared piece."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from azora_common.app import create_service_app
from azora_common.auth import AdminDep, Principal, require_scope
from azora_common.db import SessionDep, make_metadata
from azora_common.errors import Conflict, NotFound
from azora_common.fastpath import (
    FastRoute,
    authorize,
    install_fast_routes,
    read_body,
    validate_request,
)
from azora_common.idempotency import IdempotencyKeyDep, run_idempotent
from azora_common.listener import RevisionListener, notify
from azora_common.logs import current_request_id
from azora_common.settings import ServiceSettings

MIGRATIONS = Path(__file__).parent / "migrations"
metadata = make_metadata()
widgets = sa.Table(
    "widgets",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
)
config = sa.Table(
    "config",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


class SampleSettings(ServiceSettings):
    service_name: str = "sample"


class WidgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=50)
    size: int = Field(ge=1, le=1000)
    tags: list[str] = Field(default_factory=list)


WriteDep = Annotated[Principal, require_scope("sample:write")]
ReadDep = Annotated[Principal, require_scope("sample:read")]

router = APIRouter()


@router.post("/v1/widgets", status_code=201)
async def create_widget(
    body: WidgetIn, session: SessionDep, _: WriteDep, key: IdempotencyKeyDep = None
) -> Any:
    async def handler() -> tuple[int, Any]:
        if body.name == "taken":
            raise Conflict("name is taken")
        new_id = (
            await session.execute(
                sa.insert(widgets).values(name=body.name, size=body.size).returning(widgets.c.id)
            )
        ).scalar_one()
        if body.name == "half-written":  # a refusal after a write: the write must not stay
            raise Conflict("refused after a write")
        if body.name == "boom":  # a server error after a write
            raise RuntimeError("an unexpected failure")
        return 201, {"id": new_id, "name": body.name, "size": body.size}

    return await run_idempotent(
        session,
        key=key,
        scope="POST /v1/widgets",
        request_body=body.model_dump(mode="json"),
        handler=handler,
        instance="/v1/widgets",
    )


@router.post("/v1/raw-widgets", status_code=201)
async def create_widget_raw(body: WidgetIn, session: SessionDep, _: WriteDep) -> Any:
    # Through the asyncpg driver itself, as the services' hot paths do: its errors reach the
    # handlers unwrapped (no SQLAlchemy DBAPIError around them).
    conn = await session.connection()
    raw = (await conn.get_raw_connection()).driver_connection
    new_id = await raw.fetchval(
        "INSERT INTO widgets (name, size) VALUES ($1, $2) RETURNING id", body.name, body.size
    )
    return {"id": new_id, "name": body.name, "size": body.size}


@router.get("/v1/widgets/{widget_id}")
async def get_widget(
    widget_id: Annotated[int, PathParam(ge=1)], session: SessionDep, _: ReadDep
) -> dict[str, Any]:
    row = (await session.execute(sa.select(widgets).where(widgets.c.id == widget_id))).first()
    if row is None:
        raise NotFound(f"widget {widget_id} does not exist")
    return {"id": row.id, "name": row.name, "size": row.size, "request_id": current_request_id()}


@router.delete("/v1/widgets/{widget_id}", status_code=204)
async def delete_widget(
    widget_id: Annotated[int, PathParam(ge=1)], session: SessionDep, _: WriteDep
) -> Response:
    # A second route on the path of get_widget: a 405 there must list both routes' methods.
    await session.execute(sa.delete(widgets).where(widgets.c.id == widget_id))
    return Response(status_code=204)


@router.put("/admin/v1/config/{name}")
async def put_config(name: str, value: str, session: SessionDep, _: AdminDep) -> dict[str, str]:
    await session.execute(
        sa.dialects.postgresql.insert(config)
        .values(name=name, value=value)
        .on_conflict_do_update(index_elements=["name"], set_={"value": value})
    )
    await notify(session, "sample_config")
    return {"name": name, "value": value}


WIDGET_IN: TypeAdapter[WidgetIn] = TypeAdapter(WidgetIn)


async def echo_widget_fast(request: Request) -> Response:
    """A plain route (fastpath.py): answered without the framework's middleware stack."""
    raw = await read_body(request)
    authorize(request, "sample:write")
    body, _ = validate_request(request, raw, WIDGET_IN)
    if body.name == "taken":
        raise Conflict("name is taken")
    if body.name == "boom":
        raise RuntimeError("an unexpected failure")
    return JSONResponse({"name": body.name, "size": body.size}, status_code=201)


def create_app(settings: SampleSettings) -> FastAPI:
    snapshot: dict[str, dict[str, str]] = {"config": {}}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def reload() -> None:
            async with app.state.db.engine.connect() as conn:
                rows = (await conn.execute(sa.select(config))).all()
            snapshot["config"] = {r.name: r.value for r in rows}  # one assignment: atomic swap

        listener = RevisionListener(settings.database_url, "sample_config", reload)
        await listener.start()
        app.state.listener = listener
        app.state.snapshot = snapshot
        try:
            yield
        finally:
            await listener.stop()

    app = create_service_app(
        settings=settings,
        title="Sample",
        version="0.0.1",
        description="azora_common test app",
        migrations=MIGRATIONS,
        routers=[router],
        lifespan=lifespan,
    )
    install_fast_routes(app, [FastRoute("/v1/fast-widgets", echo_widget_fast, methods=["POST"])])
    return app
