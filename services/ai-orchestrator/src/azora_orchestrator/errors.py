"""Domain errors of the admin API (problem+json) and the OpenAI error shape of the data plane."""

from __future__ import annotations

from typing import Any

import orjson

from azora_common.errors import ProblemError


class RouteRejected(ProblemError):
    """A spec the service cannot accept; ``reason`` is CamelCase for the operator's condition."""

    status = 422
    type_slug = "route-rejected"
    title = "Route spec rejected"

    def __init__(self, reason: str, detail: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(detail, reason=reason, errors=errors)


def openai_error_body(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


# Status -> OpenAI error type, as the official client maps them to exception classes.
ERROR_TYPES = {
    400: "invalid_request_error",
    402: "insufficient_quota",  # as OpenAI's own quota errors
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
}
