"""Pure ledger rules: account state, applying postings, balance flags, proportional splits.

Nothing here touches the database. The service loads and locks the accounts, lets these
functions compute the new totals on copies, and writes the result; the database re-checks the
same invariants with constraints, so a bug here fails a write instead of corrupting the books.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from azora_ledger.errors import AmountOverflow, BalanceConstraintViolated, ConditionFailed
from azora_ledger.schemas import MAX_AMOUNT

DEBIT_NORMAL = frozenset({"asset", "expense"})
Kind = Literal["transfer", "pending", "post", "reversal"]


def new_id() -> uuid.UUID:
    """A UUIDv7 (time-ordered): new rows land at the right edge of the primary-key index."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)
    value = ((ms & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)


def new_ids(n: int) -> list[uuid.UUID]:
    """``n`` UUIDv7s of the current millisecond, from one read of the random source."""
    head = ((time.time_ns() // 1_000_000) & ((1 << 48) - 1)) << 80 | (0x7 << 76) | (0b10 << 62)
    rand = os.urandom(10 * n)
    ids = []
    for k in range(0, 10 * n, 10):
        r = int.from_bytes(rand[k : k + 10], "big")
        ids.append(uuid.UUID(int=head | ((r >> 68) << 64) | (r & ((1 << 62) - 1))))
    return ids


@dataclass(slots=True)
class AccountState:
    id: int
    code: str
    type: str
    currency: str
    scale: int
    debits_must_not_exceed_credits: bool
    credits_must_not_exceed_debits: bool
    overdraft_limit: int | None
    posted_debits: int
    posted_credits: int
    pending_debits: int
    pending_credits: int
    version: int
    closed: bool

    @property
    def debit_normal(self) -> bool:
        return self.type in DEBIT_NORMAL

    def posted_balance(self) -> int:
        net = self.posted_debits - self.posted_credits
        return net if self.debit_normal else -net

    def available(self) -> int:
        # Reserved outgoing amounts reduce what is available; pending incoming do not add.
        if self.debit_normal:
            return self.posted_debits - self.posted_credits - self.pending_credits
        return self.posted_credits - self.posted_debits - self.pending_debits

    def balances(self) -> dict[str, Any]:
        pending_net = self.pending_debits - self.pending_credits
        return {
            "posted": {
                "debits": self.posted_debits,
                "credits": self.posted_credits,
                "balance": self.posted_balance(),
            },
            "pending": {
                "debits": self.pending_debits,
                "credits": self.pending_credits,
                "balance": pending_net if self.debit_normal else -pending_net,
            },
            "available": self.available(),
        }

    def violation(self) -> str | None:
        """The first balance rule the current totals break, mirroring the CHECK constraints."""
        # Written out rather than looped over a tuple: this runs for every account of every
        # transfer while the account locks are held.
        debits = self.posted_debits + self.pending_debits
        credits = self.posted_credits + self.pending_credits
        if (
            debits > MAX_AMOUNT
            or credits > MAX_AMOUNT
            or self.posted_debits > MAX_AMOUNT
            or self.posted_credits > MAX_AMOUNT
            or self.pending_debits > MAX_AMOUNT
            or self.pending_credits > MAX_AMOUNT
        ):
            return "overflow"
        if self.debits_must_not_exceed_credits and debits > self.posted_credits:
            return "debits_must_not_exceed_credits"
        if self.credits_must_not_exceed_debits and credits > self.posted_debits:
            return "credits_must_not_exceed_debits"
        if self.overdraft_limit is not None and self.available() < -self.overdraft_limit:
            return "overdraft_limit"
        return None


@dataclass(slots=True)
class PlannedPosting:
    seq: int
    account: AccountState
    direction: str
    amount: int
    pending: bool
    account_version: int = 0
    balance_debits: int | None = None
    balance_credits: int | None = None


@dataclass(slots=True)
class PlannedTransaction:
    id: uuid.UUID
    kind: Kind
    status: str
    effective_at: datetime
    recorded_at: datetime
    postings: list[PlannedPosting]
    reference: str | None = None
    category: str | None = None
    tags: list[str] = field(default_factory=list)
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    expires_at: datetime | None = None
    resolved_at: datetime | None = None
    parent_id: uuid.UUID | None = None
    request_hash: str | None = None
    request: Any = None

    def view(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "kind": self.kind,
            "status": self.status,
            "reference": self.reference,
            "category": self.category,
            "tags": self.tags,
            "description": self.description,
            "metadata": self.metadata,
            "effective_at": self.effective_at,
            "recorded_at": self.recorded_at,
            "expires_at": self.expires_at,
            "resolved_at": self.resolved_at,
            "parent_id": str(self.parent_id) if self.parent_id else None,
            "postings": [
                {
                    "account": p.account.code,
                    "direction": p.direction,
                    "amount": p.amount,
                    "currency": p.account.currency,
                }
                for p in self.postings
            ],
        }


@dataclass(slots=True)
class Effect:
    """How one posting moves its account's totals.

    ``posted``/``pending`` are added (negative releases a reservation) on the posting's side.
    """

    account_code: str
    direction: str
    posted: int
    pending: int
    posting: PlannedPosting | None = None


class Workspace:
    """The locked accounts of one database transaction, updated in memory.

    ``apply`` keeps a transaction's effects only when every rule holds, so a rejected item in
    a batch leaves the others' view of the balances untouched.
    """

    def __init__(self, accounts: dict[str, AccountState]) -> None:
        self.accounts = accounts
        self.dirty: set[str] = set()

    def apply(self, effects: list[Effect]) -> None:
        """Apply one transaction's effects, or none of them: when a rule breaks, the touched
        accounts get their totals back and the error is raised.

        In place (the totals are saved and restored, not copied: this runs once per transfer
        under the account locks). A posting's ``account`` is the live account, of which only
        the fixed fields (id, code, currency) are read later; its running totals are copied
        into the posting here.
        """
        accounts = self.accounts
        touched: dict[str, AccountState] = {}
        saved: list[tuple[AccountState, int, int, int, int, int]] = []
        for effect in effects:
            code = effect.account_code
            acc = touched.get(code)
            if acc is None:
                acc = touched[code] = accounts[code]
                saved.append(
                    (
                        acc,
                        acc.posted_debits,
                        acc.posted_credits,
                        acc.pending_debits,
                        acc.pending_credits,
                        acc.version,
                    )
                )
                acc.version += 1
            if effect.direction == "debit":
                acc.posted_debits += effect.posted
                acc.pending_debits += effect.pending
            else:
                acc.posted_credits += effect.posted
                acc.pending_credits += effect.pending
            p = effect.posting
            if p is not None:
                # The posting records the totals right after it: the statement's running balance.
                p.account = acc
                p.account_version = acc.version
                if not p.pending:
                    p.balance_debits = acc.posted_debits
                    p.balance_credits = acc.posted_credits
        for code, acc in touched.items():
            broken = acc.violation()
            if broken is None:
                continue
            for a, posted_debits, posted_credits, pending_debits, pending_credits, version in saved:
                a.posted_debits = posted_debits
                a.posted_credits = posted_credits
                a.pending_debits = pending_debits
                a.pending_credits = pending_credits
                a.version = version
            if broken == "overflow":
                raise AmountOverflow(
                    "postings", f"the totals of account {code} would exceed 2^63-1", account=code
                )
            raise BalanceConstraintViolated(
                f"account {code} would break its {broken} rule",
                account=code,
                constraint=broken,
                available=acc.available(),
            )
        self.dirty.update(touched)

    def check_condition(
        self,
        code: str,
        expected_version: int | None,
        at_least: int | None,
        at_most: int | None,
    ) -> None:
        acc = self.accounts[code]
        if expected_version is not None and acc.version != expected_version:
            raise ConditionFailed(
                f"account {code} is at version {acc.version}, not {expected_version}",
                account=code,
                expected_version=expected_version,
                actual_version=acc.version,
            )
        available = acc.available()
        if at_least is not None and available < at_least:
            raise ConditionFailed(
                f"account {code} has {available} available, less than {at_least}",
                account=code,
                balance_at_least=at_least,
                available=available,
            )
        if at_most is not None and available > at_most:
            raise ConditionFailed(
                f"account {code} has {available} available, more than {at_most}",
                account=code,
                balance_at_most=at_most,
                available=available,
            )


def split(amount: int, weights: list[int]) -> list[int]:
    """Split ``amount`` over ``weights`` proportionally (largest remainder, ties by position).

    Each share is at most its weight when ``amount <= sum(weights)``: a share only gets the
    extra unit when its exact value has a fractional part, i.e. lies strictly below the weight.
    """
    total = sum(weights)
    if total == 0:
        return [0] * len(weights)
    shares = [amount * w // total for w in weights]
    remainders = [(amount * w % total, -i) for i, w in enumerate(weights)]
    left = amount - sum(shares)
    for _, neg_i in sorted(remainders, reverse=True)[:left]:
        shares[-neg_i] += 1
    return shares


def split_postings(amount: int, postings: list[tuple[str, int]]) -> list[int]:
    """Split ``amount`` over postings ``(direction, weight)`` so each side sums to ``amount``."""
    result = [0] * len(postings)
    for side in ("debit", "credit"):
        idx = [i for i, (d, _) in enumerate(postings) if d == side]
        for i, share in zip(idx, split(amount, [postings[i][1] for i in idx]), strict=True):
            result[i] = share
    return result
