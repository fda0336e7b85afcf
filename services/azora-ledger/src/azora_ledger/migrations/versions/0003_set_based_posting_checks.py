"""Check postings' references once per statement instead of once per row.

The two foreign keys of ``postings`` (to its transaction, and to its account *with* the
posting's currency) ran two row-level RI triggers per posting: for a 1,000-transaction batch
(2,000 postings) they were about half of the database time of the batch's write, and the
batch holds its account locks for all of it. The same rules now run set-based in the
statement trigger that already checks every inserted set of postings (one anti-join each over
the transition table), raising the same SQLSTATE (``foreign_key_violation``) under the same
constraint names, so callers and the API see no difference.

What the foreign keys also did for the referenced side is kept by triggers:

- accounts are never deleted or truncated (they are closed instead), and an account's ``id``
  and ``currency`` never change (the ``WHEN`` clause makes the check free for the balance
  updates, which never set those columns);
- transactions already refuse DELETE/TRUNCATE and any change of ``id`` (0002).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BALANCED_V3 = """
CREATE OR REPLACE FUNCTION ledger_postings_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    -- References first (what the foreign keys checked row by row): the account exists and
    -- holds the posting's currency; the transaction exists.
    SELECT n.account_id, n.currency INTO bad
    FROM new_postings n
    WHERE NOT EXISTS (
        SELECT 1 FROM accounts a WHERE a.id = n.account_id AND a.currency = n.currency
    )
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'posting on account % in %: no such account in that currency',
            bad.account_id, bad.currency
            USING ERRCODE = 'foreign_key_violation', TABLE = 'postings',
                CONSTRAINT = 'fk_postings_account_id_accounts';
    END IF;
    SELECT n.transaction_id INTO bad
    FROM new_postings n
    WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.id = n.transaction_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'posting of transaction %: no such transaction', bad.transaction_id
            USING ERRCODE = 'foreign_key_violation', TABLE = 'postings',
                CONSTRAINT = 'fk_postings_transaction_id_transactions';
    END IF;
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
END $$
"""

_BALANCED_V2 = _BALANCED_V3.replace(
    _BALANCED_V3[
        _BALANCED_V3.index("    -- References first") : _BALANCED_V3.index(
            "    SELECT n.transaction_id, n.currency"
        )
    ],
    "",
)

UPGRADE = [
    "ALTER TABLE postings DROP CONSTRAINT fk_postings_account_id_accounts",
    "ALTER TABLE postings DROP CONSTRAINT fk_postings_transaction_id_transactions",
    _BALANCED_V3,
    # The referenced side: accounts are closed, never removed, and keep their id and currency.
    """
    CREATE FUNCTION ledger_account_keys_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'ledger accounts are never removed and keep their id and currency: '
            '% refused', TG_OP
            USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'ledger_immutable';
    END $$
    """,
    "CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts "
    "FOR EACH ROW EXECUTE FUNCTION ledger_account_keys_fixed()",
    "CREATE TRIGGER accounts_no_truncate BEFORE TRUNCATE ON accounts "
    "FOR EACH STATEMENT EXECUTE FUNCTION ledger_account_keys_fixed()",
    "CREATE TRIGGER accounts_keys_fixed BEFORE UPDATE OF id, currency ON accounts "
    "FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.currency IS DISTINCT FROM "
    "NEW.currency) EXECUTE FUNCTION ledger_account_keys_fixed()",
]

DOWNGRADE = [
    "DROP TRIGGER accounts_keys_fixed ON accounts",
    "DROP TRIGGER accounts_no_truncate ON accounts",
    "DROP TRIGGER accounts_no_delete ON accounts",
    "DROP FUNCTION ledger_account_keys_fixed()",
    _BALANCED_V2,
    "ALTER TABLE postings ADD CONSTRAINT fk_postings_transaction_id_transactions "
    "FOREIGN KEY (transaction_id) REFERENCES transactions (id)",
    "ALTER TABLE postings ADD CONSTRAINT fk_postings_account_id_accounts "
    "FOREIGN KEY (account_id, currency) REFERENCES accounts (id, currency)",
]


def upgrade() -> None:
    bind = op.get_bind()
    for statement in UPGRADE:
        bind.exec_driver_sql(statement)


def downgrade() -> None:
    bind = op.get_bind()
    for statement in DOWNGRADE:
        bind.exec_driver_sql(statement)
