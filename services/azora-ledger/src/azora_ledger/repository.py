"""All SQL of azora-ledger, spoken directly through asyncpg (the hot path cannot afford ORM
overhead). Multi-row writes pass arrays and ``unnest`` them: one round trip per table."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from azora_common.idempotency import IDEMPOTENCY_TABLE
from azora_ledger.domain import AccountState, PlannedTransaction, Workspace

_ACCOUNT_COLUMNS = (
    "id, code, type, currency, scale, debits_must_not_exceed_credits, "
    "credits_must_not_exceed_debits, overdraft_limit, posted_debits, posted_credits, "
    "pending_debits, pending_credits, version, closed"
)


def dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


async def driver_connection(session: AsyncSession | AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under a SQLAlchemy session, inside its transaction."""
    conn = await session.connection() if isinstance(session, AsyncSession) else session
    # The SQLAlchemy adapter opens its transaction lazily, on the first statement it runs;
    # run one so our raw statements land inside it (and in the test's outer transaction).
    await conn.exec_driver_sql("SELECT 1")
    raw = await conn.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    return driver


def account_state(row: asyncpg.Record) -> AccountState:
    return AccountState(
        id=row["id"],
        code=row["code"],
        type=row["type"],
        currency=row["currency"],
        scale=row["scale"],
        debits_must_not_exceed_credits=row["debits_must_not_exceed_credits"],
        credits_must_not_exceed_debits=row["credits_must_not_exceed_debits"],
        overdraft_limit=row["overdraft_limit"],
        posted_debits=row["posted_debits"],
        posted_credits=row["posted_credits"],
        pending_debits=row["pending_debits"],
        pending_credits=row["pending_credits"],
        version=row["version"],
        closed=row["closed"],
    )


# ---- accounts ----


async def lock_code(conn: asyncpg.Connection, code: str) -> None:
    # The account may not exist yet, so there is no row to lock: serialize creators of the same
    # code on an advisory lock keyed by its hash (held until the transaction ends).
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", "account:" + code)


async def insert_account(conn: asyncpg.Connection, values: dict[str, Any]) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        """
        INSERT INTO accounts (code, name, type, currency, scale, debits_must_not_exceed_credits,
            credits_must_not_exceed_debits, overdraft_limit, metadata, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb, $10)
        ON CONFLICT (code) DO NOTHING
        RETURNING *, metadata::text AS metadata_json
        """,
        values["code"],
        values["name"],
        values["type"],
        values["currency"],
        values["scale"],
        values["debits_must_not_exceed_credits"],
        values["credits_must_not_exceed_debits"],
        values["overdraft_limit"],
        dumps(values["metadata"]),
        values["created_at"],
    )
    return row


async def get_account(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT *, metadata::text AS metadata_json FROM accounts WHERE code = $1", code
    )
    return row


async def list_accounts(
    conn: asyncpg.Connection, prefix: str | None, after: str | None, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT *, metadata::text AS metadata_json FROM accounts
        WHERE ($1::text IS NULL OR code LIKE $1 || '%')
          AND ($2::text IS NULL OR code > $2)
        ORDER BY code LIMIT $3
        """,
        prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") if prefix else None,
        after,
        limit,
    )
    return rows


async def lock_accounts(conn: asyncpg.Connection, codes: list[str]) -> dict[str, AccountState]:
    # One global lock order (ascending id) for every writer, so two transactions that touch the
    # same accounts queue instead of deadlocking. LockRows runs above the sort: rows are locked
    # in the order they are returned.
    rows = await conn.fetch(
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE code = ANY($1::text[]) "
        "ORDER BY id FOR UPDATE",
        codes,
    )
    # The selected columns are AccountState's fields in order: build it positionally.
    return {r["code"]: AccountState(*r) for r in rows}


async def lock_accounts_by_id(conn: asyncpg.Connection, ids: list[int]) -> dict[str, AccountState]:
    rows = await conn.fetch(
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY($1::bigint[]) "
        "ORDER BY id FOR UPDATE",
        ids,
    )
    return {r["code"]: AccountState(*r) for r in rows}


async def close_account(conn: asyncpg.Connection, account_id: int) -> None:
    await conn.execute(
        "UPDATE accounts SET closed = true, version = version + 1 WHERE id = $1", account_id
    )


# ---- categories ----


async def existing_categories(conn: asyncpg.Connection, codes: list[str]) -> set[str]:
    rows = await conn.fetch("SELECT code FROM categories WHERE code = ANY($1::text[])", codes)
    return {r["code"] for r in rows}


async def insert_category(
    conn: asyncpg.Connection, code: str, name: str, description: str | None
) -> bool:
    row = await conn.fetchrow(
        "INSERT INTO categories (code, name, description) VALUES ($1, $2, $3) "
        "ON CONFLICT (code) DO NOTHING RETURNING code",
        code,
        name,
        description,
    )
    return row is not None


async def list_categories(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT code, name, description FROM categories ORDER BY code"
    )
    return rows


# ---- transactions ----


async def find_references(conn: asyncpg.Connection, refs: list[str]) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT id, reference, request_hash, request::text AS request_json FROM transactions "
        "WHERE reference = ANY($1::text[])",
        refs,
    )
    return {r["reference"]: r for r in rows}


# Rows travel as one array per column (see write_planned for the encodings). Per-row
# expressions only index binary arrays of fixed-width elements (ids, instants, positions,
# pending flags), which costs the same for any position; every other array is an argument of
# unnest, decoded once.
_INSERT_TRANSACTIONS = """
    INSERT INTO transactions (id, kind, status, reference, category, tags, description,
        metadata, effective_at, recorded_at, expires_at, resolved_at, parent_id, posting_count,
        request_hash, request)
    SELECT u.id, u.kind, u.status, u.reference, u.category,
        CASE WHEN u.tags IS NULL THEN '{}'::text[]
             ELSE ARRAY(SELECT json_array_elements_text(u.tags::json)) END,
        u.description, COALESCE(u.metadata::jsonb, '{}'::jsonb),
        ($9::timestamptz[])[u.effective_at], ($9::timestamptz[])[u.recorded_at],
        ($9::timestamptz[])[u.expires_at], ($9::timestamptz[])[u.resolved_at],
        u.parent_id, u.posting_count, u.request_hash, u.request::jsonb
    FROM unnest($1::uuid[], string_to_array($2, ','), string_to_array($3, ','), $4::text[],
        $5::text[], $6::text[], $7::text[], $8::text[], $10::int4[], $11::text::int4[],
        $12::int4[], $13::int4[], $14::uuid[], $15::text::int2[], $16::text[], $17::text[])
        AS u(id, kind, status, reference, category, tags, description, metadata, effective_at,
             recorded_at, expires_at, resolved_at, parent_id, posting_count, request_hash,
             request)
"""

# Postings, daily volumes and account totals. A posting names its transaction by position in
# $1 (ids), and takes that transaction's effective time ($10 positions into the instants $9)
# and pending flag ($18) the same way.
_WRITE_POSTINGS = """
new_postings AS (
    INSERT INTO postings (transaction_id, seq, account_id, currency, direction, amount,
        pending, effective_at, account_version, balance_debits, balance_credits)
    SELECT ($1::uuid[])[u.tx], u.seq, u.account_id, u.currency, u.direction, u.amount,
        ($18::bool[])[u.tx], ($9::timestamptz[])[($10::int4[])[u.tx]], u.account_version,
        u.balance_debits, u.balance_credits
    FROM unnest($19::text::int4[], $20::text::int2[], $21::text::int8[],
        string_to_array($22, ','), string_to_array($23, ','), $24::text::int8[],
        $25::text::int8[], $26::text::int8[], $27::text::int8[])
        AS u(tx, seq, account_id, currency, direction, amount, account_version, balance_debits,
             balance_credits)
),
volumes AS (
    INSERT INTO account_daily_volumes AS v (account_id, day, debits, credits)
    SELECT * FROM unnest($28::text::int8[], $29::text::date[], $30::text::int8[],
        $31::text::int8[]) AS u(account_id, day, debits, credits)
    ORDER BY account_id, day
    ON CONFLICT (account_id, day) DO UPDATE
    SET debits = v.debits + EXCLUDED.debits, credits = v.credits + EXCLUDED.credits
)
UPDATE accounts AS a SET posted_debits = u.pd, posted_credits = u.pc,
    pending_debits = u.qd, pending_credits = u.qc, version = u.v
FROM unnest($32::text::int8[], $33::text::int8[], $34::text::int8[], $35::text::int8[],
    $36::text::int8[], $37::text::int8[]) AS u(id, pd, pc, qd, qc, v)
WHERE a.id = u.id
"""

_WRITE_PLANNED = "WITH new_transactions AS (" + _INSERT_TRANSACTIONS + "),\n" + _WRITE_POSTINGS
# The same statement once the transactions are stored (by insert_transactions): the
# transaction parameters it does not use are still declared, so the numbering is shared.
_WRITE_POSTINGS_ONLY = (
    "WITH unused AS (SELECT $2::text, $3::text, $4::text[], $5::text[], $6::text[], "
    "$7::text[], $8::text[], $11::text, $12::int4[], $13::int4[], $14::uuid[], $15::text, "
    "$16::text[], $17::text[]),\n" + _WRITE_POSTINGS
)


def _column(values: list[Any]) -> list[Any] | None:
    """A column for ``unnest``: ``None`` when every value is NULL (unnest pads with NULLs)."""
    for v in values:
        if v is not None:
            return values
    return None


def _ints(values: list[int]) -> str:
    """An integer array literal: joining text is several times cheaper in Python than
    asyncpg's binary array encoder (which type-checks every element), and as cheap to parse."""
    return "{" + ",".join(map(str, values)) + "}"


def _nullable_ints(values: list[int | None]) -> str:
    return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"


class _Instants:
    """Distinct timestamps of a write, each sent once; rows carry 1-based positions."""

    def __init__(self) -> None:
        self.values: list[datetime] = []
        self._positions: dict[datetime, int] = {}

    def __call__(self, value: datetime | None) -> int | None:
        if value is None:
            return None
        position = self._positions.get(value)
        if position is None:
            self.values.append(value)
            position = self._positions[value] = len(self.values)
        return position


def _transaction_params(txns: list[PlannedTransaction], counts: list[int]) -> list[Any]:
    """Parameters $1-$18 of the statements above, for these transactions, in order."""
    instants = _Instants()
    t_id: list[uuid.UUID] = []
    t_kind: list[str] = []
    t_status: list[str] = []
    t_ref: list[str | None] = []
    t_cat: list[str | None] = []
    t_tags: list[str | None] = []
    t_desc: list[str | None] = []
    t_meta: list[str | None] = []
    t_eff: list[int | None] = []
    t_rec: list[int | None] = []
    t_exp: list[int | None] = []
    t_res: list[int | None] = []
    t_parent: list[uuid.UUID | None] = []
    t_hash: list[str | None] = []
    t_req: list[str | None] = []
    t_pending: list[bool] = []
    for t in txns:
        t_id.append(t.id)
        t_kind.append(t.kind)
        t_status.append(t.status)
        t_ref.append(t.reference)
        t_cat.append(t.category)
        t_tags.append(dumps(t.tags) if t.tags else None)
        t_desc.append(t.description)
        t_meta.append(dumps(t.metadata) if t.metadata else None)
        t_eff.append(instants(t.effective_at))
        t_rec.append(instants(t.recorded_at))
        t_exp.append(instants(t.expires_at))
        t_res.append(instants(t.resolved_at))
        t_parent.append(t.parent_id)
        t_hash.append(t.request_hash)
        t_req.append(None if t.request is None else dumps(t.request))
        t_pending.append(t.kind == "pending")
    return [
        t_id,
        ",".join(t_kind),
        ",".join(t_status),
        _column(t_ref),
        _column(t_cat),
        _column(t_tags),
        _column(t_desc),
        _column(t_meta),
        instants.values,
        t_eff,
        _nullable_ints(t_rec),
        _column(t_exp),
        _column(t_res),
        _column(t_parent),
        _ints(counts),
        _column(t_hash),
        _column(t_req),
        t_pending,
    ]


def _posting_refs(txns: list[PlannedTransaction]) -> list[Any]:
    """Parameters $1-$18 when the transactions are stored: only what postings take from them."""
    instants = _Instants()
    effective = [instants(t.effective_at) for t in txns]
    params: list[Any] = [None] * 18
    params[0] = [t.id for t in txns]
    params[8] = instants.values
    params[9] = effective
    params[17] = [t.kind == "pending" for t in txns]
    return params


async def insert_transactions(
    conn: asyncpg.Connection, txns: list[PlannedTransaction], counts: list[int]
) -> None:
    """Store transaction rows ahead of their postings (``counts``: postings each will have).

    Used before the account locks are taken: the postings follow in the same database
    transaction (write_planned with ``stored=True``), or it rolls back to before this insert.
    """
    params = _transaction_params(txns, counts)
    await conn.execute(_INSERT_TRANSACTIONS, *params[:17])


@dataclass(frozen=True, slots=True)
class PostingFacts:
    """The posting columns known before the accounts are locked, encoded (write_planned):
    transaction position, sequence, currency, direction, amount of every posting in order."""

    tx: str
    seq: str
    currency: str
    direction: str
    amount: str


def posting_facts(postings: list[list[tuple[str, str, int]]]) -> PostingFacts:
    """``postings``: per transaction, in order, its postings' (currency, direction, amount)."""
    tx: list[int] = []
    seq: list[int] = []
    currency: list[str] = []
    direction: list[str] = []
    amount: list[int] = []
    for position, items in enumerate(postings, 1):
        for i, (cur, side, value) in enumerate(items):
            tx.append(position)
            seq.append(i)
            currency.append(cur)
            direction.append(side)
            amount.append(value)
    return PostingFacts(
        _ints(tx), _ints(seq), ",".join(currency), ",".join(direction), _ints(amount)
    )


async def write_planned(
    conn: asyncpg.Connection,
    txns: list[PlannedTransaction],
    workspace: Workspace,
    *,
    stored: bool = False,
    facts: PostingFacts | None = None,
) -> None:
    """Insert transactions and postings, add daily volumes, store the new account totals.

    ``stored``: the transaction rows were inserted already (insert_transactions), in this
    order; only their postings, volumes and the account totals are written. ``facts``: the
    postings' columns that did not need the locks, encoded beforehand for exactly these
    transactions and postings, in this order (only the locked state is encoded here).

    One statement, one round trip, whatever the batch size, with data-modifying CTEs. Each
    column travels as one array, in whichever encoding costs least here, measured per column
    type on 2,000 rows (Python encoding + database decoding):

    - integers as array literals (text): asyncpg's binary arrays check every element's type;
    - words (kind, status, direction, currency: no commas by their validation) comma-joined;
    - UUIDs and the rare free-text columns as binary arrays, and a column that is NULL in every
      row as one NULL (``unnest`` pads it);
    - timestamps, expensive to encode and almost all equal (``now``), once per distinct value,
      with rows carrying positions; a posting takes its transaction's id, effective time and
      pending flag by position too.

    The deferred checks still see everything: the foreign keys and the postings' statement
    trigger run after the whole statement, when the sibling CTEs' transactions rows exist.

    The account totals are written as absolute values: correct only because every account in
    ``workspace`` was read under ``FOR UPDATE`` in this same transaction.
    """
    if not txns:
        await write_accounts(conn, workspace)
        return
    counts = [len(t.postings) for t in txns]
    p_tx: list[int] = []
    p_seq: list[int] = []
    p_acc: list[int] = []
    p_cur: list[str] = []
    p_dir: list[str] = []
    p_amount: list[int] = []
    p_version: list[int] = []
    p_debits: list[int | None] = []
    p_credits: list[int | None] = []
    daily: dict[tuple[int, date], list[int]] = defaultdict(lambda: [0, 0])
    for position, t in enumerate(txns, 1):
        pending = t.kind == "pending"
        day = t.effective_at.date()
        for p in t.postings:
            account = p.account
            if facts is None:
                p_tx.append(position)
                p_seq.append(p.seq)
                p_cur.append(account.currency)
                p_dir.append(p.direction)
                p_amount.append(p.amount)
            p_acc.append(account.id)
            p_version.append(p.account_version)
            p_debits.append(p.balance_debits)
            p_credits.append(p.balance_credits)
            if p.pending != pending:
                raise ValueError(f"transaction {t.id}: a {t.kind} has pending={p.pending} postings")
            if not pending:
                vol = daily[(account.id, day)]
                vol[0 if p.direction == "debit" else 1] += p.amount
    v_acc: list[int] = []
    v_day: list[str] = []
    v_debits: list[int] = []
    v_credits: list[int] = []
    for (account_id, day), (debits, credits) in daily.items():
        v_acc.append(account_id)
        v_day.append(day.isoformat())
        v_debits.append(debits)
        v_credits.append(credits)
    await conn.execute(
        _WRITE_POSTINGS_ONLY if stored else _WRITE_PLANNED,
        *(_posting_refs(txns) if stored else _transaction_params(txns, counts)),
        facts.tx if facts else _ints(p_tx),
        facts.seq if facts else _ints(p_seq),
        _ints(p_acc),
        facts.currency if facts else ",".join(p_cur),
        facts.direction if facts else ",".join(p_dir),
        facts.amount if facts else _ints(p_amount),
        _ints(p_version),
        _nullable_ints(p_debits),
        _nullable_ints(p_credits),
        _ints(v_acc),
        "{" + ",".join(v_day) + "}",
        _ints(v_debits),
        _ints(v_credits),
        *_dirty_columns(workspace),
    )


def _dirty_accounts(workspace: Workspace) -> list[AccountState]:
    dirty = [workspace.accounts[c] for c in workspace.dirty]
    workspace.dirty.clear()
    return dirty


def _dirty_columns(workspace: Workspace) -> list[str]:
    dirty = _dirty_accounts(workspace)
    return [
        _ints([a.id for a in dirty]),
        _ints([a.posted_debits for a in dirty]),
        _ints([a.posted_credits for a in dirty]),
        _ints([a.pending_debits for a in dirty]),
        _ints([a.pending_credits for a in dirty]),
        _ints([a.version for a in dirty]),
    ]


async def write_accounts(conn: asyncpg.Connection, workspace: Workspace) -> None:
    if not workspace.dirty:
        return
    columns = _dirty_columns(workspace)
    await conn.execute(
        """
        UPDATE accounts AS a SET posted_debits = u.pd, posted_credits = u.pc,
            pending_debits = u.qd, pending_credits = u.qc, version = u.v
        FROM unnest($1::text::int8[], $2::text::int8[], $3::text::int8[], $4::text::int8[],
            $5::text::int8[], $6::text::int8[]) AS u(id, pd, pc, qd, qc, v)
        WHERE a.id = u.id
        """,
        *columns,
    )


_TX_COLUMNS = """
    t.id, t.kind, t.status, t.reference, t.category, t.tags, t.description,
    t.metadata::text AS metadata_json, t.effective_at, t.recorded_at, t.expires_at,
    t.resolved_at, t.parent_id, t.request_hash, t.request::text AS request_json
"""


async def get_transaction(
    conn: asyncpg.Connection, tx_id: uuid.UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    # FOR UPDATE on a pending transaction serializes post/void/expire/reverse of it: the
    # second caller waits here and then sees the status the first one left.
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_TX_COLUMNS} FROM transactions t WHERE t.id = $1"
        + (" FOR UPDATE" if for_update else ""),
        tx_id,
    )
    return row


async def get_postings(conn: asyncpg.Connection, tx_ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT p.transaction_id, p.seq, p.account_id, a.code AS account, p.direction, p.amount,
            p.currency, p.pending
        FROM postings p JOIN accounts a ON a.id = p.account_id
        WHERE p.transaction_id = ANY($1::uuid[])
        ORDER BY p.transaction_id, p.seq
        """,
        tx_ids,
    )
    return rows


async def list_transactions(
    conn: asyncpg.Connection,
    *,
    reference: str | None,
    account: str | None,
    status: str | None,
    after: uuid.UUID | None,
    limit: int,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT {_TX_COLUMNS} FROM transactions t
        WHERE ($1::text IS NULL OR t.reference = $1)
          AND ($2::text IS NULL OR t.status = $2)
          AND ($3::uuid IS NULL OR t.id < $3)
          AND ($4::text IS NULL OR EXISTS (
              SELECT 1 FROM postings p JOIN accounts a ON a.id = p.account_id
              WHERE p.transaction_id = t.id AND a.code = $4))
        ORDER BY t.id DESC LIMIT $5
        """,
        reference,
        status,
        after,
        account,
        limit,
    )
    return rows


async def children(conn: asyncpg.Connection, tx_id: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, kind FROM transactions WHERE parent_id = $1 ORDER BY id", tx_id
    )
    return rows


async def reversed_so_far(conn: asyncpg.Connection, tx_id: uuid.UUID) -> dict[tuple[int, str], int]:
    """Amounts earlier reversals of ``tx_id`` posted, per (account id, reversal direction)."""
    rows = await conn.fetch(
        """
        SELECT p.account_id, p.direction, sum(p.amount)::numeric AS amount FROM transactions t
        JOIN postings p ON p.transaction_id = t.id
        WHERE t.parent_id = $1 AND t.kind = 'reversal'
        GROUP BY p.account_id, p.direction
        """,
        tx_id,
    )
    return {(r["account_id"], r["direction"]): int(r["amount"]) for r in rows}


async def resolve_pending(
    conn: asyncpg.Connection, tx_id: uuid.UUID, status: str, at: datetime
) -> None:
    await conn.execute(
        "UPDATE transactions SET status = $2, resolved_at = $3 WHERE id = $1", tx_id, status, at
    )


async def due_pending(conn: asyncpg.Connection, now: datetime, limit: int) -> list[uuid.UUID]:
    # SKIP LOCKED: a pending being posted or voided right now is left to that caller.
    rows = await conn.fetch(
        """
        SELECT id FROM transactions
        WHERE status = 'pending' AND expires_at <= $1
        ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
        """,
        now,
        limit,
    )
    return [r["id"] for r in rows]


async def count_pending(conn: asyncpg.Connection) -> int:
    value = await conn.fetchval("SELECT count(*) FROM transactions WHERE status = 'pending'")
    return int(value)


# ---- idempotency keys (same table and semantics as azora_common.idempotency) ----


async def claim_keys(
    conn: asyncpg.Connection,
    scope: str,
    keys: list[tuple[str, str, str]],
    now: datetime,
    retention: timedelta,
) -> set[str]:
    """Insert ``(key, hash, body_json)`` rows; return the keys this transaction now owns.

    Sorted insertion: two batches claiming overlapping keys wait in the same order. A key held
    by a concurrent uncommitted transaction blocks here until it ends (then it is a replay).
    """
    names = [k for k, _, _ in keys]
    await conn.execute(
        f"DELETE FROM {IDEMPOTENCY_TABLE} WHERE scope = $1 AND key = ANY($2::text[]) "
        "AND created_at < $3",
        scope,
        names,
        now - retention,
    )
    rows = await conn.fetch(
        f"""
        INSERT INTO {IDEMPOTENCY_TABLE} (scope, key, request_hash, request_body,
            response_status, response_body, created_at)
        SELECT $1, u.key, u.hash, u.body::jsonb, 0, '{{}}'::jsonb, $5
        FROM unnest($2::text[], $3::text[], $4::text[]) AS u(key, hash, body)
        ORDER BY u.key
        ON CONFLICT DO NOTHING RETURNING key
        """,
        scope,
        names,
        [h for _, h, _ in keys],
        [b for _, _, b in keys],
        now,
    )
    return {r["key"] for r in rows}


async def stored_keys(
    conn: asyncpg.Connection, scope: str, keys: list[str]
) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        f"SELECT key, request_hash, request_body::text AS request_json, response_status, "
        f"response_body::text AS response_json FROM {IDEMPOTENCY_TABLE} "
        "WHERE scope = $1 AND key = ANY($2::text[])",
        scope,
        keys,
    )
    return {r["key"]: r for r in rows}


async def finish_keys(
    conn: asyncpg.Connection,
    scope: str,
    done: list[tuple[str, int, str]],
    failed: list[str],
) -> None:
    if done:
        await conn.execute(
            f"""
            UPDATE {IDEMPOTENCY_TABLE} AS k SET response_status = u.status,
                response_body = u.body::jsonb
            FROM unnest($2::text[], $3::int[], $4::text[]) AS u(key, status, body)
            WHERE k.scope = $1 AND k.key = u.key
            """,
            scope,
            [k for k, _, _ in done],
            [s for _, s, _ in done],
            [b for _, _, b in done],
        )
    if failed:
        # A failed request leaves no key behind, so the client may retry it (as in azora_common).
        await conn.execute(
            f"DELETE FROM {IDEMPOTENCY_TABLE} WHERE scope = $1 AND key = ANY($2::text[])",
            scope,
            failed,
        )


# ---- balances and statements ----


async def balance_as_of(
    conn: asyncpg.Connection, account_ids: list[int], as_of: datetime
) -> dict[int, tuple[int, int]]:
    """Posted (debits, credits) per account counting postings effective at or before ``as_of``.

    Current totals minus the daily volumes of later days minus the postings later on the same
    day: the cost grows with the days after ``as_of``, not with the account's history. One
    statement, one snapshot, so the three parts agree.
    """
    day = as_of.date()
    # On the last representable day there is no next midnight; no posting can be later anyway.
    next_midnight = (
        datetime.combine(day + timedelta(days=1), datetime.min.time(), as_of.tzinfo)
        if day < date.max
        else datetime.max.replace(tzinfo=as_of.tzinfo)
    )
    rows = await conn.fetch(
        """
        SELECT a.id,
            a.posted_debits - coalesce(v.debits, 0) - coalesce(p.debits, 0) AS debits,
            a.posted_credits - coalesce(v.credits, 0) - coalesce(p.credits, 0) AS credits
        FROM accounts a
        LEFT JOIN LATERAL (
            SELECT sum(debits) AS debits, sum(credits) AS credits FROM account_daily_volumes
            WHERE account_id = a.id AND day > $2
        ) v ON true
        LEFT JOIN LATERAL (
            SELECT sum(amount) FILTER (WHERE direction = 'debit') AS debits,
                   sum(amount) FILTER (WHERE direction = 'credit') AS credits
            FROM postings
            WHERE account_id = a.id AND NOT pending AND effective_at > $3 AND effective_at < $4
        ) p ON true
        WHERE a.id = ANY($1::bigint[])
        """,
        account_ids,
        day,
        as_of,
        next_midnight,
    )
    return {r["id"]: (int(r["debits"]), int(r["credits"])) for r in rows}


async def statement(
    conn: asyncpg.Connection, account_id: int, after: tuple[int, str, int] | None, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT p.transaction_id, p.seq, p.direction, p.amount, p.currency, p.effective_at,
            p.account_version, p.balance_debits, p.balance_credits, t.kind, t.reference,
            t.description, t.category, t.recorded_at
        FROM postings p JOIN transactions t ON t.id = p.transaction_id
        WHERE p.account_id = $1 AND NOT p.pending
          AND ($2::bigint IS NULL
               OR (p.account_version, p.transaction_id, p.seq) > ($2, $3::uuid, $4::smallint))
        ORDER BY p.account_version, p.transaction_id, p.seq
        LIMIT $5
        """,
        account_id,
        after[0] if after else None,
        after[1] if after else None,
        after[2] if after else None,
        limit,
    )
    return rows


# ---- reports ----


async def all_accounts(conn: asyncpg.Connection, currency: str | None) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts "
        "WHERE ($1::text IS NULL OR currency = $1) ORDER BY code",
        currency,
    )
    return rows


async def totals_by(
    conn: asyncpg.Connection, group: str, start: datetime | None, end: datetime | None
) -> list[asyncpg.Record]:
    """Posted volume (sum of debits) and transaction count per category or tag and currency."""
    key = "t.category" if group == "category" else "tag"
    join = "" if group == "category" else "CROSS JOIN LATERAL unnest(t.tags) AS tag"
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT {key} AS key, p.currency, sum(p.amount)::numeric AS amount,
            count(DISTINCT t.id) AS transactions
        FROM transactions t {join}
        JOIN postings p ON p.transaction_id = t.id AND p.direction = 'debit' AND NOT p.pending
        WHERE ($1::timestamptz IS NULL OR t.effective_at >= $1)
          AND ($2::timestamptz IS NULL OR t.effective_at < $2)
        GROUP BY 1, 2 ORDER BY 1 NULLS LAST, 2
        """,
        start,
        end,
    )
    return rows


# ---- verification ----


async def verify_queries(conn: asyncpg.Connection) -> dict[str, list[asyncpg.Record]]:
    """Recompute everything from postings; each query returns only the rows that disagree."""
    found: dict[str, list[asyncpg.Record]] = {}
    found["account_totals"] = await conn.fetch(
        """
        WITH sums AS (
            SELECT p.account_id,
                coalesce(sum(p.amount) FILTER (WHERE NOT p.pending AND p.direction = 'debit'), 0)
                    AS posted_debits,
                coalesce(sum(p.amount) FILTER (WHERE NOT p.pending AND p.direction = 'credit'), 0)
                    AS posted_credits,
                coalesce(sum(p.amount) FILTER (
                    WHERE p.pending AND t.status = 'pending' AND p.direction = 'debit'), 0)
                    AS pending_debits,
                coalesce(sum(p.amount) FILTER (
                    WHERE p.pending AND t.status = 'pending' AND p.direction = 'credit'), 0)
                    AS pending_credits
            FROM postings p JOIN transactions t ON t.id = p.transaction_id
            GROUP BY p.account_id
        )
        SELECT a.code, a.posted_debits, a.posted_credits, a.pending_debits, a.pending_credits,
            coalesce(s.posted_debits, 0) AS expected_posted_debits,
            coalesce(s.posted_credits, 0) AS expected_posted_credits,
            coalesce(s.pending_debits, 0) AS expected_pending_debits,
            coalesce(s.pending_credits, 0) AS expected_pending_credits
        FROM accounts a LEFT JOIN sums s ON s.account_id = a.id
        WHERE (a.posted_debits, a.posted_credits, a.pending_debits, a.pending_credits)
            IS DISTINCT FROM (coalesce(s.posted_debits, 0), coalesce(s.posted_credits, 0),
                coalesce(s.pending_debits, 0), coalesce(s.pending_credits, 0))
        LIMIT 100
        """
    )
    found["unbalanced_transactions"] = await conn.fetch(
        """
        SELECT transaction_id, currency FROM postings GROUP BY transaction_id, currency
        HAVING sum(CASE WHEN direction = 'debit' THEN amount::numeric ELSE -amount END) <> 0
        LIMIT 100
        """
    )
    found["currency_totals"] = await conn.fetch(
        """
        SELECT currency, sum(posted_debits::numeric) AS debits,
            sum(posted_credits::numeric) AS credits,
            sum(pending_debits::numeric) AS pending_debits,
            sum(pending_credits::numeric) AS pending_credits
        FROM accounts GROUP BY currency
        HAVING sum(posted_debits::numeric) <> sum(posted_credits::numeric)
            OR sum(pending_debits::numeric) <> sum(pending_credits::numeric)
        """
    )
    found["flags"] = await conn.fetch(
        """
        SELECT code FROM accounts
        WHERE (debits_must_not_exceed_credits
               AND posted_debits + pending_debits > posted_credits)
           OR (credits_must_not_exceed_debits
               AND posted_credits + pending_credits > posted_debits)
           OR (overdraft_limit IS NOT NULL AND (
               CASE WHEN type IN ('asset', 'expense')
                   THEN posted_debits - posted_credits - pending_credits
                   ELSE posted_credits - posted_debits - pending_debits END) < -overdraft_limit)
        LIMIT 100
        """
    )
    found["running_balances"] = await conn.fetch(
        """
        SELECT a.code FROM accounts a
        JOIN LATERAL (
            SELECT balance_debits, balance_credits FROM postings
            WHERE account_id = a.id AND NOT pending
            ORDER BY account_version DESC, transaction_id DESC, seq DESC LIMIT 1
        ) last ON true
        WHERE (last.balance_debits, last.balance_credits)
            IS DISTINCT FROM (a.posted_debits, a.posted_credits)
        LIMIT 100
        """
    )
    found["daily_volumes"] = await conn.fetch(
        """
        WITH d AS (
            SELECT account_id, (effective_at AT TIME ZONE 'UTC')::date AS day,
                coalesce(sum(amount) FILTER (WHERE direction = 'debit'), 0) AS debits,
                coalesce(sum(amount) FILTER (WHERE direction = 'credit'), 0) AS credits
            FROM postings WHERE NOT pending GROUP BY 1, 2
        )
        SELECT coalesce(d.account_id, v.account_id) AS account_id, coalesce(d.day, v.day) AS day
        FROM d FULL JOIN account_daily_volumes v ON v.account_id = d.account_id AND v.day = d.day
        WHERE (d.debits, d.credits) IS DISTINCT FROM (v.debits, v.credits)
            AND NOT (d.account_id IS NULL AND v.debits = 0 AND v.credits = 0)
        LIMIT 100
        """
    )
    found["resolved_pending"] = await conn.fetch(
        """
        SELECT t.id FROM transactions t
        WHERE t.kind = 'pending' AND t.status = 'posted'
          AND NOT EXISTS (SELECT 1 FROM transactions c WHERE c.parent_id = t.id
                          AND c.kind = 'post')
        LIMIT 100
        """
    )
    return found


async def verify_counts(conn: asyncpg.Connection) -> dict[str, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM accounts) AS accounts, "
        "(SELECT count(*) FROM transactions) AS transactions, "
        "(SELECT count(*) FROM postings) AS postings"
    )
    assert row is not None
    return {k: int(row[k]) for k in ("accounts", "transactions", "postings")}
