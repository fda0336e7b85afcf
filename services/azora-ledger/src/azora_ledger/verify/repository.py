"""SQL of verification: recompute everything from the postings, return what disagrees."""

from __future__ import annotations

import asyncpg


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
