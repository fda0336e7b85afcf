"""Hot-path routes without FastAPI's per-request machinery.

Profiling the services under load showed most of a small request's CPU time in the framework
(route resolution through nested routers, dependency solving, stdlib JSON), not in the domain.
A service can put a plain Starlette route in front of its FastAPI route for the same path and
method; the helpers here make it answer exactly as the FastAPI route would:

- the body is read and parsed *before* authentication (a malformed body is a 400 even without a
  token), with orjson, falling back to the stdlib parser for what orjson refuses but JSON allows
  (integers beyond 64 bits, lone surrogates, NaN) so those still reach validation and get their
  field-level 422;
- then the bearer token and scope (401/403 problems, as ``require_scope``: both call
  :func:`azora_common.auth.authorize`);
- then the ``Idempotency-Key`` header and the body are validated together with the same
  pydantic models, and their errors raised as one ``RequestValidationError`` with FastAPI's
  locations, so the common problem handler renders them identically.

``install_fast_routes`` puts the plain routes first in the app's routing table; the FastAPI
route of the same path and method stays, with the same endpoint, for the OpenAPI document.

A :class:`ServiceApp` (what ``create_service_app`` builds) also answers its plain routes
without the framework's middleware stack: a request whose method and path match one goes
through the platform middleware (request id, metrics, body limit) to the endpoint directly,
its exceptions rendered by the app's own exception handlers, as the stack would render them.
The layers skipped (server-error, telemetry and exception middleware, exit stack, router,
route wrapper: each a call and a ``send`` closure per message) were ~10% of a small request's
CPU. Everything else (other routes, other methods on these paths: 405) takes the full stack.
"""

from __future__ import annotations

import email.message
import json
import re
from collections.abc import Sequence
from typing import Annotated, Any, TypeVar, cast

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import Field, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from azora_common.auth import authorize
from azora_common.middleware import BodyTooLarge, PlatformMiddleware

_MISSING: Any = object()
_KEY = TypeAdapter(Annotated[str, Field(min_length=1, max_length=255)])
IDEMPOTENCY_HEADER = "idempotency-key"
T = TypeVar("T")
_LONG_DIGITS = re.compile(rb"[0-9]{20}")


def _is_json(content_type: str | None) -> bool:
    # FastAPI (strict content type): JSON only for application/json or application/*+json,
    # parameters allowed; no or another content type leaves the body as raw bytes.
    if not content_type:
        return False
    if content_type == "application/json":
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


async def read_body(request: Request) -> Any:
    """The request body as FastAPI would hand it to validation (``_MISSING`` when empty)."""
    raw = await request.body()
    if not raw:
        return _MISSING
    if not _is_json(request.headers.get("content-type")):
        return raw
    # orjson turns integers beyond 64 bits into floats: a body with a 20-digit run (wherever it
    # is) takes the stdlib parser, which keeps them exact so validation names them.
    if _LONG_DIGITS.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _json_invalid(exc.pos, "JSON decode error", exc.msg, exc.doc) from exc
    except UnicodeDecodeError as exc:
        # JSON text is UTF-8 (RFC 8259); bytes that do not decode are the client's error.
        reason = f"the body is not valid UTF-8 ({exc.reason})"
        raise _json_invalid(exc.start, reason, reason, None) from exc


def _json_invalid(position: int, msg: str, error: str, doc: str | None) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "type": "json_invalid",
                "loc": ("body", position),
                "msg": msg,
                "input": {},
                "ctx": {"error": error},
            }
        ],
        body=doc,
    )


def _errors(exc: ValidationError, prefix: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{**e, "loc": (*prefix, *e["loc"])} for e in exc.errors(include_url=False)]


def validate_request(request: Request, body: Any, adapter: TypeAdapter[T]) -> tuple[T, str | None]:
    """Validate the ``Idempotency-Key`` header and the body; both errors reported together."""
    errors: list[dict[str, Any]] = []
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None:
        try:
            key = _KEY.validate_python(key)
        except ValidationError as exc:
            errors += _errors(exc, ("header", "Idempotency-Key"))
    value: Any = None
    if body is _MISSING:
        errors.append({"type": "missing", "loc": ("body",), "msg": "Field required", "input": None})
    else:
        try:
            value = adapter.validate_python(body, from_attributes=True)
        except ValidationError as exc:
            errors += _errors(exc, ("body",))
    if errors:
        raise RequestValidationError(errors, body=None if body is _MISSING else body)
    return value, key


IDEMPOTENCY_KEY_DOC = (
    "Makes the request safe to retry: same key and body replay the first response."
)


def plain_route_openapi(body_schema: str, *, idempotent: bool = True) -> dict[str, Any]:
    """The OpenAPI operation fields of a plain route's one handler (``openapi_extra``).

    A plain endpoint takes the raw request, so FastAPI cannot infer its contract from the
    signature; this is what it generates for the dependency-based one (bearer security, the
    optional ``Idempotency-Key`` header, a JSON body of the named component schema, which some
    other route or model must already put in the document's components).
    """
    operation: dict[str, Any] = {
        "security": [{"HTTPBearer": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{body_schema}"}}
            },
        },
    }
    if idempotent:
        operation["parameters"] = [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {
                    "anyOf": [
                        {"type": "string", "minLength": 1, "maxLength": 255},
                        {"type": "null"},
                    ],
                    "description": IDEMPOTENCY_KEY_DOC,
                    "title": "Idempotency-Key",
                },
                "description": IDEMPOTENCY_KEY_DOC,
            }
        ]
    return operation


class FastRoute(Route):
    """A plain route that records itself in the scope, as FastAPI's routes do, so the metrics
    middleware labels it by template without searching the routing table again."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


def install_fast_routes(app: FastAPI, routes: Sequence[FastRoute]) -> None:
    app.router.routes[0:0] = routes
    if isinstance(app, ServiceApp):
        app.fast_routes[0:0] = routes


class ServiceApp(FastAPI):
    """A FastAPI app whose plain routes (``install_fast_routes``) skip the middleware stack."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast_routes: list[FastRoute] = []

    def build_middleware_stack(self) -> ASGIApp:
        full = super().build_middleware_stack()
        if not self.fast_routes:
            return full
        platform = [m for m in self.user_middleware if cast(Any, m.cls) is PlatformMiddleware]
        # The plain routes get the same platform middleware (its own instance, same settings)
        # around a direct call of the endpoint.
        direct: ASGIApp = _Endpoint(self)
        for m in platform:
            direct = m.cls(direct, *m.args, **m.kwargs)
        return _Dispatch(self.fast_routes, direct=direct, full=full)


class _Dispatch:
    def __init__(self, routes: list[FastRoute], *, direct: ASGIApp, full: ASGIApp) -> None:
        self.routes = routes
        self.direct = direct
        self.full = full

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    await self.direct(scope, receive, send)
                    return
        await self.full(scope, receive, send)


class _Endpoint:
    """The matched plain route's endpoint; exceptions go to the app's exception handlers
    (``Exception``'s, the platform's 500 problem, included), as the full stack would send
    them. The body limit's signal is left to the platform middleware that raised it."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        route: FastRoute = scope["route"]
        try:
            response = await route.endpoint(request)
        except BodyTooLarge:
            raise
        except Exception as exc:
            handler = _handler_for(self.app, exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


def _handler_for(app: FastAPI, exc: Exception) -> Any:
    for cls in type(exc).__mro__:
        handler = app.exception_handlers.get(cls)
        if handler is not None:
            return handler
    return None


__all__ = [
    "FastRoute",
    "ServiceApp",
    "authorize",
    "install_fast_routes",
    "plain_route_openapi",
    "read_body",
    "validate_request",
]
