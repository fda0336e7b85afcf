"""New transactions: checked, planned in memory (``domain``) and written (``repository``) in the
caller's database transaction; reads of transactions; the chart of categories.

``create_transactions`` is the one writer of new transactions, for every source (a coalesced
batch of single requests, a batch request, an uncoalesced single request). Its phases, in order:
claim the idempotency keys, prepare what needs no account state, store large batches
speculatively, lock the accounts and check every request in memory, write.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from azora_common.db import Driver
from azora_common.errors import Conflict, InvalidField, ProblemError
from azora_common.idempotency import IdempotencyKeyReused, differing_fields
from azora_ledger.accounts import repository as accounts_repo
from azora_ledger.domain import (
    Effect,
    PlannedPosting,
    PlannedTransaction,
    Workspace,
    new_ids,
)
from azora_ledger.errors import (
    AccountClosed,
    BatchRejected,
    CurrencyMismatch,
    ReferenceReused,
    TransactionNotFound,
    Unbalanced,
    UnknownAccount,
    UnknownCategory,
)
from azora_ledger.gate import WriteGate, WriteTurn
from azora_ledger.metrics import (
    BATCH_SIZE,
    LOCK_WAIT,
    POSTED_VOLUME,
    POSTINGS,
    TRANSACTIONS,
)
from azora_ledger.repository import driver_connection, dumps
from azora_ledger.schemas import CategoryIn, TransactionIn
from azora_ledger.transactions import repository as repo
from azora_ledger.work import Outcome, now_utc, problem_outcome, with_retries

TRANSACTIONS_SCOPE = "POST /v1/transactions"


def canonical(body: Any) -> tuple[str, str]:
    data = orjson.dumps(body, option=orjson.OPT_SORT_KEYS, default=str)
    return data.decode(), hashlib.sha256(data).hexdigest()


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


# ---- writers: where a request's transaction comes from ----


async def write_new(
    driver: Driver,
    gate: WriteGate,
    requests: list[TransferRequest],
    *,
    atomic: bool,
    source: str,
) -> list[Outcome]:
    """New transactions without an idempotency key of the request as a whole (a batch, or an
    uncoalesced single), committed before this returns, and before the write turn is given
    back (the transaction block ends first)."""
    async with driver() as conn:
        try:
            async with gate.turn() as turn:
                return await with_retries(
                    conn,
                    lambda: create_transactions(
                        conn, requests, atomic=atomic, source=source, turn=turn
                    ),
                )
        except ProblemError as exc:
            # Only a single keyed request's refusal by the database itself is stored here (its
            # transaction is gone); anything else is raised as before.
            if len(requests) != 1 or requests[0].key is None or exc.status >= 500:
                raise
            return [await store_refusal(conn, requests[0], problem_outcome(exc, requests[0].path))]


async def write_in_session(
    session: AsyncSession,
    requests: list[TransferRequest],
    *,
    atomic: bool,
    source: str,
    turn: WriteTurn,
) -> list[Outcome]:
    """New transactions in the request's session (a batch with an ``Idempotency-Key``, whose
    response is stored in the same transaction)."""
    conn = await driver_connection(session)
    return await with_retries(
        conn,
        lambda: create_transactions(conn, requests, atomic=atomic, source=source, turn=turn),
    )


# ---- checks of one new transaction ----


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


# ---- create_transactions and its phases ----


@dataclass(slots=True)
class _Batch:
    """One call of ``create_transactions``: its requests, and what each phase found out."""

    requests: list[TransferRequest]
    now: datetime
    outcomes: list[Outcome | None]
    # Idempotency keys: the first request with a key owns it (owners: key -> index); later
    # ones in the batch follow it (followers: index -> owner's index).
    owners: dict[str, int]
    followers: dict[int, int]
    owned: set[str]
    # The requests to plan: neither replayed from a stored key nor following another.
    active: list[int] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    existing: dict[str, asyncpg.Record] = field(default_factory=dict)
    codes: list[str] = field(default_factory=list)
    prepared: dict[int, PreparedTransfer | ProblemError] = field(default_factory=dict)
    # Stored before the turn (store_speculatively), with their postings' encoded facts.
    speculative: list[PlannedTransaction] = field(default_factory=list)
    facts: repo.PostingFacts | None = None


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
    batch = _Batch(requests, now_utc(), [None] * len(requests), {}, {}, set())
    await claim_idempotency_keys(conn, batch, retention)
    await prepare_checks(conn, batch)
    await store_speculatively(conn, batch, turn)
    ws, planned, replay_ids = await lock_and_check(conn, batch, turn, atomic=atomic)
    final = await settle_outcomes(conn, batch, replay_ids, atomic=atomic)
    await write_checked(conn, batch, ws, planned, final)
    # Metrics after the caller's commit wait begins, not in the write turn's critical path.
    asyncio.get_running_loop().call_soon(_record, planned, source, final)
    return final


async def claim_idempotency_keys(
    conn: asyncpg.Connection, batch: _Batch, retention: timedelta
) -> None:
    """Phase 1: claim the requests' idempotency keys. A key stored by an earlier request
    replays its response, or refuses a different body; the rest are owned until the write."""
    requests = batch.requests
    outcomes = batch.outcomes
    owners = batch.owners
    followers = batch.followers
    for i, r in enumerate(requests):
        if r.key is not None:
            if r.key in owners:
                followers[i] = owners[r.key]
            else:
                owners[r.key] = i
    if owners:
        claims = [
            (k, requests[i].request_hash, requests[i].request_json) for k, i in owners.items()
        ]
        owned = await repo.claim_keys(conn, TRANSACTIONS_SCOPE, claims, batch.now, retention)
        batch.owned = owned
        taken = [k for k in owners if k not in owned]
        stored = await repo.stored_keys(conn, TRANSACTIONS_SCOPE, taken) if taken else {}
        for k in taken:
            i = owners[k]
            outcomes[i] = stored_outcome(stored[k], requests[i])
    batch.active = [i for i in range(len(requests)) if outcomes[i] is None and i not in followers]


def stored_outcome(row: asyncpg.Record, request: TransferRequest) -> Outcome:
    """What a request whose key is already stored gets: the stored answer, or a refusal when
    its body differs from the stored request's."""
    if row["request_hash"] == request.request_hash:
        return Outcome(row["response_status"], orjson.loads(row["response_json"]), replayed=True)
    return problem_outcome(
        IdempotencyKeyReused(
            "this Idempotency-Key was used with a different request body",
            idempotency_key=request.key,
            differing_fields=differing_fields(orjson.loads(row["request_json"]), request.request),
        ),
        request.path,
    )


async def store_refusal(
    conn: asyncpg.Connection,
    request: TransferRequest,
    refusal: Outcome,
    retention: timedelta = timedelta(hours=24),
) -> Outcome:
    """Store a refusal that only the database found (a constraint the Python checks let
    through): its transaction was rolled back, the claimed key with it, so the key is claimed
    again in a transaction of its own. A concurrent request with the same key may have stored
    an answer meanwhile: that answer wins, as it would have in one transaction."""
    key = request.key
    if key is None or refusal.status >= 500:
        return refusal
    async with conn.transaction():
        owned = await repo.claim_keys(
            conn,
            TRANSACTIONS_SCOPE,
            [(key, request.request_hash, request.request_json)],
            now_utc(),
            retention,
        )
        if key in owned:
            await repo.finish_keys(
                conn, TRANSACTIONS_SCOPE, [(key, refusal.status, dumps(refusal.body))], []
            )
            return refusal
        stored = await repo.stored_keys(conn, TRANSACTIONS_SCOPE, [key])
    return stored_outcome(stored[key], request)


async def prepare_checks(conn: asyncpg.Connection, batch: _Batch) -> None:
    """Phase 2: what the checks need (stored references, categories, the accounts to lock),
    and every check that needs no account state, done before the locks are taken.

    An error found here is kept and raised only where the plan would have run, so a request
    that turns out to replay a stored reference still replays, as before.
    """
    requests = batch.requests
    active = batch.active
    refs = sorted({x for i in active if (x := requests[i].body.reference) is not None})
    batch.references = refs
    if refs:
        batch.existing = await repo.find_references(conn, refs)
    wanted_categories = sorted({c for i in active if (c := requests[i].body.category)})
    categories = (
        await repo.existing_categories(conn, wanted_categories) if wanted_categories else set()
    )
    batch.codes = sorted(
        {p.account for i in active for p in requests[i].body.postings}
        | {c.account for i in active for c in requests[i].body.conditions}
    )
    now = batch.now
    prepared = batch.prepared
    for n_prepared, (i, tx_id) in enumerate(zip(active, new_ids(len(active)), strict=True)):
        if n_prepared % 200 == 199:
            await asyncio.sleep(0)  # a large batch must not hold the event loop (see gate.py)
        try:
            prepared[i] = prepare_transfer(requests[i], categories, now, tx_id)
        except ProblemError as exc:
            prepared[i] = exc


# Batches from this many new transactions up store them speculatively (store_speculatively):
# below it the extra round trips cost more than the turn saves.
SPECULATE_FROM = 100


async def store_speculatively(
    conn: asyncpg.Connection, batch: _Batch, turn: WriteTurn | None
) -> None:
    """Phase 3: a large batch stores its transaction rows before taking its write turn (their
    indexes and foreign-key checks then cost the turn nothing), inside a savepoint. If the
    locked checks reject any of them, the transaction goes back to the savepoint, which also
    drops the account locks taken after it, and locks and plans again (lock_and_check).

    Never with references: an uncommitted row holding a reference would make a writer in its
    turn that inserts the same reference wait for a writer that waits for the turn.
    """
    active = batch.active
    if turn is None or len(active) < SPECULATE_FROM or batch.references:
        return
    requests = batch.requests
    prepared = batch.prepared
    speculative: list[PlannedTransaction] = []
    speculative_counts: list[int] = []
    speculative_requests: list[int] = []
    for i in active:
        ready = prepared[i]
        if isinstance(ready, ProblemError) or ready.late_error is not None:
            continue
        speculative.append(ready.tx)
        speculative_counts.append(len(requests[i].body.postings))
        speculative_requests.append(i)
    if len(speculative) < SPECULATE_FROM:
        return
    await repo.begin_speculation(conn)
    await repo.insert_transactions(conn, speculative, speculative_counts)
    batch.speculative = speculative
    # What the postings' columns hold that needs no lock, encoded now (valid when every
    # speculative transaction is planned: a posting's currency is then its account's).
    batch.facts = repo.posting_facts(
        [
            [(p.currency, p.direction, p.amount) for p in requests[i].body.postings]
            for i in speculative_requests
        ]
    )


async def lock_and_check(
    conn: asyncpg.Connection, batch: _Batch, turn: WriteTurn | None, *, atomic: bool
) -> tuple[Workspace, list[PlannedTransaction], dict[int, uuid.UUID]]:
    """Phase 4: take the turn, lock the accounts, check and apply every request in memory.
    Speculative rows the checks did not all keep are undone, and the batch planned again (an
    atomic batch is rejected whole instead, by settle_outcomes)."""
    ws, planned, replay_ids = await lock_and_plan(conn, batch, turn)
    speculative = batch.speculative
    if speculative and [t.id for t in planned] != [t.id for t in speculative]:
        batch.speculative = []
        batch.facts = None
        if not atomic:  # atomic: the batch is rejected below, with everything in it
            await repo.undo_speculation(conn)
            outcomes = batch.outcomes
            for i in batch.active:
                outcomes[i] = None
            ws, planned, replay_ids = await lock_and_plan(conn, batch, turn)
    return ws, planned, replay_ids


async def lock_and_plan(
    conn: asyncpg.Connection, batch: _Batch, turn: WriteTurn | None
) -> tuple[Workspace, list[PlannedTransaction], dict[int, uuid.UUID]]:
    """Lock every account of the batch once, then check and apply each request in memory,
    in arrival order: the plan, and the requests that replay a stored reference."""
    started = time.perf_counter()
    if turn is not None:
        # Given back by the caller once the transaction has ended.
        await turn.take(conn, batch.codes, batch.references)
    codes = batch.codes
    ws = Workspace(await accounts_repo.lock_accounts(conn, codes) if codes else {})
    LOCK_WAIT.observe(time.perf_counter() - started)
    requests = batch.requests
    outcomes = batch.outcomes
    existing = batch.existing
    prepared = batch.prepared
    planned: list[PlannedTransaction] = []
    by_reference: dict[str, tuple[str, PlannedTransaction]] = {}
    replay_ids: dict[int, uuid.UUID] = {}
    for i in batch.active:
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
                        f"reference {ref!r} is used twice in this batch with different requests",
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


async def settle_outcomes(
    conn: asyncpg.Connection, batch: _Batch, replay_ids: dict[int, uuid.UUID], *, atomic: bool
) -> list[Outcome]:
    """Phase 5: every request's outcome: replays of stored references, requests that follow
    another with the same key; an atomic batch with any rejection is rejected whole."""
    requests = batch.requests
    outcomes = batch.outcomes
    for i, tx_id in replay_ids.items():
        outcomes[i] = Outcome(200, await load_transaction(conn, tx_id), replayed=True)
    for i, owner in batch.followers.items():
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
            # The owner's answer is stored under the key, a refusal too: this is its replay.
            outcomes[i] = Outcome(lead.status, lead.body, replayed=True)
    final: list[Outcome] = [o for o in outcomes if o is not None]
    assert len(final) == len(requests)
    if atomic and not all(o.ok for o in final):
        raise BatchRejected(
            "at least one transaction was rejected; nothing was written",
            results=[
                {"index": i, "status": o.status, "error": o.body}
                for i, o in enumerate(final)
                if not o.ok
            ],
        )
    return final


async def write_checked(
    conn: asyncpg.Connection,
    batch: _Batch,
    ws: Workspace,
    planned: list[PlannedTransaction],
    final: list[Outcome],
) -> None:
    """Phase 6: write every planned transaction, then the keyed requests' responses.

    A refusal is stored like a success (docs/idempotency.md): the request began executing, so
    a retry with the same key replays it, even after the account has been funded since."""
    stored = bool(batch.speculative)
    await repo.write_planned(conn, planned, ws, stored=stored, facts=batch.facts)
    owners = batch.owners
    if owners:
        owned = batch.owned
        done = [
            (k, final[i].status, dumps(final[i].body))
            for k, i in owners.items()
            # not owned: replayed from a key stored earlier, nothing to store
            if k in owned and final[i].status < 500
        ]
        failed = [k for k, i in owners.items() if k in owned and final[i].status >= 500]
        await repo.finish_keys(conn, TRANSACTIONS_SCOPE, done, failed)


# ---- reads ----


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


async def get_transaction(session: AsyncSession, tx_id: uuid.UUID) -> dict[str, Any]:
    return await load_transaction(await driver_connection(session), tx_id)


async def list_transactions(
    session: AsyncSession,
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
    conn = await driver_connection(session)
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


# ---- categories ----


async def list_categories(session: AsyncSession) -> dict[str, Any]:
    rows = await repo.list_categories(await driver_connection(session))
    return {"items": [dict(r) for r in rows]}


async def create_category(session: AsyncSession, body: CategoryIn) -> dict[str, Any]:
    conn = await driver_connection(session)
    if not await repo.insert_category(conn, body.code, body.name, body.description):
        raise Conflict(f"category {body.code} already exists", code=body.code)
    return body.model_dump(mode="json")
