"""The shared OpenAPI passes say what the servers enforce, for every service alike."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Header, Query
from fastapi.openapi.utils import get_openapi

from azora_common.app import parameters_openapi


def test_optional_parameters_are_strings_never_null() -> None:
    app = FastAPI()

    @app.get("/things")
    async def things(
        after: Annotated[str | None, Query(max_length=5)] = None,
        limit: int = 10,
        key: Annotated[str | None, Header(alias="Idempotency-Key", description="d")] = None,
    ) -> None:
        return None

    doc = parameters_openapi(get_openapi(title="t", version="1", routes=app.routes))
    params = {p["name"]: p for p in doc["paths"]["/things"]["get"]["parameters"]}
    assert params["after"]["schema"] == {"type": "string", "maxLength": 5, "title": "After"}
    assert params["after"]["required"] is False
    assert params["Idempotency-Key"]["schema"]["type"] == "string"
    assert params["Idempotency-Key"]["schema"]["description"] == "d"
    assert "anyOf" not in params["Idempotency-Key"]["schema"]
    assert params["limit"]["schema"] == {"type": "integer", "default": 10, "title": "Limit"}
