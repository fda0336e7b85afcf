"""Spend booked in azora-ledger, exactly once: a transactional outbox and an Idempotency-Key.

The usage writer (usage.py) inserts one ``ledger_outbox`` row per usage batch that cost
anything, in the transaction that writes the batch's usage records and settles the keys: the
row exists if and only if the records do. The booker (a background task on every replica)
takes the oldest unsent row with ``FOR UPDATE SKIP LOCKED`` (one replica per row), posts it as
one atomic ``POST /v1/transactions:batch`` with ``Idempotency-Key: orchestrator-spend-<id>``,
and marks it sent. A crash between the ledger's commit and the mark only means the next
attempt sends the same key again, and the ledger answers its stored response instead of
booking twice; each transaction also carries the unique reference
``orchestrator-spend-<id>-<n>``.

Per line (team, model, currency, amount): debit ``expense:ai:<team>:<model>`` (created on
first use, type expense, so the income statement shows AI spend per team and model), credit
``liabilities:ai:providers:<currency>`` (what is owed to the model providers); category
``ai-spend``; tags ``team:<team>``, ``model:<model>`` (the ledger's totals by category and by
tag).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from azora_common.tasks import stop_tasks
from azora_orchestrator import metrics

if TYPE_CHECKING:
    from azora_orchestrator.quota import SharedState
    from azora_orchestrator.settings import OrchestratorSettings

log = logging.getLogger("azora.orchestrator.ledger")

CATEGORY = "ai-spend"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.@-]")


def expense_account(team: str, model: str) -> str:
    return f"expense:ai:{_UNSAFE.sub('_', team)}:{_UNSAFE.sub('_', model)}"


def provider_account(currency: str) -> str:
    return f"liabilities:ai:providers:{currency}"


def batch_body(outbox_id: int, lines: list[dict[str, Any]]) -> dict[str, Any]:
    transactions = []
    for n, line in enumerate(lines):
        transactions.append(
            {
                "postings": [
                    {
                        "account": expense_account(line["team"], line["model"]),
                        "direction": "debit",
                        "amount": line["amount"],
                        "currency": line["currency"],
                    },
                    {
                        "account": provider_account(line["currency"]),
                        "direction": "credit",
                        "amount": line["amount"],
                        "currency": line["currency"],
                    },
                ],
                "reference": f"orchestrator-spend-{outbox_id}-{n}",
                "category": CATEGORY,
                "tags": [f"team:{line['team']}", f"model:{line['model']}"],
                "description": f"AI spend of team {line['team']} on {line['model']}",
                "metadata": {"outbox_id": str(outbox_id)},
            }
        )
    return {"mode": "atomic", "transactions": transactions}


class LedgerBooker:
    def __init__(self, settings: OrchestratorSettings, shared: SharedState) -> None:
        self.settings = settings
        self.shared = shared
        self.url = (settings.ledger_url or "").rstrip("/")
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._known: set[str] = set()
        self._category = False

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    async def start(self) -> None:
        if not self.enabled:
            return
        token = self.settings.ledger_token.get_secret_value()
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=30),
        )
        self._task = asyncio.create_task(self._run(), name="ledger-booker")

    async def stop(self) -> None:
        await stop_tasks(self._task)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            try:
                while await self.book_one():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("ledger booking failed; retried", exc_info=True)
            await asyncio.sleep(self.settings.ledger_interval_s)

    async def book_one(self) -> bool:
        """Book the oldest unsent batch; False when there is none (or another replica has it)."""
        pool = self.shared.pool
        assert pool is not None
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit TO on")
            row = await conn.fetchrow(
                "SELECT id, lines FROM ledger_outbox WHERE sent_at IS NULL "
                "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
            )
            if row is None:
                return False
            outbox_id = int(row["id"])
            lines = orjson.loads(row["lines"])
            try:
                await self._post(outbox_id, lines)
            except Exception as exc:
                # Kept for the next round (the same Idempotency-Key, so never twice).
                metrics.LEDGER_BATCHES.labels("error").inc()
                log.warning("ledger batch %s not booked: %s", outbox_id, exc)
                await conn.execute(
                    "UPDATE ledger_outbox SET attempts = attempts + 1, last_error = $2 "
                    "WHERE id = $1",
                    outbox_id,
                    str(exc)[:1000],
                )
                return False
            await conn.execute("UPDATE ledger_outbox SET sent_at = now() WHERE id = $1", outbox_id)
            metrics.LEDGER_BATCHES.labels("booked").inc()
            return True

    async def _ensure(self, path: str, body: dict[str, Any]) -> None:
        assert self._session is not None
        async with self._session.post(self.url + path, data=orjson.dumps(body)) as resp:
            if resp.status not in (200, 201, 409):
                raise RuntimeError(f"ledger {path} answered {resp.status}: {await resp.text()}")

    async def _post(self, outbox_id: int, lines: list[dict[str, Any]]) -> None:
        assert self._session is not None
        if not self._category:
            await self._ensure("/v1/categories", {"code": CATEGORY, "name": "AI model spend"})
            self._category = True
        for line in lines:
            for code, type_ in (
                (expense_account(line["team"], line["model"]), "expense"),
                (provider_account(line["currency"]), "liability"),
            ):
                if code in self._known:
                    continue
                await self._ensure(
                    "/v1/accounts", {"code": code, "type": type_, "currency": line["currency"]}
                )
                self._known.add(code)
        async with self._session.post(
            self.url + "/v1/transactions:batch",
            data=orjson.dumps(batch_body(outbox_id, lines)),
            headers={"Idempotency-Key": f"orchestrator-spend-{outbox_id}"},
        ) as resp:
            if resp.status >= 300:
                raise RuntimeError(f"ledger batch answered {resp.status}: {await resp.text()}")
