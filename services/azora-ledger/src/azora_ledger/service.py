"""Ledger business rules over one asyncpg connection inside a database transaction.

Callers own the transaction (the request session, the coalescer's batch, or the expirer);
functions here lock, plan in memory (``domain``), and write (``repository``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import orjson

from azora_common.errors import InvalidField, ProblemError
from azora_common.idempotency import IdempotencyKeyReused, differing_fields
from azora_ledger import repository as repo
from azora_ledger.currencies import resolve_scale
from azora_ledger.domain import (
    Effect,
    PlannedPosting,
    PlannedTransaction,
    Workspace,
    new_id,
    new_ids,
    split_postings,
)
from azora_ledger.errors import (
    AccountClosed,
    AccountExists,
    AccountNotEmpty,
    AccountNotFound,
    AlreadyReversed,
    AmountOverflow,
    BalanceConstraintViolated,
    BatchRejected,
    CurrencyMismatch,
    ExceedsRemaining,
    InvalidCurrency,
    LedgerBusy,
    NotPending,
    NotReversible,
    PendingExpired,
    ReferenceReused,
    TransactionNotFound,
    Unbalanced,
    UnknownAccount,
    UnknownCategory,
)
from azora_ledger.gate import WriteTurn
from azora_ledger.metrics import (
    BATCH_SIZE,
    LOCK_WAIT,
    POSTED_VOLUME,
    POSTINGS,
    RETRIES,
    TRANSACTIONS,
)
from azora_ledger.schemas import AccountIn, TransactionIn

log = logging.getLogger("azora.ledger")

TRANSACTIONS_SCOPE = "POST /v1/transactions"
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


def canonical(body: Any) -> tuple[str, str]:
    data = orjson.dumps(body, option=orjson.OPT_SORT_KEYS, default=str)
    return data.decode(), hashlib.sha256(data).hexdigest()


@dataclass(slots=True)
class Outcome:
    """The HTTP result of one operation: status, JSON body, whether it is a replay."""

    status: int
    body: Any
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.status < 400


@dataclass(slots=True)
class TransferRequest:
    body: TransactionIn
    key: str | None = None
    path: str = "/v1/transactions"
    request_json: str = ""
    request_hash: str = ""
    request: Any = field(default=None)

    def __post_init__(self) -> None:
        # Only an idempotency key or a reference ever compares requests: the canonical dump
        # and its hash are skipped for the rest (a large share of a batch item's cost).
        if self.key is not None or self.body.reference is not None:
            self.request = self.body.model_dump(mode="json")
            self.request_json, self.request_hash = canonical(self.request)


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


# ---- accounts ----


def account_view(row: asyncpg.Record) -> dict[str, Any]:
    state = repo.account_state(row)
    return {
        "id": row["id"],
        "code": row["code"],
        "name": row["name"],
        "type": row["type"],
        "currency": row["currency"],
        "scale": row["scale"],
        "flags": {
            "debits_must_not_exceed_credits": row["debits_must_not_exceed_credits"],
            "credits_must_not_exceed_debits": row["credits_must_not_exceed_debits"],
            "overdraft_limit": row["overdraft_limit"],
        },
        "closed": row["closed"],
        "metadata": orjson.loads(row["metadata_json"]),
        "version": row["version"],
        "created_at": row["created_at"],
        "balances": state.balances(),
    }


async def create_account(conn: asyncpg.Connection, body: AccountIn) -> dict[str, Any]:
    try:
        scale = resolve_scale(body.currency, body.scale)
    except ValueError as exc:
        raise InvalidCurrency("currency", str(exc)) from exc
    await repo.lock_code(conn, body.code)
    row = await repo.insert_account(
        conn,
        {
            "code": body.code,
            "name": body.name,
            "type": body.type,
            "currency": body.currency,
            "scale": scale,
            "debits_must_not_exceed_credits": body.flags.debits_must_not_exceed_credits,
            "credits_must_not_exceed_debits": body.flags.credits_must_not_exceed_debits,
            "overdraft_limit": body.flags.overdraft_limit,
            "metadata": body.metadata,
            "created_at": now_utc(),
        },
    )
    if row is None:
        existing = await repo.get_account(conn, body.code)
        raise AccountExists(
            f"account {body.code} already exists",
            code=body.code,
            account=account_view(existing) if existing else None,
        )
    return account_view(row)


async def get_account(conn: asyncpg.Connection, code: str) -> dict[str, Any]:
    row = await repo.get_account(conn, code)
    if row is None:
        raise AccountNotFound(f"no account {code}", code=code)
    return account_view(row)


async def close_account(conn: asyncpg.Connection, code: str) -> dict[str, Any]:
    states = await repo.lock_accounts(conn, [code])
    state = states.get(code)
    if state is None:
        raise AccountNotFound(f"no account {code}", code=code)
    if state.posted_debits != state.posted_credits or state.pending_debits or state.pending_credits:
        raise AccountNotEmpty(
            f"account {code} has a balance or pending amounts; move them first",
            code=code,
            balances=state.balances(),
        )
    if not state.closed:
        await repo.close_account(conn, state.id)
    return await get_account(conn, code)


async def balances(conn: asyncpg.Connection, code: str, as_of: datetime | None) -> dict[str, Any]:
    row = await repo.get_account(conn, code)
    if row is None:
        raise AccountNotFound(f"no account {code}", code=code)
    state = repo.account_state(row)
    if as_of is None:
        return {"account": code, "currency": state.currency, "version": state.version} | (
            state.balances()
        )
    debits, credits = (await repo.balance_as_of(conn, [state.id], as_of))[state.id]
    net = debits - credits if state.debit_normal else credits - debits
    return {
        "account": code,
        "currency": state.currency,
        "as_of": as_of,
        "posted": {"debits": debits, "credits": credits, "balance": net},
    }


async def statement(
    conn: asyncpg.Connection, code: str, cursor: str | None, limit: int
) -> dict[str, Any]:
    row = await repo.get_account(conn, code)
    if row is None:
        raise AccountNotFound(f"no account {code}", code=code)
    state = repo.account_state(row)
    after = decode_cursor(cursor) if cursor else None
    rows = await repo.statement(conn, state.id, after, limit + 1)
    items = []
    for r in rows[:limit]:
        bal = r["balance_debits"] - r["balance_credits"]
        items.append(
            {
                "transaction_id": str(r["transaction_id"]),
                "kind": r["kind"],
                "reference": r["reference"],
                "description": r["description"],
                "category": r["category"],
                "direction": r["direction"],
                "amount": r["amount"],
                "currency": r["currency"],
                "effective_at": r["effective_at"],
                "recorded_at": r["recorded_at"],
                "account_version": r["account_version"],
                "balance": {
                    "debits": r["balance_debits"],
                    "credits": r["balance_credits"],
                    "balance": bal if state.debit_normal else -bal,
                },
            }
        )
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = f"{last['account_version']}.{last['transaction_id']}.{last['seq']}"
    return {"account": code, "currency": state.currency, "items": items, "next_cursor": next_cursor}


def decode_cursor(cursor: str) -> tuple[int, str, int]:
    try:
        version, tx, seq = cursor.split(".")
        return int(version), str(uuid.UUID(tx)), int(seq)
    except ValueError as exc:
        raise InvalidField("query.cursor", "not a cursor this API returned") from exc


# ---- transactions ----


def transaction_view(row: asyncpg.Record, postings: list[asyncpg.Record]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "kind": row["kind"],
        "status": row["status"],
        "reference": row["reference"],
        "category": row["category"],
        "tags": list(row["tags"]),
        "description": row["description"],
        "metadata": orjson.loads(row["metadata_json"]),
        "effective_at": row["effective_at"],
        "recorded_at": row["recorded_at"],
        "expires_at": row["expires_at"],
        "resolved_at": row["resolved_at"],
        "parent_id": str(row["parent_id"]) if row["parent_id"] else None,
        "postings": [
            {
                "account": p["account"],
                "direction": p["direction"],
                "amount": p["amount"],
                "currency": p["currency"],
            }
            for p in postings
        ],
    }


async def load_transaction(conn: asyncpg.Connection, tx_id: uuid.UUID) -> dict[str, Any]:
    row = await repo.get_transaction(conn, tx_id)
    if row is None:
        raise TransactionNotFound(f"no transaction {tx_id}", id=str(tx_id))
    view = transaction_view(row, await repo.get_postings(conn, [tx_id]))
    view["children"] = [
        {"id": str(c["id"]), "kind": c["kind"]} for c in await repo.children(conn, tx_id)
    ]
    return view


async def list_transactions(
    conn: asyncpg.Connection,
    *,
    reference: str | None,
    account: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    after = None
    if cursor:
        try:
            after = uuid.UUID(cursor)
        except ValueError as exc:
            raise InvalidField("query.cursor", "not a cursor this API returned") from exc
    rows = await repo.list_transactions(
        conn, reference=reference, account=account, status=status, after=after, limit=limit + 1
    )
    page = rows[:limit]
    postings = await repo.get_postings(conn, [r["id"] for r in page])
    by_tx: dict[uuid.UUID, list[asyncpg.Record]] = {}
    for p in postings:
        by_tx.setdefault(p["transaction_id"], []).append(p)
    return {
        "items": [transaction_view(r, by_tx.get(r["id"], [])) for r in page],
        "next_cursor": str(page[-1]["id"]) if len(rows) > limit else None,
    }


@dataclass(slots=True)
class PreparedTransfer:
    """What a new transaction is before its accounts are locked: checked for what needs no
    account state, with its id, times and response body already made (none of which depend on
    the accounts), so the locked part of a batch does only what must be done under locks."""

    request: TransferRequest
    # Its postings are added under the locks (apply_transfer).
    tx: PlannedTransaction
    # Raised under the locks, after the account checks, to keep the order of the errors.
    late_error: ProblemError | None
    view: dict[str, Any]


def prepare_transfer(
    request: TransferRequest, categories: set[str], now: datetime, tx_id: uuid.UUID
) -> PreparedTransfer:
    """The checks of one new transaction that need no account (category, balance per currency)."""
    body = request.body
    if body.category is not None and body.category not in categories:
        raise UnknownCategory("category", f"no category {body.category!r}; create it first")
    sides: dict[str, list[int]] = {}
    for p in body.postings:
        side = sides.setdefault(p.currency, [0, 0])
        side[0 if p.direction == "debit" else 1] += p.amount
    for currency, (debits, credits) in sides.items():
        if debits != credits:
            raise Unbalanced(
                "postings",
                f"debits ({debits}) and credits ({credits}) differ in {currency}",
                currency=currency,
                debits=debits,
                credits=credits,
            )
    expires_at = body.expires_at
    if body.pending and body.timeout_seconds:
        expires_at = now + timedelta(seconds=body.timeout_seconds)
    late_error = None
    if expires_at is not None and expires_at <= now:
        late_error = InvalidField("expires_at", "must be in the future")
    effective_at = body.effective_at or now
    # The same document PlannedTransaction.view() gives: a posting's currency is its account's
    # once the locked checks pass, and nothing else here depends on the accounts.
    view = {
        "id": str(tx_id),
        "kind": "pending" if body.pending else "transfer",
        "status": "pending" if body.pending else "posted",
        "reference": body.reference,
        "category": body.category,
        "tags": list(body.tags),
        "description": body.description,
        "metadata": body.metadata,
        "effective_at": effective_at,
        "recorded_at": now,
        "expires_at": expires_at,
        "resolved_at": None,
        "parent_id": None,
        "postings": [
            {
                "account": p.account,
                "direction": p.direction,
                "amount": p.amount,
                "currency": p.currency,
            }
            for p in body.postings
        ],
    }
    tx = PlannedTransaction(
        id=tx_id,
        kind="pending" if body.pending else "transfer",
        status="pending" if body.pending else "posted",
        effective_at=effective_at,
        recorded_at=now,
        postings=[],
        reference=body.reference,
        category=body.category,
        tags=list(body.tags),
        description=body.description,
        metadata=body.metadata,
        expires_at=expires_at,
        request_hash=request.request_hash if body.reference else None,
        request=request.request if body.reference else None,
    )
    return PreparedTransfer(request, tx, late_error, view)


def apply_transfer(prepared: PreparedTransfer, ws: Workspace) -> PlannedTransaction:
    """Check one prepared transaction against the locked accounts and apply it in memory."""
    request = prepared.request
    body = request.body
    pending = body.pending
    planned: list[PlannedPosting] = []
    effects: list[Effect] = []
    accounts = ws.accounts
    for i, p in enumerate(body.postings):
        acc = accounts.get(p.account)
        if acc is None:
            raise UnknownAccount(f"postings[{i}].account", f"no account {p.account}")
        if acc.closed:
            raise AccountClosed(f"postings[{i}].account", f"account {p.account} is closed")
        if acc.currency != p.currency:
            raise CurrencyMismatch(
                f"postings[{i}].currency",
                f"account {p.account} holds {acc.currency}, not {p.currency}",
            )
        posting = PlannedPosting(i, acc, p.direction, p.amount, pending)
        planned.append(posting)
        if pending:
            effects.append(Effect(p.account, p.direction, 0, p.amount, posting))
        else:
            effects.append(Effect(p.account, p.direction, p.amount, 0, posting))
    for j, c in enumerate(body.conditions):
        if c.account not in accounts:
            raise UnknownAccount(f"conditions[{j}].account", f"no account {c.account}")
        ws.check_condition(c.account, c.expected_version, c.balance_at_least, c.balance_at_most)
    if prepared.late_error is not None:
        raise prepared.late_error
    ws.apply(effects)
    tx = prepared.tx
    tx.postings = planned
    return tx


# Batches from this many new transactions up store them speculatively (see
# create_transactions): below it the extra round trips cost more than the turn saves.
SPECULATE_FROM = 100


def _record(txns: list[PlannedTransaction], source: str, outcomes: list[Outcome]) -> None:
    BATCH_SIZE.labels(source).observe(len(outcomes))
    # Summed first, then one increment per label set: labels() is a locked dict lookup, too
    # slow to pay per posting.
    kinds: dict[str, int] = defaultdict(int)
    postings: dict[str, int] = defaultdict(int)
    volume: dict[str, int] = defaultdict(int)
    for t in txns:
        kinds[t.kind] += 1
        for p in t.postings:
            postings[p.account.currency] += 1
            if p.direction == "debit" and not p.pending:
                volume[p.account.currency] += p.amount
    for kind, n in kinds.items():
        TRANSACTIONS.labels(kind, "ok").inc(n)
    for currency, n in postings.items():
        POSTINGS.labels(currency).inc(n)
    for currency, n in volume.items():
        POSTED_VOLUME.labels(currency).inc(n)
    rejected = sum(1 for o in outcomes if not o.ok)
    if rejected:
        TRANSACTIONS.labels("transfer", "rejected").inc(rejected)


async def create_transactions(
    conn: asyncpg.Connection,
    requests: list[TransferRequest],
    *,
    atomic: bool,
    source: str,
    turn: WriteTurn | None = None,
    retention: timedelta = timedelta(hours=24),
) -> list[Outcome]:
    """Apply new transactions in the caller's database transaction; one outcome per request.

    Every account of every request is locked once, up front, in id order; the requests are
    then checked and applied in memory one after another, so a hot account costs one lock per
    batch instead of one per transfer. Rejected requests write nothing; the others are written
    with one multi-row statement per table.
    """
    now = now_utc()
    n = len(requests)
    outcomes: list[Outcome | None] = [None] * n

    # 1. Idempotency keys: the first request with a key owns it; later ones in the batch follow.
    owners: dict[str, int] = {}
    followers: dict[int, int] = {}
    for i, r in enumerate(requests):
        if r.key is not None:
            if r.key in owners:
                followers[i] = owners[r.key]
            else:
                owners[r.key] = i
    owned: set[str] = set()
    if owners:
        claims = [
            (k, requests[i].request_hash, requests[i].request_json) for k, i in owners.items()
        ]
        owned = await repo.claim_keys(conn, TRANSACTIONS_SCOPE, claims, now, retention)
        taken = [k for k in owners if k not in owned]
        stored = await repo.stored_keys(conn, TRANSACTIONS_SCOPE, taken) if taken else {}
        for k in taken:
            i = owners[k]
            row = stored[k]
            if row["request_hash"] == requests[i].request_hash:
                outcomes[i] = Outcome(
                    row["response_status"], orjson.loads(row["response_json"]), replayed=True
                )
            else:
                outcomes[i] = problem_outcome(
                    IdempotencyKeyReused(
                        "this Idempotency-Key was used with a different request body",
                        idempotency_key=k,
                        differing_fields=differing_fields(
                            orjson.loads(row["request_json"]), requests[i].request
                        ),
                    ),
                    requests[i].path,
                )
    active = [i for i in range(n) if outcomes[i] is None and i not in followers]

    # 2. What the checks need: existing references, categories, and the locked accounts.
    refs = sorted({x for i in active if (x := requests[i].body.reference) is not None})
    existing = await repo.find_references(conn, refs) if refs else {}
    wanted_categories = sorted({c for i in active if (c := requests[i].body.category)})
    categories = (
        await repo.existing_categories(conn, wanted_categories) if wanted_categories else set()
    )
    codes = sorted(
        {p.account for i in active for p in requests[i].body.postings}
        | {c.account for i in active for c in requests[i].body.conditions}
    )
    # Everything that needs no account state is done before the locks are taken. An error
    # found here is kept and raised only where the plan would have run, so a request that
    # turns out to replay a stored reference still replays, as before.
    prepared: dict[int, PreparedTransfer | ProblemError] = {}
    for n_prepared, (i, tx_id) in enumerate(zip(active, new_ids(len(active)), strict=True)):
        if n_prepared % 200 == 199:
            await asyncio.sleep(0)  # a large batch must not hold the event loop (see gate.py)
        try:
            prepared[i] = prepare_transfer(requests[i], categories, now, tx_id)
        except ProblemError as exc:
            prepared[i] = exc
    # Speculation: a large batch stores its transaction rows before taking its write turn
    # (their indexes and foreign-key checks then cost the turn nothing), inside a savepoint.
    # If the locked checks reject any of them, the transaction goes back to the savepoint,
    # which also drops the account locks taken after it, and locks and plans again.
    # Never with references: an uncommitted row holding a reference would make a writer in
    # its turn that inserts the same reference wait for a writer that waits for the turn.
    speculative: list[PlannedTransaction] = []
    speculative_counts: list[int] = []
    speculative_requests: list[int] = []
    if turn is not None and len(active) >= SPECULATE_FROM and not refs:
        for i in active:
            ready = prepared[i]
            if isinstance(ready, ProblemError) or ready.late_error is not None:
                continue
            speculative.append(ready.tx)
            speculative_counts.append(len(requests[i].body.postings))
            speculative_requests.append(i)
    facts: repo.PostingFacts | None = None
    if len(speculative) >= SPECULATE_FROM:
        await conn.execute("SAVEPOINT ledger_speculative")
        await repo.insert_transactions(conn, speculative, speculative_counts)
        # What the postings' columns hold that needs no lock, encoded now (valid when every
        # speculative transaction is planned: a posting's currency is then its account's).
        facts = repo.posting_facts(
            [
                [(p.currency, p.direction, p.amount) for p in requests[i].body.postings]
                for i in speculative_requests
            ]
        )
    else:
        speculative = []

    async def lock_and_plan() -> tuple[Workspace, list[PlannedTransaction], dict[int, uuid.UUID]]:
        started = time.perf_counter()
        if turn is not None:
            await turn.take(conn)  # given back by the caller once the transaction has ended
        ws = Workspace(await repo.lock_accounts(conn, codes) if codes else {})
        LOCK_WAIT.observe(time.perf_counter() - started)
        # 3. Check and apply each request in memory, in arrival order.
        planned: list[PlannedTransaction] = []
        by_reference: dict[str, tuple[str, PlannedTransaction]] = {}
        replay_ids: dict[int, uuid.UUID] = {}
        for i in active:
            r = requests[i]
            ref = r.body.reference
            try:
                if ref is not None and ref in existing:
                    row = existing[ref]
                    if row["request_hash"] != r.request_hash:
                        raise ReferenceReused(
                            f"reference {ref!r} belongs to a transaction with a different request",
                            reference=ref,
                            transaction_id=str(row["id"]),
                            differing_fields=differing_fields(
                                orjson.loads(row["request_json"] or "{}"), r.request
                            ),
                        )
                    replay_ids[i] = row["id"]
                    continue
                if ref is not None and ref in by_reference:
                    first_hash, first_tx = by_reference[ref]
                    if first_hash != r.request_hash:
                        raise ReferenceReused(
                            f"reference {ref!r} is used twice in this batch with different "
                            "requests",
                            reference=ref,
                        )
                    outcomes[i] = Outcome(200, first_tx.view(), replayed=True)
                    continue
                ready = prepared[i]
                if isinstance(ready, ProblemError):
                    raise ready
                tx = apply_transfer(ready, ws)
            except ProblemError as exc:
                outcomes[i] = problem_outcome(exc, r.path)
                continue
            planned.append(tx)
            outcomes[i] = Outcome(201, ready.view)
            if ref is not None:
                by_reference[ref] = (r.request_hash, tx)
        return ws, planned, replay_ids

    ws, planned, replay_ids = await lock_and_plan()
    rows_stored = bool(speculative)
    if rows_stored and [t.id for t in planned] != [t.id for t in speculative]:
        rows_stored = False
        if not atomic:  # atomic: the batch is rejected below, with everything in it
            await conn.execute("ROLLBACK TO SAVEPOINT ledger_speculative")
            for i in active:
                outcomes[i] = None
            ws, planned, replay_ids = await lock_and_plan()
    for i, tx_id in replay_ids.items():
        outcomes[i] = Outcome(200, await load_transaction(conn, tx_id), replayed=True)
    for i, owner in followers.items():
        lead = outcomes[owner]
        assert lead is not None
        if requests[i].request_hash != requests[owner].request_hash:
            outcomes[i] = problem_outcome(
                IdempotencyKeyReused(
                    "this Idempotency-Key was used with a different request body",
                    idempotency_key=requests[i].key,
                    differing_fields=differing_fields(requests[owner].request, requests[i].request),
                ),
                requests[i].path,
            )
        else:
            outcomes[i] = Outcome(lead.status, lead.body, replayed=lead.ok)
    final: list[Outcome] = [o for o in outcomes if o is not None]
    assert len(final) == n

    if atomic and not all(o.ok for o in final):
        raise BatchRejected(
            "at least one transaction was rejected; nothing was written",
            results=[
                {"index": i, "status": o.status, "error": o.body}
                for i, o in enumerate(final)
                if not o.ok
            ],
        )

    # 4. Write everything, then the idempotent responses.
    await repo.write_planned(
        conn, planned, ws, stored=rows_stored, facts=facts if rows_stored else None
    )
    if owners:
        done = []
        failed = []
        for k, i in owners.items():
            o = final[i]
            if k not in owned:
                continue  # replayed from a key stored earlier: nothing to store
            if o.ok:
                done.append((k, o.status, repo.dumps(o.body)))
            else:
                failed.append(k)
        await repo.finish_keys(conn, TRANSACTIONS_SCOPE, done, failed)
    # Metrics after the caller's commit wait begins, not in the write turn's critical path.
    asyncio.get_running_loop().call_soon(_record, planned, source, final)
    return final


# ---- two-phase and reversals ----


async def _lock_for_postings(conn: asyncpg.Connection, postings: list[asyncpg.Record]) -> Workspace:
    started = time.perf_counter()
    ws = Workspace(
        await repo.lock_accounts_by_id(conn, sorted({p["account_id"] for p in postings}))
    )
    LOCK_WAIT.observe(time.perf_counter() - started)
    return ws


async def _pending_for_update(conn: asyncpg.Connection, tx_id: uuid.UUID) -> asyncpg.Record:
    row = await repo.get_transaction(conn, tx_id, for_update=True)
    if row is None:
        raise TransactionNotFound(f"no transaction {tx_id}", id=str(tx_id))
    if row["kind"] != "pending":
        raise NotPending(f"transaction {tx_id} is a {row['kind']}, not a pending transaction")
    if row["status"] != "pending":
        raise NotPending(
            f"pending transaction {tx_id} is already {row['status']}", current_status=row["status"]
        )
    return row


async def post_pending(conn: asyncpg.Connection, tx_id: uuid.UUID, amount: int | None) -> Outcome:
    now = now_utc()
    row = await _pending_for_update(conn, tx_id)
    if row["expires_at"] is not None and row["expires_at"] <= now:
        raise PendingExpired(f"pending transaction {tx_id} expired at {row['expires_at']}")
    postings = await repo.get_postings(conn, [tx_id])
    shares = [p["amount"] for p in postings]
    if amount is not None:
        currencies = {p["currency"] for p in postings}
        if len(currencies) > 1:
            raise InvalidField("amount", "a partial post needs a single-currency transaction")
        total = sum(p["amount"] for p in postings if p["direction"] == "debit")
        if amount > total:
            raise ExceedsRemaining(
                "amount", f"{amount} exceeds the pending amount {total}", pending_amount=total
            )
        shares = split_postings(amount, [(p["direction"], p["amount"]) for p in postings])
    ws = await _lock_for_postings(conn, postings)
    by_id = {a.id: a for a in ws.accounts.values()}
    effects: list[Effect] = []
    planned: list[PlannedPosting] = []
    for p, share in zip(postings, shares, strict=True):
        code = by_id[p["account_id"]].code
        # Release the whole reservation; post only the share (the rest goes back).
        effects.append(Effect(code, p["direction"], posted=0, pending=-p["amount"]))
        if share > 0:
            posting = PlannedPosting(
                len(planned), by_id[p["account_id"]], p["direction"], share, pending=False
            )
            planned.append(posting)
            effects.append(Effect(code, p["direction"], posted=share, pending=0, posting=posting))
    ws.apply(effects)
    tx = PlannedTransaction(
        id=new_id(),
        kind="post",
        status="posted",
        effective_at=now,
        recorded_at=now,
        postings=planned,
        category=row["category"],
        tags=list(row["tags"]),
        description=row["description"],
        metadata=orjson.loads(row["metadata_json"]),
        parent_id=tx_id,
    )
    await repo.write_planned(conn, [tx], ws)
    await repo.resolve_pending(conn, tx_id, "posted", now)
    TRANSACTIONS.labels("post", "ok").inc()
    return Outcome(201, tx.view())


async def release_pending(
    conn: asyncpg.Connection, tx_id: uuid.UUID, status: str
) -> dict[str, Any]:
    """Void or expire: give the reserved amounts back."""
    now = now_utc()
    await _pending_for_update(conn, tx_id)
    postings = await repo.get_postings(conn, [tx_id])
    ws = await _lock_for_postings(conn, postings)
    by_id = {a.id: a for a in ws.accounts.values()}
    ws.apply(
        [
            Effect(by_id[p["account_id"]].code, p["direction"], posted=0, pending=-p["amount"])
            for p in postings
        ]
    )
    await repo.write_accounts(conn, ws)
    await repo.resolve_pending(conn, tx_id, status, now)
    TRANSACTIONS.labels("void" if status == "voided" else "expire", "ok").inc()
    return await load_transaction(conn, tx_id)


async def expire_due(conn: asyncpg.Connection, limit: int = 100) -> int:
    ids = await repo.due_pending(conn, now_utc(), limit)
    for tx_id in ids:
        await release_pending(conn, tx_id, "expired")
    return len(ids)


async def reverse(
    conn: asyncpg.Connection,
    tx_id: uuid.UUID,
    amount: int | None,
    *,
    description: str | None = None,
    reference: str | None = None,
    effective_at: datetime | None = None,
) -> Outcome:
    now = now_utc()
    # Locking the original serializes reversals of it: "what is left" cannot be spent twice.
    row = await repo.get_transaction(conn, tx_id, for_update=True)
    if row is None:
        raise TransactionNotFound(f"no transaction {tx_id}", id=str(tx_id))
    if row["kind"] == "pending":
        raise NotReversible(
            "a pending transaction is voided, not reversed; reverse the post transaction instead",
            kind="pending",
            current_status=row["status"],
        )
    postings = await repo.get_postings(conn, [tx_id])
    groups: dict[tuple[int, str], int] = {}
    for p in postings:
        groups[(p["account_id"], p["direction"])] = (
            groups.get((p["account_id"], p["direction"]), 0) + p["amount"]
        )
    done = await repo.reversed_so_far(conn, tx_id)
    flip = {"debit": "credit", "credit": "debit"}
    keys = list(groups)
    remaining = [groups[k] - done.get((k[0], flip[k[1]]), 0) for k in keys]
    currency_of = {p["account_id"]: p["currency"] for p in postings}
    left = sum(r for k, r in zip(keys, remaining, strict=True) if k[1] == "debit")
    if left == 0:
        earlier = [c for c in await repo.children(conn, tx_id) if c["kind"] == "reversal"]
        if amount is None and len(earlier) == 1:
            # A repeated full reversal returns the one that already happened.
            return Outcome(200, await load_transaction(conn, earlier[0]["id"]), replayed=True)
        raise AlreadyReversed(f"transaction {tx_id} is fully reversed", id=str(tx_id))
    if amount is None:
        shares = remaining
    else:
        if len({currency_of[k[0]] for k in keys}) > 1:
            raise InvalidField("amount", "a partial reversal needs a single-currency transaction")
        if amount > left:
            raise ExceedsRemaining(
                "amount", f"{amount} exceeds the {left} left to reverse", remaining=left
            )
        shares = split_postings(amount, [(k[1], r) for k, r in zip(keys, remaining, strict=True)])
    ws = await _lock_for_postings(conn, postings)
    by_id = {a.id: a for a in ws.accounts.values()}
    effects: list[Effect] = []
    planned: list[PlannedPosting] = []
    for (account_id, direction), share in zip(keys, shares, strict=True):
        if share <= 0:
            continue
        acc = by_id[account_id]
        posting = PlannedPosting(len(planned), acc, flip[direction], share, pending=False)
        planned.append(posting)
        effects.append(Effect(acc.code, flip[direction], posted=share, pending=0, posting=posting))
    ws.apply(effects)
    tx = PlannedTransaction(
        id=new_id(),
        kind="reversal",
        status="posted",
        effective_at=effective_at or now,
        recorded_at=now,
        postings=planned,
        reference=reference,
        category=row["category"],
        tags=list(row["tags"]),
        description=description or f"Reversal of {tx_id}",
        metadata={"reversal_of": str(tx_id)},
        parent_id=tx_id,
    )
    await repo.write_planned(conn, [tx], ws)
    TRANSACTIONS.labels("reversal", "ok").inc()
    return Outcome(201, tx.view())
