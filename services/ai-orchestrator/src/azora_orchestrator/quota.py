"""Limits and budgets of virtual keys that hold across replicas: the shared state in PostgreSQL.

Admission of a key with requests/min, tokens/min or a budget is one statement,
``SELECT … FROM vk_admit(…)`` (migration 0003): under the row lock of the key's ``key_state`` row
it refills the key's two token buckets, starts a new budget window when the current one is over,
checks, and reserves the estimated cost. Settlement (the actual cost and tokens replacing the
reservation) is not a statement per request: the usage writer (usage.py) applies the
settlements of all requests finished in the last interval together with their usage records,
in one transaction.

The bound: a key's requests are admitted only while ``spent + reserved < budget``, and every
admitted request's estimate is in ``reserved`` before the next admission (of any replica) is
checked. So the spend of a window can pass the budget by at most the estimate of the last
request admitted (minus one minor unit) plus whatever requests cost beyond their estimates.
With ``max_tokens`` given, the output part of the estimate is an upper bound; the prompt part is
``body bytes / 4`` tokens (an upper bound for English text). A settlement applied a flush
interval later only delays giving back the difference between estimate and actual: that makes
admission stricter, never looser.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from azora_orchestrator.cost import MILLION
from azora_orchestrator.keys import TOKENS, KeyInfo
from azora_orchestrator.routing import Route

ADMIT_SQL = (
    "SELECT ok, reason, spent, reserved, window_start, wait_s "
    "FROM vk_admit_many($1, $2, $3, $4, $5, $6, $7)"
)

Pending = tuple[int, int, "asyncio.Future[Verdict]"]


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str  # "", "requests", "tokens" or "budget"
    spent: int
    reserved: int
    window_start: datetime
    wait_s: float


def estimate_cost(key: KeyInfo, route: Route, prompt: int, completion: int) -> int:
    """The reservation: tokens for a token budget, else the route's highest price in the key's
    currency (the backend is not picked yet), rounded up to a minor unit."""
    if key.unit == TOKENS:
        return prompt + completion
    pin = pout = 0
    for backend in route.backends:
        price = backend.cfg.price
        if price is not None and price.currency == key.unit:
            pin = max(pin, price.input_per_million)
            pout = max(pout, price.output_per_million)
    return -(-(prompt * pin + completion * pout) // MILLION)


log = logging.getLogger("azora.orchestrator.quota")


async def _no_reset(conn: asyncpg.Connection) -> None:
    return None


class SharedState:
    """The connection pool for the admission statement, and the admissions queued per key.

    Admissions of one key are coalesced: while a key's statement is in flight, the requests
    of that key that arrive queue up and go together in the next statement (no waiting
    window: the first request goes at once, batches grow with load). A key's row lock is then
    taken once per batch instead of once per request, so a busy key is not limited to one
    admission per commit.
    """

    def __init__(self, dsn: str, size: int) -> None:
        self.dsn = dsn
        self.size = size
        self.pool: asyncpg.Pool | None = None
        self._queues: dict[str, list[Pending]] = {}
        self.statements = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        # Admissions commit asynchronously (no WAL flush wait): a database crash may forget the
        # last few hundred milliseconds of reservations and bucket takes (README, "The
        # bound"). The usage writer's transactions (the settled spend) turn it back on.
        self.pool = await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=self.size,
            command_timeout=5,
            server_settings={"synchronous_commit": "off"},
            # Nothing here changes session state (no SET, LISTEN, advisory or prepared-by-name
            # state; SET LOCAL ends with its transaction), so a connection going back to the
            # pool needs no reset query: one round trip per admission, not two.
            reset=_no_reset,
        )

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def admit(self, key: KeyInfo, tokens: int, cost: int) -> Verdict:
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(key.id)
        if queue is None:
            self._queues[key.id] = [(tokens, cost, future)]
            self._tasks.add(task := asyncio.create_task(self._drain(key)))
            task.add_done_callback(self._tasks.discard)
        else:
            queue.append((tokens, cost, future))
        return await future

    async def _drain(self, key: KeyInfo) -> None:
        while True:
            batch = self._queues.get(key.id)
            if not batch:
                self._queues.pop(key.id, None)
                return
            self._queues[key.id] = []
            try:
                assert self.pool is not None
                rows = await self.pool.fetch(
                    ADMIT_SQL,
                    key.id,
                    key.rpm,
                    key.tpm,
                    key.budget,
                    key.period_s,
                    [t for t, _, _ in batch],
                    [c for _, c, _ in batch],
                )
                self.statements += 1
                if len(rows) != len(batch):
                    raise RuntimeError(f"vk_admit_many answered {len(rows)} of {len(batch)}")
            except BaseException as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(
                            exc if isinstance(exc, Exception) else RuntimeError("cancelled")
                        )
                if not isinstance(exc, Exception):
                    self._fail_queued(key.id)
                    raise
                continue
            for (_, _, future), row in zip(batch, rows, strict=True):
                if not future.done():
                    wait = row["wait_s"]
                    future.set_result(
                        Verdict(
                            row["ok"],
                            row["reason"],
                            row["spent"],
                            row["reserved"],
                            row["window_start"],
                            wait if wait is not None and math.isfinite(wait) else 0.0,
                        )
                    )

    def _fail_queued(self, key_id: str) -> None:
        for _, _, future in self._queues.pop(key_id, []):
            if not future.done():
                future.set_exception(RuntimeError("the admission queue stopped"))
