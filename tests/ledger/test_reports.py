"""Reports on a known fixture (JSON and CSV): trial balance, balance sheet, income statement,
totals by category and tag."""

from __future__ import annotations

import csv
import io

import httpx

from tests.ledger.conftest import CUR, transfer


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


async def test_instants_must_be_rfc3339_with_a_timezone(
    fixture_books: httpx.AsyncClient,
) -> None:
    # A number was taken as seconds since 1970 (as_of=0.5: a report as of 1970).
    where = [
        ("/v1/reports/trial-balance", "as_of"),
        ("/v1/reports/balance-sheet", "as_of"),
        ("/v1/reports/income-statement", "from"),
        ("/v1/reports/income-statement", "to"),
        ("/v1/reports/totals", "to"),
        ("/v1/accounts/r:assets:bank/balances", "as_of"),
    ]
    values = ["0.5", "0", "1700000000", "2026-01-31", "2026-01-31T23:59:59", "2026-01-31 23:59Z"]
    for path, param in where:
        for value in values:
            resp = await fixture_books.get(path, params={param: value})
            assert resp.status_code == 422, (path, param, value, resp.text)
            assert resp.headers["content-type"] == "application/problem+json"
            [error] = resp.json()["errors"]
            assert error["field"] == f"query.{param}"
            assert "RFC 3339" in error["reason"]


async def test_rfc3339_forms_with_an_offset_are_accepted(fixture_books: httpx.AsyncClient) -> None:
    for value in ("2026-01-31T23:59:59Z", "2026-02-01T00:59:59.5+01:00", "2026-01-31t23:59:59z"):
        resp = await fixture_books.get(
            "/v1/reports/trial-balance", params={"as_of": value, "currency": CUR}
        )
        assert resp.status_code == 200, (value, resp.text)


async def test_body_timestamps_must_be_rfc3339_too(books: httpx.AsyncClient) -> None:
    resp = await books.post(
        "/v1/transactions",
        json=transfer("assets:cash", "revenue:tuition", 5, effective_at=0.5),
    )
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "effective_at"
