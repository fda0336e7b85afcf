"""A backend that fails every request is ejected whatever the failure (issue #16), and a route
is only ready once a backend has answered (issue #13). Real servers, real sockets."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from azora_common.admin_store import ConfigPut
from azora_orchestrator import repository
from tests.orchestrator.conftest import Admin, Gw, backend_spec, chat, unique


async def _until(predicate: Any, bound_s: float = 15) -> None:
    # A generous bound so a broken path fails instead of hanging; not a speed check.
    async with asyncio.timeout(bound_s):
        while not await predicate():
            await asyncio.sleep(0.05)


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _one_backend(model: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "backends": [{"name": "only", "url": url}],
        "retry": {"attempts": 1},
        "health": {"consecutiveFailures": 3, "baseEjection": "30s"},
        **extra,
    }


async def _fails_until_ejected(
    http: aiohttp.ClientSession, gw: Gw, admin: Admin, key: str, model: str, failed: set[int]
) -> None:
    for i in range(3):
        status, body, _ = await chat(http, gw, model)
        assert status in failed, body
        st = await admin.status(key)
        (b,) = st["backends"]
        if i < 2:
            assert b["consecutive_failures"] == i + 1
            assert b["health"] != "ejected"
    (b,) = st["backends"]
    assert b["health"] == "ejected"
    assert b["ejected_until"] is not None
    assert b["effective_weight"] == 0
    assert b["error_rate"] > 0
    assert (st["healthy"], st["ejected"], st["ready"]) == (0, 1, False)
    # Ejected: the gateway stops sending it traffic and says so at once.
    status, body, _ = await chat(http, gw, model)
    assert status == 503
    assert body["error"]["code"] == "no_backend_available"


async def test_a_backend_answering_500_is_ejected(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    bad = await backends("bad")
    bad.status = 500
    model = unique("fail500")
    await admin.put(model, _one_backend(model, bad.url))
    await _fails_until_ejected(http, gw, admin, f"test/{model}", model, {500})
    assert bad.hits == 3


@pytest.mark.parametrize("stream", [False, True])
async def test_a_backend_closing_the_connection_is_ejected(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends, stream: bool
) -> None:
    bad = await backends("reset")
    bad.mode = "reset"
    model = unique("reset")
    await admin.put(model, _one_backend(model, bad.url))
    key = f"test/{model}"
    for _ in range(3):
        status, body, _ = await chat(http, gw, model, stream=stream)
        assert status == 502, body
        assert body["error"]["code"] == "connect_error"
    st = await admin.status(key)
    assert st["backends"][0]["health"] == "ejected"
    assert (st["healthy"], st["ready"]) == (0, False)
    assert bad.hits == 3


async def test_an_unreachable_port_is_ejected_and_never_ready(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin
) -> None:
    model = unique("refused")
    await admin.put(model, _one_backend(model, f"http://127.0.0.1:{_closed_port()}/v1"))
    key = f"test/{model}"
    st = await admin.status(key)
    # Never answered: unknown, not healthy, and the route is not ready.
    assert st["backends"][0]["health"] == "unknown"
    assert (st["healthy"], st["unknown"], st["total"], st["ready"]) == (0, 1, 1, False)
    await _fails_until_ejected(http, gw, admin, key, model, {502})


async def test_an_invalid_url_stored_by_an_earlier_release_is_ejected_not_a_500(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin
) -> None:
    # Today's validation refuses port 99999 (test_admin); a row an earlier release accepted
    # still loads, and its tries fail: each is a recorded failure (502), never a 500.
    model = unique("port99999")
    key = f"test/{model}"
    spec = _one_backend(model, "http://127.0.0.1:99999/v1")

    async def store() -> int:
        async with gw.app.state.db.sessionmaker() as session, session.begin():
            put = ConfigPut(generation=1, uid=f"uid-{model}", spec=spec)
            await repository.ROUTES.lock(session, "test", model)
            written = await repository.ROUTES.write(
                session, "test", model, put, spec, model=model, updated_at=datetime.now(UTC)
            )
            await repository.ROUTES.publish(session, str(written.revision))
            return int(written.revision)

    revision = await gw.server.arun(store())
    admin.created.append(key)
    await admin.wait_live(revision)
    await _fails_until_ejected(http, gw, admin, key, model, {502})


async def test_a_route_is_ready_once_a_backend_answered_the_default_probe(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    """No activeCheck in the spec: the default probe (GET <url>/models) runs at once."""
    up, down = await backends("up"), await backends("down")
    down.health_status = 404  # a server without /models: an answer all the same
    model = unique("probe")
    key = f"test/{model}"
    dead = f"http://127.0.0.1:{_closed_port()}/v1"
    await admin.put(
        model,
        {
            "model": model,
            "backends": [backend_spec(up), backend_spec(down), {"name": "dead", "url": dead}],
        },
    )

    async def probed() -> bool:
        st = await admin.status(key)
        return bool(st["healthy"] == 2)

    await _until(probed, bound_s=5)  # within one check round, without any request
    assert up.health_hits >= 1
    assert down.health_hits >= 1
    assert up.hits == down.hits == 0
    st = await admin.status(key)
    health = {b["name"]: b["health"] for b in st["backends"]}
    assert health == {"up": "healthy", "down": "healthy", "dead": "unknown"}
    assert (st["healthy"], st["unknown"], st["ready"]) == (2, 1, True)


async def test_configured_check_failing_makes_the_route_not_ready(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    a = await backends("a")
    a.health_status = 503
    model = unique("notready")
    key = f"test/{model}"
    await admin.put(
        model,
        {
            "model": model,
            "backends": [backend_spec(a)],
            "health": {"activeCheck": {"path": "/models", "interval": "100ms"}},
        },
    )

    async def unhealthy() -> bool:
        st = await admin.status(key)
        return bool(st["unhealthy"] == 1)

    await _until(unhealthy)
    st = await admin.status(key)
    assert (st["healthy"], st["ready"], st["backends"][0]["health"]) == (0, False, "unhealthy")
    a.health_status = 200

    async def ready() -> bool:
        return bool((await admin.status(key))["ready"])

    await _until(ready)
    status, _, _ = await chat(http, gw, model)
    assert status == 200
