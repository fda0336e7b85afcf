"""SQL of transactions: categories, references, idempotency keys of the single and batch
writers, the one-statement write of planned transactions (and its speculative half), and
reads of transactions and their postings."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from azora_common.idempotency import IDEMPOTENCY_TABLE
from azora_ledger.domain import AccountState, PlannedTransaction, Workspace
from azora_ledger.repository import dumps

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


# ---- speculative transaction rows (see transactions.service.store_speculatively) ----


async def begin_speculation(conn: asyncpg.Connection) -> None:
    await conn.execute("SAVEPOINT ledger_speculative")


async def undo_speculation(conn: asyncpg.Connection) -> None:
    """Back to before the speculative rows; also drops the account locks taken since."""
    await conn.execute("ROLLBACK TO SAVEPOINT ledger_speculative")


# ---- writing planned transactions ----

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
        # A server error leaves no key behind, so the client may retry it (as in azora_common);
        # refusals are stored like successes (``done``).
        await conn.execute(
            f"DELETE FROM {IDEMPOTENCY_TABLE} WHERE scope = $1 AND key = ANY($2::text[])",
            scope,
            failed,
        )
