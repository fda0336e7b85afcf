"""A replica killed with SIGKILL mid-batch: usage lost only from the last flush interval,
spend booked in a real azora-ledger exactly once, and the usage API, the enforcement counters
and the ledger agree."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from azora_common.listener import libpq_url
from tests.conftest import ADMIN_TOKEN, API_TOKEN
from tests.orchestrator.conftest import (
    Admin,
    Gw,
    backend_spec,
    bearer,
    create_key,
    unique,
)
from tests.support.pg import PostgresServer
from tests.support.services import ServiceProcess

PRICE = {"currency": "USD", "inputPerMillion": 1_000_000, "outputPerMillion": 2_000_000}
FLUSH_MS = 1500


@pytest.fixture(scope="module")
def ledger(
    pg: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    url = pg.recreate_database("azora_test_orchestrator_ledger")
    with ServiceProcess("ledger", url, tmp_path_factory.mktemp("ledger")) as process:
        yield process


@pytest.fixture(scope="module")
def replica(
    orch_db: str, ledger: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    process = ServiceProcess(
        "orchestrator",
        orch_db,
        Path(tmp_path_factory.mktemp("orchestrator")),
        env={
            "ORCHESTRATOR_USAGE_FLUSH_MS": str(FLUSH_MS),
            "ORCHESTRATOR_LEDGER_URL": ledger.url,
            "ORCHESTRATOR_LEDGER_TOKEN": API_TOKEN,
            "ORCHESTRATOR_LEDGER_INTERVAL_S": "0.2",
            "ORCHESTRATOR_REPLICA_NAME": "crash-replica",
            "ORCHESTRATOR_LOG_JSON": "false",
        },
    )
    with process:
        yield process


async def ledger_total(http: aiohttp.ClientSession, ledger: ServiceProcess, team: str) -> int:
    async with http.get(
        f"{ledger.url}/v1/reports/totals", params={"group_by": "tag"}, headers=bearer(API_TOKEN)
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    return sum(int(r["amount"]) for r in body["rows"] if r["tag"] == f"team:{team}")


async def test_kill_9_mid_batch(
    gw: Gw,
    orch_db: str,
    admin: Admin,
    http: aiohttp.ClientSession,
    backends,
    ledger: ServiceProcess,
    replica: ServiceProcess,
) -> None:
    a = await backends("a")
    model = unique("crash")
    await admin.put(model, {"model": model, "backends": [backend_spec(a, price=PRICE)]})
    team = unique("crash-team")
    secret, key = await create_key(
        http, gw, team=team, models=[model], budget={"amount": 10**12, "unit": "USD"}
    )
    per_request = a.prompt_tokens * 1 + a.completion_tokens * 2
    url = replica.url + "/v1/chat/completions"
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}

    async def call() -> int:
        async with http.post(url, json=body, headers=bearer(secret)) as resp:
            await resp.read()
            return resp.status

    deadline = time.monotonic() + 15  # the replica loads route and key by NOTIFY
    while await call() != 200:
        assert time.monotonic() < deadline, "the replica never accepted the key"
        await asyncio.sleep(0.05)
    answered = 1
    for _ in range(20):
        assert await call() == 200
        answered += 1
    await asyncio.sleep(FLUSH_MS / 1000 * 2.5)  # written: in the database, then the ledger
    # Mid-batch: answered requests wait in the replica's buffer when it dies.
    completions: list[float] = []
    for _ in range(15):
        assert await call() == 200
        completions.append(time.time())
    answered += 15
    pid = replica.process.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    replica.process.wait(10)

    conn = await asyncpg.connect(libpq_url(orch_db))
    try:
        recorded = int(
            await conn.fetchval("SELECT count(*) FROM usage_events WHERE key_id = $1", key["id"])
        )
        lost = answered - recorded
        assert 0 <= lost <= 15
        # The bound: only requests finished within the last flush interval (plus a flush in
        # progress) before the kill can be lost.
        lost_window = completions[len(completions) - lost :] if lost else []
        assert all(killed - t <= 2 * FLUSH_MS / 1000 for t in lost_window)
        print(f"answered {answered}, recorded {recorded}, lost {lost}")

        replica.start()  # the restarted replica (and its booker) carries on
        # A crash after the ledger's commit but before the outbox mark: sent again, same key.
        replayed = await conn.fetchval(
            "UPDATE ledger_outbox SET sent_at = NULL WHERE id = "
            "(SELECT max(id) FROM ledger_outbox WHERE lines::text LIKE $1 AND sent_at IS NOT NULL)"
            " RETURNING id",
            f"%{team}%",
        )
        assert replayed is not None
        deadline = time.monotonic() + 30
        while await conn.fetchval(
            "SELECT count(*) FROM ledger_outbox WHERE sent_at IS NULL AND lines::text LIKE $1",
            f"%{team}%",
        ):
            assert time.monotonic() < deadline, "the outbox was never drained"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()

    async with http.get(
        f"{gw.base_url}/admin/v1/usage",
        params={
            "group_by": "team",
            "team": team,
            "from": "2020-01-01T00:00:00Z",
            "bucket": "8760h",
        },
        headers=bearer(ADMIN_TOKEN),
    ) as resp:
        report: dict[str, Any] = await resp.json()
    usage_cost = sum(i["cost"] for i in report["items"])
    async with http.get(
        f"{gw.base_url}/admin/v1/keys/{key['id']}/spend", headers=bearer(ADMIN_TOKEN)
    ) as resp:
        spend = await resp.json()
    booked = await ledger_total(http, ledger, team)
    assert usage_cost == recorded * per_request
    assert spend["totalSpent"] == usage_cost  # enforcement counters
    assert booked == usage_cost  # the ledger, each batch once (the replayed one included)
    # The income statement shows the spend as the expense of the team's model account, and the
    # category totals include it under ai-spend.
    async with http.get(
        f"{ledger.url}/v1/reports/income-statement",
        params={"currency": "USD"},
        headers=bearer(API_TOKEN),
    ) as resp:
        statement = await resp.json()
        assert resp.status == 200, statement
    rows = {r["account"]: r for r in statement["rows"]}
    account = rows[f"expense:ai:{team}:{model}"]
    assert account["type"] == "expense" and account["amount"] == usage_cost
    async with http.get(
        f"{ledger.url}/v1/reports/totals",
        params={"group_by": "category"},
        headers=bearer(API_TOKEN),
    ) as resp:
        categories = await resp.json()
    ai = [r for r in categories["rows"] if r["category"] == "ai-spend"]
    assert ai and sum(int(r["amount"]) for r in ai) >= usage_cost
