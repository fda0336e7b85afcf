"""The database refuses what would corrupt the books, even without the Python checks."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from azora_ledger.app import MIGRATIONS
from azora_ledger.verify.service import verify
from tests.conftest import API_TOKEN, migrated_database
from tests.ledger.conftest import ledger_app
from tests.support.apps import bearer, committing_client
from tests.support.pg import PostgresServer


@pytest.fixture(scope="module")
def guards_db(pg: PostgresServer) -> str:
    return migrated_database(pg, "azora_test_ledger_guards", MIGRATIONS).replace(
        "postgresql+asyncpg://", "postgresql://"
    )


@pytest.fixture
async def conn(guards_db: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(guards_db)
    try:
        yield c
    finally:
        await c.close()


async def _accounts(conn: asyncpg.Connection, flag: bool = False) -> tuple[int, int]:
    tag = uuid.uuid4().hex[:8]
    a = await conn.fetchval(
        "INSERT INTO accounts (code, type, currency, scale, debits_must_not_exceed_credits) "
        "VALUES ($1, 'liability', 'EUR', 2, $2) RETURNING id",
        f"g{tag}:a",
        flag,
    )
    b = await conn.fetchval(
        "INSERT INTO accounts (code, type, currency, scale) VALUES ($1, 'asset', 'EUR', 2) "
        "RETURNING id",
        f"g{tag}:b",
    )
    return a, b


async def _insert(
    conn: asyncpg.Connection, a: int, b: int, debit: int, credit: int, currency: str = "EUR"
) -> uuid.UUID:
    tx = uuid.uuid4()
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO transactions (id, kind, status, effective_at, posting_count) "
            "VALUES ($1, 'transfer', 'posted', now(), 2)",
            tx,
        )
        await conn.execute(
            "INSERT INTO postings (transaction_id, seq, account_id, currency, direction, amount, "
            "pending, effective_at, account_version, balance_debits, balance_credits) VALUES "
            "($1, 0, $2, $5, 'debit', $3, false, now(), 1, 0, 0), "
            "($1, 1, $4, $5, 'credit', $6, false, now(), 1, 0, 0)",
            tx,
            b,
            debit,
            a,
            currency,
            credit,
        )
    return tx


async def _run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_unbalanced_postings_are_refused(conn: asyncpg.Connection) -> None:
    a, b = await _accounts(conn)
    with pytest.raises(asyncpg.CheckViolationError, match="does not balance"):
        await _insert(conn, a, b, 100, 90)
    await _insert(conn, a, b, 100, 100)


async def test_posting_currency_must_match_the_account(conn: asyncpg.Connection) -> None:
    a, b = await _accounts(conn)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await _insert(conn, a, b, 100, 100, currency="USD")


async def test_postings_are_immutable(conn: asyncpg.Connection) -> None:
    a, b = await _accounts(conn)
    tx = await _insert(conn, a, b, 100, 100)
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="immutable"):
        await conn.execute("UPDATE postings SET amount = 1 WHERE transaction_id = $1", tx)
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="immutable"):
        await conn.execute("DELETE FROM postings WHERE transaction_id = $1", tx)
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="immutable"):
        await conn.execute("DELETE FROM transactions WHERE id = $1", tx)
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="resolve"):
        await conn.execute("UPDATE transactions SET description = 'x' WHERE id = $1", tx)
    # Adding postings to an existing transaction later is refused as well.
    with pytest.raises(asyncpg.PostgresError):
        await conn.execute(
            "INSERT INTO postings (transaction_id, seq, account_id, currency, direction, amount, "
            "pending, effective_at, account_version, balance_debits, balance_credits) VALUES "
            "($1, 2, $2, 'EUR', 'debit', 5, false, now(), 1, 0, 0), "
            "($1, 3, $3, 'EUR', 'credit', 5, false, now(), 1, 0, 0)",
            tx,
            b,
            a,
        )


async def test_flag_is_a_check_constraint(conn: asyncpg.Connection) -> None:
    a, _ = await _accounts(conn, flag=True)
    with pytest.raises(asyncpg.CheckViolationError, match="debits_must_not_exceed_credits"):
        await conn.execute("UPDATE accounts SET posted_debits = 1 WHERE id = $1", a)


async def test_verify_detects_a_tampered_total_and_cli_exit_code(
    conn: asyncpg.Connection, guards_db: str
) -> None:
    env = {**os.environ, "LEDGER_DATABASE_URL": guards_db}
    cli = [sys.executable, "-c", "from azora_ledger.cli import main; main()", "verify"]
    # The guard tests above commit raw rows without account totals: start from a clean slate.
    await conn.execute("ALTER TABLE postings DISABLE TRIGGER postings_immutable")
    await conn.execute("DELETE FROM postings")
    await conn.execute("ALTER TABLE postings ENABLE TRIGGER postings_immutable")
    await conn.execute("ALTER TABLE transactions DISABLE TRIGGER transactions_no_delete")
    await conn.execute("DELETE FROM transactions")
    await conn.execute("ALTER TABLE transactions ENABLE TRIGGER transactions_no_delete")
    assert (await verify(conn))["ok"] is True
    code, out = await _run(cli, env)
    assert code == 0, out
    _, b = await _accounts(conn)
    await conn.execute("UPDATE accounts SET posted_debits = 7 WHERE id = $1", b)
    result = await verify(conn)
    assert result["ok"] is False
    failed = {c["check"] for c in result["checks"] if not c["ok"]}
    assert failed == {"account_totals", "currency_totals"}
    code, out = await _run(cli, env)
    assert code == 1
    assert '"ok": false' in out


async def test_the_service_verifies_on_its_own_schedule(
    conn: asyncpg.Connection, guards_db: str
) -> None:
    # LEDGER_VERIFY_INTERVAL_MINUTES: each replica verifies periodically and sets the gauge
    # the alert reads (AzoraLedgerVerifyFailed), with nobody calling POST /admin/v1/verify.
    await conn.execute("ALTER TABLE postings DISABLE TRIGGER postings_immutable")
    await conn.execute("DELETE FROM postings")
    await conn.execute("ALTER TABLE postings ENABLE TRIGGER postings_immutable")
    await conn.execute("ALTER TABLE transactions DISABLE TRIGGER transactions_no_delete")
    await conn.execute("DELETE FROM transactions")
    await conn.execute("ALTER TABLE transactions ENABLE TRIGGER transactions_no_delete")
    await conn.execute("DELETE FROM account_daily_volumes")
    await conn.execute(
        "UPDATE accounts SET posted_debits = 0, posted_credits = 0, pending_debits = 0, "
        "pending_credits = 0"
    )
    _, b = await _accounts(conn)
    url = guards_db.replace("postgresql://", "postgresql+asyncpg://")
    app = ledger_app(url, verify_interval_minutes=0.005)  # every 0.3 s

    async def gauges(client: httpx.AsyncClient) -> tuple[float, float]:
        text = (await client.get("/metrics")).text
        values = {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in text.splitlines()
            if line.startswith("azora_ledger_verify_")
        }
        return (
            values["azora_ledger_verify_ok"],
            values["azora_ledger_verify_last_run_timestamp_seconds"],
        )

    async def next_run(client: httpx.AsyncClient, after: float) -> float:
        for _ in range(100):
            ok, last_run = await gauges(client)
            if last_run > after:
                return ok
            await asyncio.sleep(0.1)
        raise AssertionError("no verification ran within 10 s")

    started = time.time()
    async with committing_client(app, bearer(API_TOKEN)) as client:
        assert await next_run(client, started) == 1
        await conn.execute("UPDATE accounts SET posted_debits = 7 WHERE id = $1", b)
        tampered = time.time()
        assert await next_run(client, tampered) == 0
        await conn.execute("UPDATE accounts SET posted_debits = 0 WHERE id = $1", b)
        assert await next_run(client, time.time()) == 1


async def test_periodic_verification_can_be_disabled(guards_db: str) -> None:
    url = guards_db.replace("postgresql://", "postgresql+asyncpg://")
    app = ledger_app(url, verify_interval_minutes=0)
    async with committing_client(app, bearer(API_TOKEN)):
        tasks = {t.get_coro().__qualname__ for t in asyncio.all_tasks()}  # type: ignore[union-attr]
        assert "run_verifier" not in tasks
        assert "run_expirer" in tasks
