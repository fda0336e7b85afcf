"""The write gate: per process by default; with LEDGER_WRITE_GATE=database, one writer at a time
across every process and replica on the database (a transaction-scoped advisory lock)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import httpx

from azora_ledger.gate import WriteGate
from tests.conftest import API_TOKEN
from tests.ledger.conftest import balance, ledger_app, open_account, transfer
from tests.support.apps import bearer, committing_client

TRY_WRITERS = "SELECT pg_try_advisory_xact_lock(1279543122, 1)"


def libpq(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def test_a_database_turn_is_held_until_the_transaction_ends(live_db: str) -> None:
    gate = WriteGate(1, database=True)
    writer = await asyncpg.connect(libpq(live_db))
    other = await asyncpg.connect(libpq(live_db))
    try:
        async with gate.turn() as turn:
            tx = writer.transaction()
            await tx.start()
            await turn.take(writer)
            async with other.transaction():
                assert await other.fetchval(TRY_WRITERS) is False
            await turn.take(writer)  # again in the same transaction (a retry): no self-wait
            await tx.commit()
            async with other.transaction():
                assert await other.fetchval(TRY_WRITERS) is True
    finally:
        await writer.close()
        await other.close()


async def test_a_process_turn_takes_no_database_lock(live_db: str) -> None:
    gate = WriteGate(1)
    writer = await asyncpg.connect(libpq(live_db))
    other = await asyncpg.connect(libpq(live_db))
    try:
        async with gate.turn() as turn, writer.transaction():
            await turn.take(writer)
            async with other.transaction():
                assert await other.fetchval(TRY_WRITERS) is True
    finally:
        await writer.close()
        await other.close()


async def test_two_replicas_with_a_database_gate_write_the_same_accounts(
    live_db: str, unique: Callable[[str], str]
) -> None:
    codes = [unique(f"acc{i}") for i in range(10)]
    apps = [
        ledger_app(live_db, coalesce=True, write_gate="database", db_pool_size=10) for _ in range(2)
    ]
    async with (
        committing_client(apps[0], headers=bearer(API_TOKEN)) as one,
        committing_client(apps[1], headers=bearer(API_TOKEN)) as two,
    ):
        for code in codes:
            await open_account(one, code)
        items = [transfer(codes[i % 10], codes[(i + 3) % 10], 1) for i in range(120)]

        async def batch(client: httpx.AsyncClient) -> int:
            resp = await client.post(
                "/v1/transactions:batch", json={"mode": "atomic", "transactions": items}
            )
            return resp.status_code

        async def single(client: httpx.AsyncClient, i: int) -> int:
            resp = await client.post(
                "/v1/transactions", json=transfer(codes[i % 10], codes[(i + 1) % 10], 2)
            )
            return resp.status_code

        statuses = await asyncio.wait_for(
            asyncio.gather(
                batch(one),
                batch(two),
                batch(one),
                *(single((one, two)[i % 2], i) for i in range(20)),
            ),
            timeout=60,
        )
        assert statuses == [201] * 23
        for i, code in enumerate(codes):
            # Each batch moves 12 out of and 12 into every account; singles 2 out, 2 in.
            assert (await balance(two, code))["posted"]["balance"] == 0, (i, code)
        account = (await one.get(f"/v1/accounts/{codes[0]}")).json()
        # One version per transfer touching it: 3 batches x 24, plus 4 singles.
        assert account["version"] == 3 * 24 + 4
