"""Usage recorded off the hot path, with the settlements of budgets and the ledger outbox.

A finished request appends one tuple to an in-memory list (no await, no I/O). Every
``usage_flush_ms`` a background task takes the list and, in **one transaction**:

1. ``COPY`` the records into ``usage_events``;
2. settles the keys' shared counters (quota.py): per key, the actual cost replaces the
   reservations of the requests in the batch (``spent``, ``total_spent``, ``reserved``) and the
   tokens/min bucket is corrected by actual - estimated tokens;
3. inserts one ``ledger_outbox`` row with the batch's cost per (team, model, currency), which
   ledger.py books in azora-ledger.

So the usage API, the enforcement counters and the ledger see the same requests with the same
amounts: a batch is in all three or in none. A crash (kill -9) loses the records not yet
committed: those of the last flush interval plus a flush in progress (≤ 2 x ``usage_flush_ms``
of traffic). Their reservations stay in ``reserved`` until the key's window resets (admission is
then stricter, never looser). When the database is unreachable the batch is kept and retried
(at most ``usage_buffer_max`` records; beyond, the oldest are dropped and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson

from azora_common.tasks import stop_tasks
from azora_orchestrator import metrics
from azora_orchestrator.admission import Ticket
from azora_orchestrator.keys import TOKENS
from azora_orchestrator.quota import SharedState
from azora_orchestrator.repository import SETTLE_SQL, USAGE_COLUMNS
from azora_orchestrator.settings import OrchestratorSettings

log = logging.getLogger("azora.orchestrator.usage")

Record = tuple[Any, ...]


class Recorder:
    def __init__(self, settings: OrchestratorSettings, shared: SharedState, replica: str) -> None:
        self.settings = settings
        self.shared = shared
        self.replica = replica
        self.records: list[Record] = []
        # key id -> [cost, token delta, latest window, reserved released in that window]
        self.settlements: dict[str, list[Any]] = {}
        self._task: asyncio.Task[None] | None = None
        # One flush at a time: a flush returns once everything recorded before it is written,
        # including what a flush already in progress (the writer's, every interval) took.
        self._flushing = asyncio.Lock()
        self._last_retention = 0.0
        self.flushes = 0
        self._teams = frozenset(settings.metric_teams)
        self._children: dict[tuple[str, str, str], Any] = {}

    def add(self, ticket: Ticket) -> None:
        """One finished request (every path of the relay ends here, exactly once)."""
        backend = ticket.backend
        prompt, completion = ticket.prompt_tokens, ticket.completion_tokens
        price = backend.cfg.price if backend is not None else None
        cost = price.cost(prompt, completion) if price is not None and ticket.usage_known else 0
        currency = price.currency if price is not None else None
        key = ticket.key
        now = time.perf_counter()
        ttft = ticket.ttft_s
        self.records.append(
            (
                datetime.now(UTC),
                key.id if key is not None else None,
                key.team if key is not None else None,
                ticket.route.key,
                backend.cfg.name if backend is not None else None,
                ticket.route.model,
                ticket.status,
                ticket.outcome,
                prompt,
                completion,
                cost,
                currency,
                (now - ticket.t0) * 1000.0,
                ttft * 1000.0 if ttft is not None else None,
                self.replica,
            )
        )
        self._count(
            key.team if key is not None else None, ticket.status, prompt, completion, cost, currency
        )
        if key is None or not ticket.shared:
            return
        if key.unit == TOKENS:
            charged = prompt + completion
        elif not key.budget or price is None or not ticket.usage_known:
            charged = 0
        elif price.currency == key.unit:
            charged = cost
        else:  # priced in another currency: the reservation stands as the charge
            charged = ticket.reserved
        tokens = (prompt + completion - ticket.key_tokens) if ticket.key_tokens else 0
        acc = self.settlements.get(key.id)
        if acc is None:
            self.settlements[key.id] = [charged, tokens, ticket.window, ticket.reserved]
            return
        acc[0] += charged
        acc[1] += tokens
        if ticket.window == acc[2]:
            acc[3] += ticket.reserved
        elif ticket.window is not None and (acc[2] is None or ticket.window > acc[2]):
            # Reservations of an older window were reset with it; only the newest is released.
            acc[2], acc[3] = ticket.window, ticket.reserved

    def _count(
        self,
        team: str | None,
        status: int,
        prompt: int,
        completion: int,
        cost: int,
        currency: str | None,
    ) -> None:
        label = "none" if team is None else team if team in self._teams else "other"
        children = self._children
        req_key = (label, "r", f"{status // 100}xx")
        counter = children.get(req_key)
        if counter is None:
            counter = children[req_key] = metrics.TEAM_REQUESTS.labels(label, req_key[2])
        counter.inc()
        if prompt or completion:
            tin = children.get((label, "t", "input"))
            if tin is None:
                tin = children[(label, "t", "input")] = metrics.TEAM_TOKENS.labels(label, "input")
                children[(label, "t", "output")] = metrics.TEAM_TOKENS.labels(label, "output")
            tin.inc(prompt)
            children[(label, "t", "output")].inc(completion)
        if cost and currency is not None:
            spend = children.get((label, "c", currency))
            if spend is None:
                spend = children[(label, "c", currency)] = metrics.SPEND.labels(label, currency)
            spend.inc(cost)

    # -- the background writer ---------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def stop(self) -> None:
        await stop_tasks(self._task)
        # A graceful stop writes what is left.
        with contextlib.suppress(Exception):
            await self.flush()

    async def _run(self) -> None:
        interval = self.settings.usage_flush_ms / 1000.0
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
                await self._retention()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("usage flush failed; kept for the next one", exc_info=True)

    async def flush(self) -> int:
        """Write what was recorded until now; returns once it is written (after a flush already
        in progress, whose records it does not see)."""
        async with self._flushing:
            records, self.records = self.records, []
            settlements, self.settlements = self.settlements, {}
            if not records and not settlements:
                return 0
            try:
                await self._write(records, settlements)
            except BaseException:
                self._restore(records, settlements)
                raise
            self.flushes += 1
            metrics.USAGE_WRITTEN.inc(len(records))
            return len(records)

    def _restore(self, records: list[Record], settlements: dict[str, list[Any]]) -> None:
        self.records[:0] = records
        overflow = len(self.records) - self.settings.usage_buffer_max
        if overflow > 0:
            del self.records[:overflow]
            metrics.USAGE_DROPPED.inc(overflow)
        for key_id, old in settlements.items():
            acc = self.settlements.get(key_id)
            if acc is None:
                self.settlements[key_id] = old
                continue
            acc[0] += old[0]
            acc[1] += old[1]
            if old[2] == acc[2]:
                acc[3] += old[3]
            elif old[2] is not None and (acc[2] is None or old[2] > acc[2]):
                acc[2], acc[3] = old[2], old[3]

    async def _write(self, records: list[Record], settlements: dict[str, list[Any]]) -> None:
        pool = self.shared.pool
        assert pool is not None
        spend: dict[tuple[str, str, str], int] = defaultdict(int)
        for r in records:
            if r[10] and r[11] is not None:
                spend[(r[2] or "unassigned", r[5], r[11])] += r[10]
        async with pool.acquire() as conn, conn.transaction():
            # The settled spend and the ledger outbox are durable before the batch counts.
            await conn.execute("SET LOCAL synchronous_commit TO on")
            if records:
                await conn.copy_records_to_table(
                    "usage_events", records=records, columns=USAGE_COLUMNS
                )
            if settlements:
                ids = list(settlements)
                await conn.execute(
                    SETTLE_SQL,
                    ids,
                    [settlements[k][0] for k in ids],
                    [float(settlements[k][1]) for k in ids],
                    [settlements[k][2] for k in ids],
                    [settlements[k][3] for k in ids],
                )
            if spend:
                lines = [
                    {"team": t, "model": m, "currency": c, "amount": a}
                    for (t, m, c), a in sorted(spend.items())
                ]
                await conn.execute(
                    "INSERT INTO ledger_outbox (created_at, lines) VALUES (now(), $1::jsonb)",
                    orjson.dumps(lines).decode(),
                )

    async def _retention(self) -> None:
        now = time.monotonic()
        if now - self._last_retention < 3600:
            return
        self._last_retention = now
        pool = self.shared.pool
        assert pool is not None
        await pool.execute(
            "DELETE FROM usage_events WHERE ts < now() - make_interval(days => $1)",
            self.settings.usage_retention_days,
        )
