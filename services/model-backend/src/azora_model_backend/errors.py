"""Errors in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}``.

Every bad input is a 4xx with a stable ``code``; the handlers in ``app.py`` render them (and
FastAPI's own validation errors) once.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class BackendError(Exception):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(BackendError):
    pass


class ModelNotFound(BackendError):
    status = 404
    code = "model_not_found"


class ContextLengthExceeded(BackendError):
    code = "context_length_exceeded"


class RequestTooLarge(BackendError):
    status = 413
    code = "request_too_large"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error_response(
    status: int, message: str, *, type_: str, code: str, param: str | None = None
) -> Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return json_response(body, status)


def render(exc: BackendError) -> Response:
    return error_response(exc.status, exc.message, type_=exc.type, code=exc.code, param=exc.param)
