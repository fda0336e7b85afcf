"""Accounts: opening, currencies and scales, closing, point-in-time balances, statements."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.ledger.conftest import open_account, snapshot, transfer

PROBLEM = "application/problem+json"


async def test_account_created_and_duplicate_code_conflicts(client: httpx.AsyncClient) -> None:
    created = await open_account(
        client, "liabilities:students:42", "liability", name="Student 42", metadata={"id": 42}
    )
    assert created["scale"] == 2
    assert created["balances"]["available"] == 0
    again = await client.post(
        "/v1/accounts",
        json={"code": "liabilities:students:42", "type": "liability", "currency": "EUR"},
    )
    assert again.status_code == 409
    assert again.headers["content-type"] == PROBLEM
    assert again.json()["type"].endswith("/account-exists")


@pytest.mark.parametrize(
    ("currency", "scale", "status", "expected_scale"),
    [
        ("JPY", None, 201, 0),
        ("KWD", None, 201, 3),
        ("EUR", 3, 422, None),
        ("POINTS", 0, 201, 0),
        ("POINTS", None, 422, None),
        ("XYZ", 2, 422, None),
    ],
)
async def test_account_currency_scale(
    client: httpx.AsyncClient,
    currency: str,
    scale: int | None,
    status: int,
    expected_scale: int | None,
) -> None:
    body: dict[str, Any] = {"code": f"assets:{currency}", "type": "asset", "currency": currency}
    if scale is not None:
        body["scale"] = scale
    resp = await client.post("/v1/accounts", json=body)
    assert resp.status_code == status, resp.text
    if status == 201:
        assert resp.json()["scale"] == expected_scale
    else:
        assert resp.json()["errors"][0]["field"] in {"currency", "scale"}


async def test_closed_account_takes_no_postings(books: httpx.AsyncClient) -> None:
    await open_account(books, "assets:old")
    closed = await books.post("/v1/accounts/assets:old/close")
    assert closed.status_code == 200
    assert closed.json()["closed"] is True
    before = await snapshot(books)
    resp = await books.post("/v1/transactions", json=transfer("assets:old", "revenue:tuition", 5))
    assert resp.status_code == 422
    assert resp.json()["type"].endswith("/account-closed")
    assert resp.json()["errors"][0]["field"] == "postings[0].account"
    assert await snapshot(books) == before


async def test_close_refuses_an_account_with_a_balance(books: httpx.AsyncClient) -> None:
    await books.post("/v1/transactions", json=transfer("assets:cash", "revenue:tuition", 5))
    resp = await books.post("/v1/accounts/assets:cash/close")
    assert resp.status_code == 409
    assert resp.json()["type"].endswith("/account-not-empty")


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
