"""RFC 9457 problem details for every error a service returns.

Domain errors subclass :class:`ProblemError` and carry their HTTP meaning; one global handler
renders them. FastAPI's validation errors, unknown routes, wrong methods and malformed JSON are
rendered in the same shape, with the field path and the reason for each invalid field.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match, Mount

PROBLEM_BASE = "https://azora.io/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"

log = logging.getLogger("azora.errors")


class ProblemError(Exception):
    """A domain error with a stable problem ``type`` slug and HTTP status."""

    status: ClassVar[int] = 400
    type_slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        return problem_body(
            self.status, self.type_slug, self.title, self.detail, instance, self.extra
        )


class NotFound(ProblemError):
    status = 404
    type_slug = "not-found"
    title = "Not found"


class Conflict(ProblemError):
    status = 409
    type_slug = "conflict"
    title = "Conflict"


class Unprocessable(ProblemError):
    status = 422
    type_slug = "unprocessable"
    title = "Unprocessable request"


class InvalidField(ProblemError):
    """A semantic check on one field failed; ``errors`` names it like a validation error."""

    status = 422
    type_slug = "validation-error"
    title = "Request validation failed"

    def __init__(self, field: str, reason: str, **extra: Any) -> None:
        super().__init__(f"{field}: {reason}", errors=[{"field": field, "reason": reason}], **extra)


class StaleGeneration(ProblemError):
    status = 409
    type_slug = "stale-generation"
    title = "Stale generation"


class Unauthorized(ProblemError):
    status = 401
    type_slug = "unauthorized"
    title = "Authentication required"


class Forbidden(ProblemError):
    status = 403
    type_slug = "forbidden"
    title = "Insufficient scope"


def problem_body(
    status: int,
    type_slug: str,
    title: str,
    detail: str | None = None,
    instance: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": PROBLEM_BASE + type_slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    if extra:
        body.update(extra)
    return body


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, default=str),
        status_code=int(body["status"]),
        media_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    # ("body", "postings", 0, "amount") -> "postings[0].amount"; the leading source is kept for
    # query/path/header parameters because the name alone would be ambiguous.
    parts = list(loc)
    source = parts.pop(0) if parts and parts[0] in {"body", "query", "path", "header"} else None
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    if source and source != "body":
        return f"{source}.{out}" if out else source
    return out or "body"


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors():
        item: dict[str, Any] = {
            "field": _field_path(err.get("loc", ())),
            "reason": err.get("msg", ""),
        }
        if err.get("type"):
            item["code"] = err["type"]
        errors.append(item)
    return errors


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return problem_response(exc.to_problem(request.url.path), headers)


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(exc)
    malformed = any(e.get("code") == "json_invalid" for e in errors)
    if malformed:
        body = problem_body(
            400,
            "malformed-json",
            "Malformed JSON body",
            errors[0]["reason"],
            request.url.path,
            {"errors": errors},
        )
    else:
        summary = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5])
        body = problem_body(
            422,
            "validation-error",
            "Request validation failed",
            summary,
            request.url.path,
            {"errors": errors},
        )
    return problem_response(body)


_HTTP_SLUGS = {
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on the request's path. Starlette answers 405 from the
    first route whose path matches and lists only that route's methods in ``Allow``; a path
    served by several routes (``GET`` and ``POST /v1/transactions``) needs all of them. Each
    method is tried against the routing table's public ``matches`` (FastAPI nests included
    routers, so the table's entries are not the routes themselves); only on a 405."""
    app = request.scope.get("app")
    routes = [
        r for r in getattr(getattr(app, "router", None), "routes", []) if not isinstance(r, Mount)
    ]
    return [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    ]


# FastAPI's own answer when a JSON body does not decode (bytes that are not UTF-8).
_FASTAPI_BODY_ERROR = "There was an error parsing the body"


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_ERROR:
        # The same problem as fastpath's read_body gives for the same bytes.
        reason = "the body is not valid UTF-8 JSON"
        return problem_response(
            problem_body(
                400,
                "malformed-json",
                "Malformed JSON body",
                reason,
                request.url.path,
                {"errors": [{"field": "body", "reason": reason, "code": "json_invalid"}]},
            )
        )
    slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else None
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route for {request.method} {request.url.path}"
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
        if detail == "Method Not Allowed":
            detail = f"{request.method} is not allowed on {request.url.path}"
            if allowed:
                detail += f" (allowed: {', '.join(allowed)})"
    return problem_response(
        problem_body(exc.status_code, slug, title, detail, request.url.path), headers or None
    )


def _database_input_error(exc: BaseException) -> str | None:
    """The message of a PostgreSQL "invalid input" error (SQLSTATE class 22) in the chain."""
    seen: BaseException | None = exc
    while seen is not None:
        sqlstate = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith("22"):
            return str(getattr(seen, "message", None) or seen).splitlines()[0]
        seen = seen.__cause__ or getattr(seen, "orig", None) or seen.__context__
        if seen is exc:
            break
    return None


# Errors that mean the database connection is gone (PostgreSQL restarted or unreachable), not
# that this request is wrong: a pooled connection that died while idle fails its next request
# (the pool has no pre-ping: a round trip per checkout) and the pool then reconnects.
_CONNECTION_LOST = (
    asyncpg.InterfaceError,  # "connection is closed"
    asyncpg.PostgresConnectionError,  # ConnectionDoesNotExistError, CannotConnectNowError ...
    asyncpg.CannotConnectNowError,  # "the database system is starting up / shutting down"
    asyncpg.AdminShutdownError,  # "terminating connection due to administrator command"
    ConnectionError,  # refused or reset while connecting
)


def database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) says the database connection was lost."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _CONNECTION_LOST):
            return True
        current = current.__cause__ or current.__context__
    return False


def _unavailable(request: Request) -> Response:
    # 503 with Retry-After: the request did not commit (its transaction died with the
    # connection), so a client may retry it, with the same Idempotency-Key for a write.
    log.warning("database unavailable on %s %s", request.method, request.url.path)
    return problem_response(
        problem_body(
            503,
            "database-unavailable",
            "Database unavailable",
            "the database connection was lost; retry shortly",
            request.url.path,
        ),
        headers={"Retry-After": "1"},
    )


async def _on_database_error(request: Request, exc: Exception) -> Response:
    if database_unavailable(exc):
        return _unavailable(request)
    # Input the database refuses (a NUL byte in text, a number out of range) is the client's
    # error; the request's transaction is rolled back by the session dependency.
    reason = _database_input_error(exc)
    if reason is not None:
        return problem_response(
            problem_body(422, "invalid-input", "Invalid input", reason, request.url.path)
        )
    return await _on_unhandled(request, exc)


async def _on_unhandled(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        problem_body(500, "internal-error", "Internal server error", None, request.url.path)
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(DBAPIError, _on_database_error)
    # Hot paths use the asyncpg driver directly: its errors arrive without SQLAlchemy's wrapper.
    app.add_exception_handler(asyncpg.PostgresError, _on_database_error)
    app.add_exception_handler(asyncpg.InterfaceError, _on_database_error)
    app.add_exception_handler(ConnectionError, _on_database_error)
    app.add_exception_handler(Exception, _on_unhandled)


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {
                    "field": {"type": "string"},
                    "reason": {"type": "string"},
                    "code": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}


def problem_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Make the OpenAPI document say what the service really sends for errors."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Problem"] = PROBLEM_SCHEMA
    problem = {
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    }
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for code in list(responses):
                if code.startswith(("4", "5")):
                    responses[code] = {
                        "description": responses[code].get("description", "Problem"),
                        **problem,
                    }
            if "400" not in responses and _takes_json(operation):
                # Every JSON body goes through the same parser (FastAPI's or fastpath's
                # read_body): a body that is not JSON (or not UTF-8) is a 400 malformed-json.
                _insert_response(responses, "400", {"description": MALFORMED_JSON, **problem})
            responses.setdefault(
                "default", {"description": "Error (application/problem+json)", **problem}
            )
    return schema


MALFORMED_JSON = "Malformed JSON body: not JSON or not UTF-8 (problem+json, type malformed-json)"


def _takes_json(operation: dict[str, Any]) -> bool:
    content = operation.get("requestBody", {}).get("content", {})
    return any(t == "application/json" or t.endswith("+json") for t in content)


def _insert_response(responses: dict[str, Any], code: str, response: dict[str, Any]) -> None:
    """Add ``code`` in status order (before the first higher status, ``default`` last)."""
    items = list(responses.items())
    at = next((i for i, (c, _) in enumerate(items) if c == "default" or c > code), len(items))
    items.insert(at, (code, response))
    responses.clear()
    responses.update(items)
