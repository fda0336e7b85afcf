"""OpenAPI for the data plane.

The ``/v1/*`` endpoints are raw ASGI routes (no FastAPI validation on the hot path), so FastAPI
cannot describe them; this adds them to the generated schema by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

_BODY = {
    "type": "object",
    "required": ["model"],
    "additionalProperties": True,
    "description": "Passed to the backend untouched except `model` (a route may rename it).",
    "properties": {
        "model": {"type": "string", "description": "A route's public model name."},
        "stream": {"type": "boolean", "description": "Server-sent events, relayed unbuffered."},
        "max_tokens": {"type": "integer", "description": "Used to estimate tokens/min usage."},
    },
}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed JSON, body not an object, or `model` missing.",
        401: "No or unknown bearer token.",
        403: "The token lacks the `ai:invoke` scope.",
        404: "No route serves this model.",
        413: "Body larger than `max_request_bytes`.",
        429: "A rate limit (route or client) or the backend refused; see `Retry-After`.",
        502: "No backend could be reached.",
        503: "No healthy backend.",
        504: "The backend did not answer in time.",
    }
    return {
        str(c): {
            "description": text[c],
            "content": {"application/json": {"schema": _ERROR}},
        }
        for c in codes
    }


def _proxy(summary: str, streams: bool) -> dict[str, Any]:
    ok: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if streams:
        ok["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "post": {
            "tags": ["data plane"],
            "summary": summary,
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _BODY}},
            },
            "responses": {
                "200": {
                    "description": "The backend's answer; `x-azora-backend` names it and "
                    "`x-azora-overhead-ms` is the time the gateway added.",
                    "content": ok,
                },
                **_errors(400, 401, 403, 404, 413, 429, 502, 503, 504),
            },
        }
    }


DATA_PLANE_PATHS: dict[str, Any] = {
    "/v1/chat/completions": _proxy("OpenAI chat completions, routed", streams=True),
    "/v1/completions": _proxy("OpenAI completions, routed", streams=True),
    "/v1/embeddings": _proxy("OpenAI embeddings, routed", streams=False),
    "/v1/models": {
        "get": {
            "tags": ["data plane"],
            "summary": "The public model names of all routes (OpenAI list shape)",
            "security": [{"bearer": []}],
            "responses": {
                "200": {
                    "description": "`{object: list, data: [{id, object: model, ...}]}`",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **_errors(401, 403),
            },
        }
    },
}


def install(app: FastAPI) -> None:
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema["paths"] = {**DATA_PLANE_PATHS, **schema.get("paths", {})}
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                "type": "http",
                "scheme": "bearer",
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
