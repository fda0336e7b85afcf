"""Check inserted postings in one pass over the statement's rows; detailed checks on failure.

The statement trigger of ``postings`` (0003) ran four queries over every INSERT's transition
table: account references, transaction references, balance per currency (summing amounts as
``numeric``), completeness. A valid 1,000-transaction batch paid for all four while its account
locks were held. Now, after the account reference check (first, as before, but probing each
distinct account once instead of once per posting), one query finds
whether anything else is wrong: one aggregation per transaction and currency with integer sums
(which PostgreSQL accumulates in 128 bits), one per transaction, joined to ``transactions``.
Only when it finds something do the original queries run, in the original order, so the error
raised (SQLSTATE, constraint name, message) is exactly the one 0003 raised.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACCOUNTS_CHECK = """
    SELECT n.account_id, n.currency INTO bad
    FROM (SELECT DISTINCT account_id, currency FROM new_postings) n
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
"""

_ONE_PASS = """
    PERFORM 1
    FROM (
        SELECT c.transaction_id, bool_or(c.imbalance <> 0) AS unbalanced, sum(c.n) AS n,
               max(c.max_seq) AS max_seq, bool_and(c.all_pending) AS all_pending,
               bool_or(c.any_pending) AS any_pending
        FROM (
            SELECT transaction_id,
                   sum(CASE WHEN direction = 'debit' THEN amount ELSE -amount END) AS imbalance,
                   count(*) AS n, max(seq) AS max_seq, bool_and(pending) AS all_pending,
                   bool_or(pending) AS any_pending
            FROM new_postings GROUP BY transaction_id, currency
        ) c
        GROUP BY c.transaction_id
    ) x
    LEFT JOIN transactions t ON t.id = x.transaction_id
    WHERE t.id IS NULL OR x.unbalanced OR x.n <> t.posting_count
        OR x.max_seq >= t.posting_count
        OR x.all_pending <> (t.kind = 'pending') OR x.any_pending <> (t.kind = 'pending')
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
"""


def _previous_function() -> str:
    """0003's version of the function (its module name starts with a digit: load by path)."""
    path = Path(__file__).with_name("0003_set_based_posting_checks.py")
    spec = importlib.util.spec_from_file_location("ledger_migration_0003", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text: str = module._BALANCED_V3
    return text


# 0003's checks after its account check, unchanged: they now run only to name the error.
_V3 = _previous_function()
_DETAILED_CHECKS = (
    "\n" + _V3[_V3.index("    SELECT n.transaction_id INTO bad") : _V3.index("    RETURN NULL;")]
)

_BALANCED_V4 = (
    """
CREATE OR REPLACE FUNCTION ledger_postings_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
"""
    + _ACCOUNTS_CHECK
    + "    -- Everything else in one pass; the detailed checks only name what is wrong.\n"
    + _ONE_PASS
    + _DETAILED_CHECKS
    + """    RETURN NULL;
END $$
"""
)


def upgrade() -> None:
    op.get_bind().exec_driver_sql(_BALANCED_V4)


def downgrade() -> None:
    op.get_bind().exec_driver_sql(_V3)
