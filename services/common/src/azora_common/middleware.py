"""The platform's one ASGI middleware: request id, HTTP metrics and the body-size limit.

One layer instead of three: each pure-ASGI layer costs a call and a ``send`` closure per
message, and profiles of the services' hot paths put the three separate layers at ~15% of a
small request's CPU.

- Request id: the caller's ``X-Request-ID`` when it is sane, else a new one; echoed in the
  response, set in a contextvar for logs and outgoing calls (``azora_common.logs``).
- Metrics: ``azora_http_*`` labelled by route template, never the raw path, so the series count
  stays bounded whatever clients send. The labelled children are cached per middleware (a
  prometheus_client ``labels()`` lookup, label strings + tuple + lock, cost ~1 µs, twice per
  request) and the in-flight gauge reads a plain count (``metrics.in_flight``).
- Body limit: a declared or streamed body over the limit gets a 413 problem before the app
  buffers it.
"""

from __future__ import annotations

import time
import uuid

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from azora_common.errors import problem_body, problem_response
from azora_common.logs import REQUEST_ID_HEADER, SANE_REQUEST_ID, request_id_var
from azora_common.metrics import (
    HTTP_DURATION,
    HTTP_REQUESTS,
    SKIPPED_PATHS,
    UNMATCHED,
    in_flight,
    route_template,
)

_REQUEST_ID = REQUEST_ID_HEADER.lower().encode()

# Route templates are a finite set and unmatched paths share one label, but the method is the
# client's text: past this many (method, route, status) series a middleware stops caching, and
# further series take the uncached lookup (the same samples, only slower).
MAX_CACHED_SERIES = 1024

Series = tuple[Counter, Histogram]


class BodyTooLarge(Exception):
    """Raised by the body-limited ``receive``; the middleware answers it with a 413."""


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class PlatformMiddleware:
    def __init__(self, app: ASGIApp, *, service: str, max_body_bytes: int) -> None:
        self.app = app
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.in_flight = in_flight(service)
        self.series: dict[tuple[str, str, int], Series] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid: str | None = None
        declared_too_large = False
        for name, value in scope["headers"]:
            if name == _REQUEST_ID:
                candidate = value.decode("latin-1")
                if SANE_REQUEST_ID.match(candidate):
                    rid = candidate
            elif name == b"content-length":
                declared_too_large = value.isdigit() and int(value) > self.max_body_bytes
        if rid is None:
            rid = uuid.uuid4().hex
        token = request_id_var.set(rid)
        rid_header = (_REQUEST_ID, rid.encode())
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        seen = 0
        limit = self.max_body_bytes

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        measured = scope["path"] not in SKIPPED_PATHS
        start = time.perf_counter()
        if measured:
            self.in_flight.count += 1
        try:
            if declared_too_large:
                await self._reject(scope, send_wrapper)
            else:
                try:
                    await self.app(scope, limited_receive, send_wrapper)
                except BodyTooLarge:
                    await self._reject(scope, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            request_id_var.reset(token)
            if measured:
                self.in_flight.count -= 1
                key = (
                    scope["method"],
                    route_template(scope) if status != 404 else UNMATCHED,
                    status,
                )
                requests, duration = self.series.get(key) or self._labelled(key)
                requests.inc()
                duration.observe(elapsed)

    def _labelled(self, key: tuple[str, str, int]) -> Series:
        method, route, status = key
        series = (
            HTTP_REQUESTS.labels(self.service, method, route, str(status)),
            HTTP_DURATION.labels(self.service, method, route),
        )
        if len(self.series) < MAX_CACHED_SERIES:
            self.series[key] = series
        return series

    async def _reject(self, scope: Scope, send: Send) -> None:
        response = problem_response(
            problem_body(
                413,
                "payload-too-large",
                "Payload too large",
                f"the request body exceeds {self.max_body_bytes} bytes",
                scope["path"],
            )
        )
        await response(scope, _no_receive, send)
