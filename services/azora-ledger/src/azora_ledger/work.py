"""How ledger work runs: in one database transaction, run again when the database reports a
race it resolves by retrying, and answered as an :class:`Outcome` (status and body).

Callers own the transaction: the request session, the coalescer's batch, a writer's pooled
connection, or the expirer. Services and repositories never commit.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from azora_common.errors import ProblemError
from azora_ledger.errors import (
    AmountOverflow,
    BalanceConstraintViolated,
    CurrencyMismatch,
    LedgerBusy,
    ReferenceReused,
    Unbalanced,
    UnknownCategory,
)
from azora_ledger.metrics import RETRIES
from azora_ledger.repository import driver_connection

T = TypeVar("T")

# Deadlocks cannot happen between our own writers (one lock order) but can with other clients
# of the database; serialization failures appear under stricter isolation; a unique violation
# on a reference or idempotency key means a concurrent request won a race we pre-checked. All
# three are resolved by running the transaction again.
RETRYABLE = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.UniqueViolationError,
)


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Outcome:
    """The HTTP result of one operation: status, JSON body, whether it is a replay."""

    status: int
    body: Any
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.status < 400


def problem_outcome(exc: ProblemError, path: str) -> Outcome:
    return Outcome(exc.status, exc.to_problem(path))


def database_problem(exc: asyncpg.PostgresError) -> ProblemError | None:
    """Map a constraint the database enforced to a clear problem (never a 500)."""
    constraint = getattr(exc, "constraint_name", None) or ""
    if isinstance(exc, asyncpg.NumericValueOutOfRangeError):
        return AmountOverflow("postings", "an amount or a running total would exceed 2^63-1")
    if isinstance(exc, asyncpg.CheckViolationError):
        if constraint.startswith("ck_accounts_"):
            return BalanceConstraintViolated(
                "the database refused the new balance (" + constraint + ")",
                constraint=constraint.removeprefix("ck_accounts_"),
            )
        if constraint == "ledger_postings_balanced":
            return Unbalanced("postings", "debits must equal credits per currency")
    if isinstance(exc, asyncpg.UniqueViolationError) and constraint == "uq_transactions_reference":
        return ReferenceReused("this reference belongs to another transaction")
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        if "category" in constraint:
            return UnknownCategory("category", "no such category")
        if "account" in constraint:
            return CurrencyMismatch("postings", "a posting's currency differs from its account's")
    return None


async def with_retries(
    conn: asyncpg.Connection, work: Callable[[], Awaitable[T]], attempts: int = 6
) -> T:
    """Run ``work`` in a (sub)transaction; run it again after a retryable failure."""
    for attempt in range(attempts):
        try:
            async with conn.transaction():
                return await work()
        except RETRYABLE as exc:
            problem = database_problem(exc)
            if attempt == attempts - 1:
                raise problem or LedgerBusy("too much contention, try again") from exc
            RETRIES.inc()
            await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))
        except asyncpg.PostgresError as exc:
            problem = database_problem(exc)
            if problem is None:
                raise
            raise problem from exc
    raise AssertionError("unreachable")


async def in_session(
    session: AsyncSession, work: Callable[[asyncpg.Connection], Awaitable[T]]
) -> T:
    """``work`` on the session's connection, in a subtransaction retried as ``with_retries``."""
    conn = await driver_connection(session)
    return await with_retries(conn, lambda: work(conn))
