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

import math
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from azora_orchestrator.cost import MILLION
from azora_orchestrator.keys import TOKENS, KeyInfo
from azora_orchestrator.routing import Route

ADMIT_SQL = (
    "SELECT ok, reason, spent, reserved, window_start, wait_s "
    "FROM vk_admit($1, $2, $3, $4, $5, $6, $7)"
)


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


class SharedState:
    """The connection pool for the per-key admission statement."""

    def __init__(self, dsn: str, size: int) -> None:
        self.dsn = dsn
        self.size = size
        self.pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        self.pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=self.size, command_timeout=5
        )

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def admit(self, key: KeyInfo, tokens: int, cost: int) -> Verdict:
        assert self.pool is not None
        row = await self.pool.fetchrow(
            ADMIT_SQL,
            key.id,
            key.rpm,
            key.tpm,
            tokens,
            key.budget,
            key.period_s,
            cost,
        )
        assert row is not None
        return Verdict(
            row["ok"],
            row["reason"],
            row["spent"],
            row["reserved"],
            row["window_start"],
            row["wait_s"] if row["wait_s"] is not None and math.isfinite(row["wait_s"]) else 0.0,
        )
