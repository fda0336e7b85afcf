"""Ledger schema: accounts, categories, transactions, postings, daily volumes.

The database enforces the invariants on its own, so a bug in Python cannot corrupt the books:

- every transaction balances per currency (statement trigger over the inserted postings),
- a transaction's postings are inserted together, once (count + sequence check),
- a posting's currency is its account's currency (composite foreign key),
- postings are immutable (UPDATE/DELETE/TRUNCATE raise), transactions too except the one-way
  status change of a pending transaction,
- balance flags and overdraft limits hold on the running totals (CHECK constraints).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import re
from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_CATEGORIES = [
    ("adjustment", "Adjustment"),
    ("deposit", "Deposit"),
    ("discount", "Discount"),
    ("enrollment", "Enrollment"),
    ("fee", "Fee"),
    ("opening-balance", "Opening balance"),
    ("other", "Other"),
    ("payment", "Payment"),
    ("payout", "Payout"),
    ("refund", "Refund"),
    ("reversal", "Reversal"),
    ("transfer", "Transfer"),
    ("tuition", "Tuition"),
    ("withdrawal", "Withdrawal"),
]

UPGRADE = r"""
CREATE TABLE accounts (
    id bigint GENERATED ALWAYS AS IDENTITY,
    code text NOT NULL,
    name text,
    type text NOT NULL,
    currency text NOT NULL,
    scale smallint NOT NULL,
    debits_must_not_exceed_credits boolean NOT NULL DEFAULT false,
    credits_must_not_exceed_debits boolean NOT NULL DEFAULT false,
    overdraft_limit bigint,
    posted_debits bigint NOT NULL DEFAULT 0,
    posted_credits bigint NOT NULL DEFAULT 0,
    pending_debits bigint NOT NULL DEFAULT 0,
    pending_credits bigint NOT NULL DEFAULT 0,
    version bigint NOT NULL DEFAULT 0,
    closed boolean NOT NULL DEFAULT false,
    metadata jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_accounts PRIMARY KEY (id),
    CONSTRAINT uq_accounts_code UNIQUE (code),
    -- Target of the postings (account_id, currency) foreign key.
    CONSTRAINT uq_accounts_id_currency UNIQUE (id, currency),
    CONSTRAINT ck_accounts_type
        CHECK (type IN ('asset', 'liability', 'equity', 'revenue', 'expense')),
    CONSTRAINT ck_accounts_scale CHECK (scale BETWEEN 0 AND 18),
    CONSTRAINT ck_accounts_totals_non_negative CHECK (
        posted_debits >= 0 AND posted_credits >= 0 AND pending_debits >= 0 AND pending_credits >= 0
    ),
    CONSTRAINT ck_accounts_one_flag
        CHECK (NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)),
    CONSTRAINT ck_accounts_overdraft_limit_non_negative CHECK (overdraft_limit >= 0),
    -- The balance flags, TigerBeetle semantics: pending amounts count against the limit.
    CONSTRAINT ck_accounts_debits_must_not_exceed_credits CHECK (
        NOT debits_must_not_exceed_credits OR posted_debits + pending_debits <= posted_credits
    ),
    CONSTRAINT ck_accounts_credits_must_not_exceed_debits CHECK (
        NOT credits_must_not_exceed_debits OR posted_credits + pending_credits <= posted_debits
    ),
    -- Available balance in the account's normal direction may not go below -overdraft_limit.
    CONSTRAINT ck_accounts_overdraft_limit CHECK (
        overdraft_limit IS NULL OR (
            CASE WHEN type IN ('asset', 'expense')
                THEN posted_debits - posted_credits - pending_credits
                ELSE posted_credits - posted_debits - pending_debits
            END
        ) >= -overdraft_limit
    )
);

CREATE TABLE categories (
    code text NOT NULL,
    name text NOT NULL,
    description text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_categories PRIMARY KEY (code),
    CONSTRAINT ck_categories_code CHECK (code ~ '^[a-z0-9][a-z0-9_.:-]{0,63}$')
);

CREATE TABLE transactions (
    id uuid NOT NULL,
    kind text NOT NULL,
    status text NOT NULL,
    reference text,
    category text,
    tags text[] NOT NULL DEFAULT '{}',
    description text,
    metadata jsonb NOT NULL DEFAULT '{}',
    effective_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    resolved_at timestamptz,
    parent_id uuid,
    posting_count smallint NOT NULL,
    -- The canonical request that created it: a replay of the same reference is compared to it.
    request_hash text,
    request jsonb,
    CONSTRAINT pk_transactions PRIMARY KEY (id),
    CONSTRAINT uq_transactions_reference UNIQUE (reference),
    CONSTRAINT fk_transactions_category_categories FOREIGN KEY (category)
        REFERENCES categories (code),
    CONSTRAINT fk_transactions_parent_id_transactions FOREIGN KEY (parent_id)
        REFERENCES transactions (id),
    CONSTRAINT ck_transactions_kind CHECK (kind IN ('transfer', 'pending', 'post', 'reversal')),
    CONSTRAINT ck_transactions_status
        CHECK (status IN ('posted', 'pending', 'voided', 'expired')),
    CONSTRAINT ck_transactions_only_pending_resolves CHECK (kind = 'pending' OR status = 'posted'),
    CONSTRAINT ck_transactions_parent
        CHECK ((kind IN ('post', 'reversal')) = (parent_id IS NOT NULL)),
    CONSTRAINT ck_transactions_posting_count CHECK (posting_count BETWEEN 2 AND 1000)
);
CREATE INDEX ix_transactions_pending_expiry ON transactions (expires_at)
    WHERE status = 'pending';
CREATE INDEX ix_transactions_parent_id ON transactions (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX ix_transactions_effective_at ON transactions (effective_at);

CREATE TABLE postings (
    transaction_id uuid NOT NULL,
    seq smallint NOT NULL,
    account_id bigint NOT NULL,
    currency text NOT NULL,
    direction text NOT NULL,
    amount bigint NOT NULL,
    pending boolean NOT NULL,
    effective_at timestamptz NOT NULL,
    -- The account's version after this posting: orders the account statement.
    account_version bigint NOT NULL,
    -- The account's posted running totals after this posting (NULL for pending postings).
    balance_debits bigint,
    balance_credits bigint,
    CONSTRAINT pk_postings PRIMARY KEY (transaction_id, seq),
    CONSTRAINT fk_postings_transaction_id_transactions FOREIGN KEY (transaction_id)
        REFERENCES transactions (id),
    -- A posting's currency is its account's currency, enforced by the database.
    CONSTRAINT fk_postings_account_id_accounts FOREIGN KEY (account_id, currency)
        REFERENCES accounts (id, currency),
    CONSTRAINT ck_postings_direction CHECK (direction IN ('debit', 'credit')),
    CONSTRAINT ck_postings_amount_positive CHECK (amount > 0),
    CONSTRAINT ck_postings_seq CHECK (seq >= 0),
    CONSTRAINT ck_postings_running_balance CHECK (
        pending = (balance_debits IS NULL) AND pending = (balance_credits IS NULL)
    )
);
CREATE INDEX ix_postings_account_version ON postings (account_id, account_version);
CREATE INDEX ix_postings_account_effective ON postings (account_id, effective_at)
    WHERE NOT pending;

-- Posted volume per account and UTC day of effective time: point-in-time balances subtract
-- the days after the instant from the current totals instead of summing all history.
CREATE TABLE account_daily_volumes (
    account_id bigint NOT NULL,
    day date NOT NULL,
    debits bigint NOT NULL DEFAULT 0,
    credits bigint NOT NULL DEFAULT 0,
    CONSTRAINT pk_account_daily_volumes PRIMARY KEY (account_id, day),
    CONSTRAINT fk_account_daily_volumes_account_id_accounts FOREIGN KEY (account_id)
        REFERENCES accounts (id)
);

CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger % are immutable: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'ledger_immutable';
END $$;

CREATE TRIGGER postings_immutable BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER transactions_no_delete BEFORE DELETE ON transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER transactions_no_truncate BEFORE TRUNCATE ON transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- A transaction row never changes, except that a pending one resolves exactly once.
CREATE FUNCTION ledger_transaction_resolve_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'pending'
        OR NEW.status NOT IN ('posted', 'voided', 'expired')
        OR NEW.resolved_at IS NULL
        OR ROW(NEW.id, NEW.kind, NEW.reference, NEW.category, NEW.tags, NEW.description,
               NEW.metadata, NEW.effective_at, NEW.recorded_at, NEW.expires_at, NEW.parent_id,
               NEW.posting_count, NEW.request_hash, NEW.request)
           IS DISTINCT FROM
           ROW(OLD.id, OLD.kind, OLD.reference, OLD.category, OLD.tags, OLD.description,
               OLD.metadata, OLD.effective_at, OLD.recorded_at, OLD.expires_at, OLD.parent_id,
               OLD.posting_count, OLD.request_hash, OLD.request)
    THEN
        RAISE EXCEPTION 'ledger transaction %: only a pending transaction may resolve, once', OLD.id
            USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'ledger_immutable';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER transactions_resolve_only BEFORE UPDATE ON transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_transaction_resolve_only();

-- Runs once per INSERT statement over all rows it inserted (cheap for batches), so the
-- postings of one transaction must arrive in one statement: exactly posting_count rows with
-- seq 0..posting_count-1, balanced per currency, pending exactly when the transaction is.
CREATE FUNCTION ledger_postings_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.transaction_id, n.currency INTO bad
    FROM new_postings n
    GROUP BY n.transaction_id, n.currency
    HAVING sum(CASE WHEN n.direction = 'debit' THEN n.amount::numeric ELSE 0 END)
        <> sum(CASE WHEN n.direction = 'credit' THEN n.amount::numeric ELSE 0 END)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance in %',
            bad.transaction_id, bad.currency
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_postings_balanced';
    END IF;
    SELECT t.id INTO bad
    FROM (
        SELECT transaction_id, count(*) AS n, max(seq) AS max_seq,
               bool_and(pending) AS all_pending, bool_or(pending) AS any_pending
        FROM new_postings GROUP BY transaction_id
    ) n
    JOIN transactions t ON t.id = n.transaction_id
    WHERE n.n <> t.posting_count OR n.max_seq >= t.posting_count
        OR n.all_pending <> (t.kind = 'pending') OR n.any_pending <> (t.kind = 'pending')
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction %: postings must be inserted together, once', bad.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_postings_complete';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER postings_balanced AFTER INSERT ON postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_postings_balanced();
"""

DOWNGRADE = """
DROP TABLE account_daily_volumes;
DROP TABLE postings;
DROP TABLE transactions;
DROP TABLE categories;
DROP TABLE accounts;
DROP FUNCTION ledger_postings_balanced();
DROP FUNCTION ledger_transaction_resolve_only();
DROP FUNCTION ledger_refuse_change();
"""


def _run(script: str) -> None:
    # asyncpg prepares each statement, so a script runs one statement at a time; a statement
    # ends at a ';' that closes a line followed by a top-level keyword (not inside a $$ body).
    bind = op.get_bind()
    for statement in re.split(r";\s*\n(?=CREATE|DROP|INSERT|--)", script.strip()):
        bind.exec_driver_sql(statement.strip().rstrip(";"))


def upgrade() -> None:
    _run(UPGRADE)
    values = ", ".join(f"('{code}', '{name}')" for code, name in DEFAULT_CATEGORIES)
    _run(f"INSERT INTO categories (code, name) VALUES {values}")


def downgrade() -> None:
    _run(DOWNGRADE)
