"""The orchestrator under test, served over real HTTP, with fake backends.

The gateway (uvicorn) and every fake backend run on one event loop in a background thread, so
tests may be async (aiohttp client on the test loop) or sync (the official ``openai`` client,
schemathesis) without blocking the servers they talk to.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest
import uvicorn
from fastapi import FastAPI

from azora_orchestrator import metrics
from azora_orchestrator.app import MIGRATIONS, create_app
from azora_orchestrator.gateway import Gateway
from azora_orchestrator.settings import OrchestratorSettings
from tests.conftest import ADMIN_TOKEN, API_TOKEN, migrated_database
from tests.orchestrator.fakes import FakeBackend
from tests.support.pg import PostgresServer

T = TypeVar("T")

# A second client key with the invoke scope (per-client limits) and one without it.
OTHER_TOKEN = "test-other-token-0123456789ab"
READ_ONLY_TOKEN = "test-readonly-token-012345678"


class ServerThread:
    """An event loop in a daemon thread; coroutines are submitted to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Gw:
    base_url: str
    app: FastAPI
    gateway: Gateway
    server: ServerThread

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"


@pytest.fixture(scope="session")
def orch_db(pg: PostgresServer) -> str:
    return migrated_database(pg, "azora_test_orchestrator", MIGRATIONS)


@pytest.fixture(scope="session")
def server_thread() -> Iterator[ServerThread]:
    thread = ServerThread()
    yield thread
    thread.close()


def gateway_settings(orch_db: str, **extra: Any) -> OrchestratorSettings:
    values: dict[str, Any] = {
        "database_url": orch_db,
        "admin_token": ADMIN_TOKEN,
        "api_tokens": {
            API_TOKEN: ["*"],
            OTHER_TOKEN: ["ai:invoke"],
            READ_ONLY_TOKEN: ["ai:read"],
        },
        "log_json": False,
        "log_level": "WARNING",
        "slow_start_s": 0.5,
        "max_retry_wait_s": 3.0,
        "max_request_bytes": 64 * 1024,
        "failure_penalty_s": 1.0,
        **extra,
    }
    return OrchestratorSettings(**values)


class Served:
    """One gateway app served by uvicorn on the server thread."""

    def __init__(self, settings: OrchestratorSettings, thread: ServerThread) -> None:
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            lifespan="on",
            log_config=None,
            log_level="warning",
            access_log=False,
            http="httptools",
            loop="asyncio",
        )
        self.server = uvicorn.Server(config)
        # uvicorn installs no signal handlers outside the main thread; stopped via should_exit.
        self.serving = asyncio.run_coroutine_threadsafe(self.server.serve(), thread.loop)
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.gw = Gw(f"http://127.0.0.1:{port}", self.app, self.app.state.gateway, thread)

    def stop(self) -> None:
        self.server.should_exit = True
        self.serving.result(20)


@pytest.fixture(scope="session")
def gw(orch_db: str, server_thread: ServerThread) -> Iterator[Gw]:
    served = Served(gateway_settings(orch_db), server_thread)
    yield served.gw
    served.stop()


_names = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}-{int(time.time() * 1000) % 100000}"


@pytest.fixture
async def backends(gw: Gw) -> AsyncIterator[Callable[[str], Awaitable[FakeBackend]]]:
    started: list[FakeBackend] = []

    async def make(name: str) -> FakeBackend:
        backend = FakeBackend(name)
        await gw.server.arun(backend.start())
        started.append(backend)
        return backend

    yield make
    for backend in started:
        await gw.server.arun(backend.stop())


def openai_error(body: dict[str, object]) -> dict[str, object]:
    """The ``error`` object of an OpenAI-shaped error body, checked for its four fields."""
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "param", "code"}
    return error


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64), headers=bearer(API_TOKEN)
    ) as session:
        yield session


class Admin:
    """Admin API calls, waiting until a change is live in the gateway's route table."""

    def __init__(self, gw: Gw, http: aiohttp.ClientSession) -> None:
        self.gw = gw
        self.http = http
        self.generations: dict[str, int] = {}
        self.created: list[str] = []

    def headers(self) -> dict[str, str]:
        return bearer(ADMIN_TOKEN)

    async def put(self, name: str, spec: dict[str, Any], namespace: str = "test") -> int:
        key = f"{namespace}/{name}"
        generation = self.generations.get(key, 0) + 1
        self.generations[key] = generation
        async with self.http.put(
            f"{self.gw.base_url}/admin/v1/routes/{key}",
            json={"generation": generation, "uid": f"uid-{name}", "spec": spec},
            headers=self.headers(),
        ) as resp:
            body = await resp.json()
            assert resp.status == 200, body
        if key not in self.created:
            self.created.append(key)
        await self.wait_live(int(body["revision"]))
        return int(body["revision"])

    async def wait_live(self, revision: int) -> None:
        # Propagation is a NOTIFY away; the bound is generous and not a speed assertion.
        deadline = time.monotonic() + 10
        while self.gw.gateway.table.revision < revision:
            assert time.monotonic() < deadline, "route change never became live"
            await asyncio.sleep(0.01)

    async def wait_live_on(self, gw: Gw, model: str) -> None:
        """Until another replica has loaded the route serving ``model``."""
        deadline = time.monotonic() + 10
        while model not in gw.gateway.table.by_model:
            assert time.monotonic() < deadline, "route never became live on the replica"
            await asyncio.sleep(0.01)

    async def delete(self, key: str) -> None:
        async with self.http.delete(
            f"{self.gw.base_url}/admin/v1/routes/{key}", headers=self.headers()
        ) as resp:
            assert resp.status == 204

    async def status(self, key: str) -> dict[str, Any]:
        async with self.http.get(
            f"{self.gw.base_url}/admin/v1/routes/{key}/status", headers=self.headers()
        ) as resp:
            assert resp.status == 200
            result: dict[str, Any] = await resp.json()
            return result


@pytest.fixture
async def admin(gw: Gw, http: aiohttp.ClientSession) -> AsyncIterator[Admin]:
    a = Admin(gw, http)
    yield a
    for key in a.created:
        await a.delete(key)


def backend_spec(b: FakeBackend, **extra: Any) -> dict[str, Any]:
    return {"name": b.name, "url": b.url, **extra}


async def chat(
    http: aiohttp.ClientSession,
    gw: Gw,
    model: str,
    *,
    stream: bool = False,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    if stream:
        body["stream"] = True
    async with http.post(gw.v1 + "/chat/completions", json=body, headers=headers) as resp:
        raw = await resp.read()
        if stream and resp.status == 200:
            return resp.status, {"raw": raw.decode()}, dict(resp.headers)
        return resp.status, orjson.loads(raw), dict(resp.headers)


@pytest.fixture(scope="session")
def replicas(gw: Gw, orch_db: str, server_thread: ServerThread) -> Iterator[list[Gw]]:
    """Three gateway replicas on one database: the session's gateway and two more."""
    extra = [Served(gateway_settings(orch_db), server_thread) for _ in range(2)]
    # The scrape-time gauges of the process registry follow the last gateway started; the
    # session's gateway keeps them (one process holds several gateways only in tests).
    metrics.GAUGE_SOURCE.get = lambda: gw.gateway.table
    yield [gw, *(s.gw for s in extra)]
    for s in extra:
        s.stop()


async def create_key(
    http: aiohttp.ClientSession, gw: Gw, **body: Any
) -> tuple[str, dict[str, Any]]:
    """Issue a virtual key through the admin API; returns (secret, description)."""
    body.setdefault("team", "team-a")
    body.setdefault("owner", "alice@example.com")
    async with http.post(
        f"{gw.base_url}/admin/v1/keys", json=body, headers=bearer(ADMIN_TOKEN)
    ) as resp:
        created: dict[str, Any] = await resp.json()
        assert resp.status == 201, created
    return str(created.pop("key")), created


async def wait_for_key(replicas: list[Gw], key_id: str, present: bool = True) -> None:
    """Until every replica's snapshot has (or no longer has) the key."""
    deadline = time.monotonic() + 10
    while True:
        ids = [{k.id for k in r.gateway.admission.keys.values()} for r in replicas]
        if all((key_id in s) == present for s in ids):
            return
        assert time.monotonic() < deadline, "key change never became live"
        await asyncio.sleep(0.005)
