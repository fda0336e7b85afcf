"""Recompute every balance from the postings and check every invariant.

Run by ``azora-ledger verify`` and ``POST /admin/v1/verify``; the result is exported as
``azora_ledger_verify_ok`` so an alert fires when the books stop adding up.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import asyncpg

from azora_ledger.metrics import VERIFY_LAST_RUN, VERIFY_OK, VERIFY_PROBLEMS
from azora_ledger.verify import repository as repo

log = logging.getLogger("azora.ledger.verify")

CHECKS = {
    "account_totals": "account running totals equal the sum of their postings",
    "unbalanced_transactions": "every transaction's debits equal its credits per currency",
    "currency_totals": "across all accounts, debits equal credits per currency",
    "flags": "every balance flag and overdraft limit holds",
    "running_balances": "each account's last statement balance equals its totals",
    "daily_volumes": "daily volumes (for point-in-time balances) equal their postings",
    "resolved_pending": "every posted pending transaction has its post transaction",
}


async def verify(conn: asyncpg.Connection) -> dict[str, Any]:
    started = time.perf_counter()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        found = await repo.verify_queries(conn)
        counts = await repo.verify_counts(conn)
    checks = []
    for name, rows in found.items():
        VERIFY_PROBLEMS.labels(name).set(len(rows))
        checks.append(
            {
                "check": name,
                "description": CHECKS[name],
                "ok": not rows,
                "problems": [{k: _plain(v) for k, v in dict(r).items()} for r in rows[:20]],
            }
        )
    ok = all(c["ok"] for c in checks)
    VERIFY_OK.set(1 if ok else 0)
    VERIFY_LAST_RUN.set(time.time())
    return {
        "ok": ok,
        "checked": counts,
        "checks": checks,
        "duration_seconds": round(time.perf_counter() - started, 3),
    }


async def verify_pooled(pool: asyncpg.Pool) -> dict[str, Any]:
    """``verify`` on a connection of the service's own pool (outside any request session)."""
    async with pool.acquire() as conn:
        return await verify(conn)


def _plain(value: Any) -> Any:
    if isinstance(value, int | str | bool) or value is None:
        return value
    return str(value)


async def run_verifier(pool: asyncpg.Pool, interval_seconds: float) -> None:
    """Verify every ``interval_seconds`` (``LEDGER_VERIFY_INTERVAL_MINUTES``) for as long as the
    service runs, so ``azora_ledger_verify_ok`` is never older than that and the alert reads a
    fresh result without anyone calling ``POST /admin/v1/verify``.

    Every replica verifies (each exports its own gauge; a replica that never verified would
    keep the alert blind). The first run comes after a random part of the interval, at most
    five minutes, so replicas started together do not scan the books at the same moment."""
    await asyncio.sleep(random.uniform(0.1, 1.0) * min(interval_seconds, 300.0))
    while True:
        try:
            result = await verify_pooled(pool)
            if not result["ok"]:
                failed = [c["check"] for c in result["checks"] if not c["ok"]]
                log.error("ledger verification failed: %s", ", ".join(failed))
        except Exception:  # a database outage must not end the periodic check
            log.exception("ledger verification could not run")
        await asyncio.sleep(interval_seconds)
