"""OpenAPI of the data-plane handlers, given to their routes as ``openapi_extra``.

The handlers take the raw request (no FastAPI validation on the hot path), so FastAPI cannot
infer the body or the answers from their signatures; these fragments describe them. Errors are
one ``default`` response in the OpenAI shape: the platform's OpenAPI post-processing rewrites
every numbered 4xx/5xx response to problem+json, which the data plane does not send.
"""

from __future__ import annotations

from typing import Any

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

_WHEN = {
    400: "malformed JSON, body not an object, or `model` missing",
    401: "no, unknown, revoked or expired bearer token or virtual key",
    402: "the virtual key's budget is used up (`insufficient_quota`; remaining and reset in "
    "the message and the `x-azora-budget-*` headers)",
    403: "the token lacks the `ai:invoke` scope, or the virtual key may not use the model",
    404: "no route serves this model",
    413: "body larger than `max_request_bytes`",
    429: "a rate limit (route, client or virtual key) or the backend refused; see `Retry-After`",
    502: "no backend could be reached",
    503: "no healthy backend, or a key's limits cannot be checked (`limits_unavailable`)",
    504: "the backend did not answer in time",
}


def _errors(*codes: int) -> dict[str, Any]:
    lines = "; ".join(f"{c}: {_WHEN[c]}" for c in codes)
    return {
        "default": {
            "description": f"An error in the OpenAI shape ({lines}). A backend's own 4xx, 429 "
            "or 5xx is passed through with its body.",
            "content": {"application/json": {"schema": _ERROR}},
        }
    }


def proxy(streams: bool) -> dict[str, Any]:
    ok: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if streams:
        ok["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "security": [{"HTTPBearer": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _BODY}}},
        "responses": {
            "200": {
                "description": "The backend's answer; `x-azora-backend` names it and "
                "`x-azora-overhead-ms` is the time the gateway added.",
                "content": ok,
            },
            **_errors(400, 401, 402, 403, 404, 413, 429, 502, 503, 504),
        },
    }


MODELS: dict[str, Any] = {
    "security": [{"HTTPBearer": []}],
    "responses": {
        "200": {
            "description": "`{object: list, data: [{id, object: model, ...}]}`",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **_errors(401, 403),
    },
}


DATA_PLANE_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models")


def without_problem_answers(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop the problem+json answers the platform adds to the data plane's operations (in
    place, idempotent): their errors are the OpenAI-shaped ``default`` response."""
    for path in DATA_PLANE_PATHS:
        for operation in schema.get("paths", {}).get(path, {}).values():
            if isinstance(operation, dict):
                responses = operation.get("responses", {})
                for code in [c for c in responses if c[0] in "45"]:
                    del responses[code]
    return schema
