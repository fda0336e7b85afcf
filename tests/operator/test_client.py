"""The admin client (``azora_operator.client``): problem documents → reason and detail, and a
5xx told apart from an unreachable service (against real HTTP servers)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from azora_operator.client import (
    AdminClient,
    ServiceError,
    ServiceUnavailable,
    _reason_from_problem,
)


def test_problem_reason_falls_back_to_the_type_slug() -> None:
    assert _reason_from_problem({"reason": "InvalidTiers", "detail": "x"}, 422) == (
        "InvalidTiers",
        "x",
    )
    reason, detail = _reason_from_problem(
        {
            "type": "https://azora.io/problems/validation-error",
            "detail": "bad",
            "errors": [{"field": "spec.x", "reason": "too big"}],
        },
        422,
    )
    assert reason == "ValidationError"
    assert "spec.x: too big" in detail


@contextlib.asynccontextmanager
async def answering(status: int, problem: dict[str, Any]) -> AsyncIterator[str]:
    """A real HTTP server on a free port that answers every request with ``status``."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(problem, status=status, content_type="application/problem+json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def refused_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on once this closes
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


OVERFLOW = {
    "type": "about:blank",
    "title": "Internal Server Error",
    "status": 500,
    "detail": "OverflowError: date value out of range",
}


async def test_a_5xx_is_a_service_error_with_its_status_and_detail() -> None:
    async with answering(500, OVERFLOW) as url, aiohttp.ClientSession() as session:
        client = AdminClient(session, url, "t", timeout=2)
        with pytest.raises(ServiceError) as err:
            await client.put("cohorts", "ns", "c", generation=1, uid="u", spec={"x": 1})
    assert (err.value.status, err.value.detail) == (500, OVERFLOW["detail"])
    assert "HTTP 500" in str(err.value) and "date value out of range" in str(err.value)


async def test_a_refused_connection_is_unavailable_not_a_service_error() -> None:
    async with aiohttp.ClientSession() as session:
        client = AdminClient(session, refused_url(), "t", timeout=2)
        with pytest.raises(ServiceUnavailable) as err:
            await client.put("cohorts", "ns", "c", generation=1, uid="u", spec={})
    assert not isinstance(err.value, ServiceError)
    assert "ClientConnectorError" in str(err.value)
