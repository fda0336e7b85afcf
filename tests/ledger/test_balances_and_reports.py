"""Point-in-time balances, statements, reports on a known fixture (JSON and CSV)."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from tests.ledger.conftest import open_account, transfer

CUR = "RPT_TEST"  # a custom asset: nothing else in the database uses it


@pytest.fixture
async def fixture_books(client: httpx.AsyncClient) -> httpx.AsyncClient:
    for code, type_ in [
        ("r:assets:bank", "asset"),
        ("r:assets:receivables", "asset"),
        ("r:liabilities:deferred", "liability"),
        ("r:equity:capital", "equity"),
        ("r:revenue:tuition", "revenue"),
        ("r:expenses:rent", "expense"),
    ]:
        await open_account(client, code, type_, currency=CUR, scale=2)
    entries = [
        ("r:assets:bank", "r:equity:capital", 100_000, "2026-01-01T09:00:00Z", "opening-balance"),
        ("r:assets:receivables", "r:revenue:tuition", 30_000, "2026-01-10T12:00:00Z", "tuition"),
        ("r:assets:bank", "r:assets:receivables", 20_000, "2026-01-20T12:00:00Z", "payment"),
        ("r:expenses:rent", "r:assets:bank", 15_000, "2026-02-01T08:00:00Z", "fee"),
        ("r:assets:bank", "r:liabilities:deferred", 5_000, "2026-02-03T08:00:00Z", "deposit"),
        # Backdated: recorded last, effective in January.
        ("r:assets:receivables", "r:revenue:tuition", 7_000, "2026-01-15T00:00:00Z", "tuition"),
    ]
    for debit, credit, amount, at, category in entries:
        resp = await client.post(
            "/v1/transactions",
            json=transfer(
                debit,
                credit,
                amount,
                CUR,
                effective_at=at,
                category=category,
                tags=["fixture", category],
            ),
        )
        assert resp.status_code == 201, resp.text
    return client


async def test_as_of_counts_backdated_entries(fixture_books: httpx.AsyncClient) -> None:
    async def posted(code: str, at: str) -> int:
        resp = await fixture_books.get(f"/v1/accounts/{code}/balances", params={"as_of": at})
        assert resp.status_code == 200, resp.text
        value: int = resp.json()["posted"]["balance"]
        return value

    assert await posted("r:revenue:tuition", "2026-01-09T23:59:59Z") == 0
    assert await posted("r:revenue:tuition", "2026-01-10T12:00:00Z") == 30_000
    assert await posted("r:revenue:tuition", "2026-01-15T00:00:00Z") == 37_000
    assert await posted("r:assets:bank", "2026-01-31T23:59:59Z") == 120_000
    assert await posted("r:assets:bank", "2026-02-01T08:00:00Z") == 105_000
    assert await posted("r:assets:bank", "2030-01-01T00:00:00+02:00") == 110_000
    assert await posted("r:assets:bank", "2025-12-31T00:00:00Z") == 0


async def test_statement_has_running_balance_and_pages(fixture_books: httpx.AsyncClient) -> None:
    first = await fixture_books.get("/v1/accounts/r:assets:bank/statement", params={"limit": 2})
    body = first.json()
    assert [i["balance"]["balance"] for i in body["items"]] == [100_000, 120_000]
    rest = await fixture_books.get(
        "/v1/accounts/r:assets:bank/statement", params={"cursor": body["next_cursor"]}
    )
    assert [i["balance"]["balance"] for i in rest.json()["items"]] == [105_000, 110_000]
    assert rest.json()["next_cursor"] is None
    bad = await fixture_books.get("/v1/accounts/r:assets:bank/statement", params={"cursor": "x"})
    assert bad.status_code == 422


async def test_trial_balance(fixture_books: httpx.AsyncClient) -> None:
    resp = await fixture_books.get("/v1/reports/trial-balance", params={"currency": CUR})
    body = resp.json()
    rows = {r["account"]: (r["debit"], r["credit"]) for r in body["rows"]}
    assert rows == {
        "r:assets:bank": (110_000, 0),
        "r:assets:receivables": (17_000, 0),
        "r:equity:capital": (0, 100_000),
        "r:expenses:rent": (15_000, 0),
        "r:liabilities:deferred": (0, 5_000),
        "r:revenue:tuition": (0, 37_000),
    }
    assert body["totals"] == [
        {"currency": CUR, "debit": 142_000, "credit": 142_000, "balanced": True}
    ]
    jan = await fixture_books.get(
        "/v1/reports/trial-balance", params={"currency": CUR, "as_of": "2026-01-31T23:59:59Z"}
    )
    assert jan.json()["totals"][0]["debit"] == 137_000


async def test_balance_sheet(fixture_books: httpx.AsyncClient) -> None:
    resp = await fixture_books.get("/v1/reports/balance-sheet", params={"currency": CUR})
    assert resp.json()["rows"] == [
        {
            "currency": CUR,
            "assets": 127_000,
            "liabilities": 5_000,
            "equity": 100_000,
            "current_earnings": 22_000,
            "liabilities_and_equity": 127_000,
            "balanced": True,
        }
    ]


async def test_income_statement_for_a_period(fixture_books: httpx.AsyncClient) -> None:
    resp = await fixture_books.get(
        "/v1/reports/income-statement",
        params={"currency": CUR, "from": "2026-01-31T23:59:59Z", "to": "2026-02-28T23:59:59Z"},
    )
    assert resp.json()["totals"] == [
        {"currency": CUR, "revenue": 0, "expenses": 15_000, "net_income": -15_000}
    ]
    whole = await fixture_books.get("/v1/reports/income-statement", params={"currency": CUR})
    assert whole.json()["totals"][0]["net_income"] == 22_000


async def test_totals_by_category_and_tag_with_csv(fixture_books: httpx.AsyncClient) -> None:
    resp = await fixture_books.get(
        "/v1/reports/totals",
        params={
            "group_by": "category",
            "from": "2026-01-01T00:00:00Z",
            "to": "2026-03-01T00:00:00Z",
        },
        headers={"Accept": "text/csv"},
    )
    assert resp.headers["content-type"].startswith("text/csv")
    rows = [r for r in csv.DictReader(io.StringIO(resp.text)) if r["currency"] == CUR]
    assert {r["category"]: (int(r["amount"]), int(r["transactions"])) for r in rows} == {
        "deposit": (5_000, 1),
        "fee": (15_000, 1),
        "opening-balance": (100_000, 1),
        "payment": (20_000, 1),
        "tuition": (37_000, 2),
    }
    tags = await fixture_books.get("/v1/reports/totals", params={"group_by": "tag"})
    fixture = [r for r in tags.json()["rows"] if r["tag"] == "fixture" and r["currency"] == CUR]
    assert fixture == [{"tag": "fixture", "currency": CUR, "amount": 177_000, "transactions": 6}]


async def test_trial_balance_csv(fixture_books: httpx.AsyncClient) -> None:
    resp = await fixture_books.get(
        "/v1/reports/trial-balance", params={"currency": CUR}, headers={"Accept": "text/csv"}
    )
    lines = resp.text.splitlines()
    assert lines[0] == "account,type,currency,debit,credit"
    assert f"r:assets:bank,asset,{CUR},110000,0" in lines
