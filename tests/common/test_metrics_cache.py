"""The platform middleware caches its labelled metric children: what it exports must be what the
uncached ``labels()`` lookup exports, and the cache stays bounded whatever methods clients send."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from azora_common import middleware
from azora_common.errors import NotFound, install_problem_handlers
from azora_common.middleware import PlatformMiddleware

IN_FLIGHT = "azora_http_requests_in_flight"


def build(service: str) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    seen_in_flight: list[float | None] = []

    @app.api_route("/v1/things/{thing_id}", methods=["GET", "DELETE"])
    async def get_thing(thing_id: int) -> dict[str, int]:
        seen_in_flight.append(REGISTRY.get_sample_value(IN_FLIGHT, {"service": service}))
        if thing_id == 0:
            raise NotFound("no thing 0")  # a matched route's 404 is labelled unmatched too
        if thing_id == 13:
            raise RuntimeError("unlucky")
        return {"id": thing_id}

    async def plain(request: Request) -> Response:  # not recorded in the scope: found by search
        return PlainTextResponse("plain")

    app.router.routes.append(Route("/v1/plain/{name}", plain, methods=["GET", "POST"]))
    app.state.seen_in_flight = seen_in_flight
    app.add_middleware(PlatformMiddleware, service=service, max_body_bytes=1000)
    return app


def platform_of(app: FastAPI) -> PlatformMiddleware:
    layer = app.middleware_stack  # built by the first request
    while not isinstance(layer, PlatformMiddleware):
        layer = layer.app  # type: ignore[union-attr]
    return layer


async def drive(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for _ in range(3):
            for method, path in [
                ("GET", "/v1/things/1"),
                ("GET", "/v1/things/2"),
                ("DELETE", "/v1/things/1"),
                ("PUT", "/v1/things/1"),  # 405, labelled by template
                ("GET", "/v1/things/0"),  # 404 from the route
                ("GET", "/v1/things/x"),  # 422
                ("GET", "/v1/things/13"),  # 500
                ("GET", "/v1/plain/a"),
                ("POST", "/v1/plain/b"),
                ("GET", "/v1/nowhere/42"),  # 404, unmatched
                ("BREW", "/v1/nowhere"),
                ("GET", "/healthz"),  # skipped
            ]:
                await client.request(method, path)
        too_large = await client.post("/v1/plain/c", content=b"x" * 2000)
        assert too_large.status_code == 413


def exported(service: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The service's azora_http_* samples, the service label and timestamps left out; durations
    only as counts (their sums and buckets are timings)."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("azora_http_"):
            continue
        for s in family.samples:
            if s.labels.get("service") != service or s.name.endswith("_created"):
                continue
            if s.name.endswith(("_sum", "_bucket")):
                continue
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "service"))
            samples[(s.name, labels)] = s.value
    return samples


async def test_cached_series_export_what_the_uncached_lookup_exports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cached = build("metrics-cache-a")
    await drive(cached)
    assert platform_of(cached).series  # the cache was used
    monkeypatch.setattr(middleware, "MAX_CACHED_SERIES", 0)
    reference = build("metrics-cache-b")
    await drive(reference)
    assert not platform_of(reference).series
    assert exported("metrics-cache-a") == exported("metrics-cache-b")

    counts = exported("metrics-cache-a")

    def requests(method: str, route: str, status: str) -> float:
        labels = (("method", method), ("route", route), ("status", status))
        return counts[("azora_http_requests_total", labels)]

    assert requests("GET", "/v1/things/{thing_id}", "200") == 6
    assert requests("DELETE", "/v1/things/{thing_id}", "200") == 3
    assert requests("PUT", "/v1/things/{thing_id}", "405") == 3
    assert requests("GET", "<unmatched>", "404") == 6
    assert requests("GET", "/v1/things/{thing_id}", "422") == 3
    assert requests("GET", "/v1/things/{thing_id}", "500") == 3
    assert requests("GET", "/v1/plain/{name}", "200") == 3
    assert requests("POST", "/v1/plain/{name}", "200") == 3
    assert requests("POST", "/v1/plain/{name}", "413") == 1
    assert requests("BREW", "<unmatched>", "404") == 3
    duration = (("method", "GET"), ("route", "/v1/things/{thing_id}"))
    assert counts[("azora_http_request_duration_seconds_count", duration)] == 12
    assert counts[(IN_FLIGHT, ())] == 0
    assert not any("/healthz" in str(key) for key in counts)


async def test_in_flight_counts_the_requests_being_handled() -> None:
    first = build("metrics-cache-in-flight")
    transport = httpx.ASGITransport(app=first)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get("/v1/things/1")
    assert REGISTRY.get_sample_value(IN_FLIGHT, {"service": "metrics-cache-in-flight"}) == 0
    # The count is shared by every middleware of a service (ServiceApp builds two).
    second = build("metrics-cache-in-flight")
    transport = httpx.ASGITransport(app=second)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get("/v1/things/2")
    assert platform_of(second).in_flight is platform_of(first).in_flight
    assert first.state.seen_in_flight == [1.0]
    assert second.state.seen_in_flight == [1.0]
    assert REGISTRY.get_sample_value(IN_FLIGHT, {"service": "metrics-cache-in-flight"}) == 0


async def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(middleware, "MAX_CACHED_SERIES", 4)
    app = build("metrics-cache-bounded")
    transport = httpx.ASGITransport(app=app)
    methods = [f"M{i}" for i in range(10)]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for _ in range(2):
            for method in methods:
                assert (await client.request(method, "/v1/nowhere")).status_code == 404
    assert len(platform_of(app).series) == 4
    for method in methods:  # cached or not, every series is counted
        labels = {"service": "metrics-cache-bounded", "method": method, "route": "<unmatched>"}
        assert REGISTRY.get_sample_value("azora_http_requests_total", {**labels, "status": "404"})
        assert REGISTRY.get_sample_value("azora_http_request_duration_seconds_count", labels) == 2
