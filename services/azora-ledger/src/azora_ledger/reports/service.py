"""Financial reports computed from the ledger: trial balance, balance sheet, income statement,
totals by category and tag. Every report works per currency (amounts of different currencies
never add up) and as of a point in effective time."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from azora_ledger.accounts import repository as accounts_repo
from azora_ledger.domain import DEBIT_NORMAL
from azora_ledger.reports import repository as repo
from azora_ledger.repository import driver_connection


async def _balances(
    conn: asyncpg.Connection, currency: str | None, as_of: datetime | None
) -> list[dict[str, Any]]:
    """Posted (debits, credits) per account, current or as of a time."""
    accounts = await repo.all_accounts(conn, currency)
    at: dict[int, tuple[int, int]] = {}
    if as_of is not None and accounts:
        at = await accounts_repo.balance_as_of(conn, [a["id"] for a in accounts], as_of)
    out = []
    for a in accounts:
        debits, credits = at.get(a["id"], (a["posted_debits"], a["posted_credits"]))
        out.append(
            {
                "code": a["code"],
                "type": a["type"],
                "currency": a["currency"],
                "debits": debits,
                "credits": credits,
            }
        )
    return out


async def trial_balance(
    session: AsyncSession, as_of: datetime | None, currency: str | None
) -> dict[str, Any]:
    conn = await driver_connection(session)
    rows = []
    totals: dict[str, dict[str, Any]] = {}
    for b in await _balances(conn, currency, as_of):
        net = b["debits"] - b["credits"]
        row = {
            "account": b["code"],
            "type": b["type"],
            "currency": b["currency"],
            "debit": max(net, 0),
            "credit": max(-net, 0),
        }
        rows.append(row)
        t = totals.setdefault(b["currency"], {"currency": b["currency"], "debit": 0, "credit": 0})
        t["debit"] += row["debit"]
        t["credit"] += row["credit"]
    for t in totals.values():
        t["balanced"] = t["debit"] == t["credit"]
    return {
        "report": "trial-balance",
        "as_of": as_of,
        "rows": rows,
        "totals": sorted(totals.values(), key=lambda t: t["currency"]),
    }


async def balance_sheet(
    session: AsyncSession, as_of: datetime | None, currency: str | None
) -> dict[str, Any]:
    conn = await driver_connection(session)
    per: dict[str, dict[str, Any]] = {}
    for b in await _balances(conn, currency, as_of):
        net = b["debits"] - b["credits"]
        normal = net if b["type"] in DEBIT_NORMAL else -net
        s = per.setdefault(
            b["currency"],
            {
                "currency": b["currency"],
                "assets": 0,
                "liabilities": 0,
                "equity": 0,
                "revenue": 0,
                "expenses": 0,
            },
        )
        key = {
            "asset": "assets",
            "liability": "liabilities",
            "equity": "equity",
            "revenue": "revenue",
            "expense": "expenses",
        }[b["type"]]
        s[key] += normal
    rows = []
    for s in sorted(per.values(), key=lambda s: s["currency"]):
        # Without period closing entries, earnings to date sit in revenue and expense accounts.
        earnings = s.pop("revenue") - s.pop("expenses")
        s["current_earnings"] = earnings
        s["liabilities_and_equity"] = s["liabilities"] + s["equity"] + earnings
        s["balanced"] = s["assets"] == s["liabilities_and_equity"]
        rows.append(s)
    return {"report": "balance-sheet", "as_of": as_of, "rows": rows}


async def income_statement(
    session: AsyncSession,
    start: datetime | None,
    end: datetime | None,
    currency: str | None,
) -> dict[str, Any]:
    """Movement of revenue and expense accounts effective after ``start`` up to ``end``."""
    conn = await driver_connection(session)
    later = await _balances(conn, currency, end)
    earlier = await _balances(conn, currency, start) if start is not None else None
    rows = []
    totals: dict[str, dict[str, Any]] = {}
    for i, b in enumerate(later):
        if b["type"] not in ("revenue", "expense"):
            continue
        debits, credits = b["debits"], b["credits"]
        if earlier is not None:
            debits -= earlier[i]["debits"]
            credits -= earlier[i]["credits"]
        amount = credits - debits if b["type"] == "revenue" else debits - credits
        rows.append(
            {"account": b["code"], "type": b["type"], "currency": b["currency"], "amount": amount}
        )
        t = totals.setdefault(
            b["currency"], {"currency": b["currency"], "revenue": 0, "expenses": 0}
        )
        t["revenue" if b["type"] == "revenue" else "expenses"] += amount
    for t in totals.values():
        t["net_income"] = t["revenue"] - t["expenses"]
    return {
        "report": "income-statement",
        "from": start,
        "to": end,
        "rows": rows,
        "totals": sorted(totals.values(), key=lambda t: t["currency"]),
    }


async def totals(
    session: AsyncSession, group: str, start: datetime | None, end: datetime | None
) -> dict[str, Any]:
    conn = await driver_connection(session)
    rows = [
        {
            group: r["key"],
            "currency": r["currency"],
            "amount": int(r["amount"]),
            "transactions": r["transactions"],
        }
        for r in await repo.totals_by(conn, group, start, end)
    ]
    return {"report": f"totals-by-{group}", "from": start, "to": end, "rows": rows}


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()
