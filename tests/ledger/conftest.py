"""Fixtures for azora-ledger tests.

Two databases: ``ledger_db`` for ordinary tests (each test rolled back) and ``live_db`` for
tests that need real commits (concurrency, expiry, the service as a process). Tests on the
live database use their own unique account codes, so they never see each other's balances.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from azora_ledger.app import MIGRATIONS, create_app
from azora_ledger.settings import LedgerSettings
from tests.conftest import API_TOKEN, migrated_database, token_settings
from tests.support.apps import bearer, committing_client, rollback_client
from tests.support.pg import PostgresServer


@pytest.fixture(scope="session")
def ledger_db(pg: PostgresServer) -> str:
    return migrated_database(pg, "azora_test_ledger", MIGRATIONS)


@pytest.fixture(scope="session")
def live_db(pg: PostgresServer) -> str:
    return migrated_database(pg, "azora_test_ledger_live", MIGRATIONS)


def ledger_app(database_url: str, **overrides: Any) -> FastAPI:
    values: dict[str, Any] = {"database_url": database_url, **token_settings(), **overrides}
    return create_app(LedgerSettings(**values))


@pytest.fixture
async def client(ledger_db: str) -> AsyncIterator[httpx.AsyncClient]:
    # Coalescing runs on its own pool connections, outside the test's rolled-back transaction.
    app = ledger_app(ledger_db, coalesce=False)
    async with rollback_client(app, headers=bearer(API_TOKEN)) as c:
        # rollback_client binds the app's sessions and its writers' connections
        # (Database.driver) to the test's connection.
        c.app = app  # type: ignore[attr-defined]
        yield c


@pytest.fixture
async def live(live_db: str) -> AsyncIterator[httpx.AsyncClient]:
    app = ledger_app(live_db, coalesce=True, db_pool_size=20, db_max_overflow=40)
    async with committing_client(app, headers=bearer(API_TOKEN)) as c:
        yield c


@pytest.fixture
def unique() -> Callable[[str], str]:
    tag = uuid.uuid4().hex[:10]
    return lambda name: f"t{tag}:{name}"


async def open_account(
    client: httpx.AsyncClient, code: str, type_: str = "asset", currency: str = "EUR", **extra: Any
) -> dict[str, Any]:
    resp = await client.post(
        "/v1/accounts", json={"code": code, "type": type_, "currency": currency, **extra}
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def transfer(
    debit: str, credit: str, amount: int, currency: str = "EUR", **extra: Any
) -> dict[str, Any]:
    return {
        "postings": [
            {"account": debit, "direction": "debit", "amount": amount, "currency": currency},
            {"account": credit, "direction": "credit", "amount": amount, "currency": currency},
        ],
        **extra,
    }


async def balance(client: httpx.AsyncClient, code: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/accounts/{code}/balances")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


@pytest.fixture
async def books(client: httpx.AsyncClient) -> httpx.AsyncClient:
    await open_account(client, "assets:cash")
    await open_account(client, "revenue:tuition", "revenue")
    await open_account(client, "assets:usd", currency="USD")
    await open_account(client, "equity:usd", "equity", currency="USD")
    return client


async def snapshot(client: httpx.AsyncClient) -> list[Any]:
    accounts = (await client.get("/v1/accounts")).json()["items"]
    txs = (await client.get("/v1/transactions")).json()["items"]
    return [[(a["code"], a["version"], a["balances"]) for a in accounts], [t["id"] for t in txs]]


@pytest.fixture
async def wallet(client: httpx.AsyncClient) -> httpx.AsyncClient:
    # A student wallet (liability) that may not go negative, funded with 1000.
    await open_account(client, "assets:bank")
    await open_account(
        client,
        "liabilities:wallet",
        "liability",
        flags={"debits_must_not_exceed_credits": True},
    )
    await open_account(client, "revenue:courses", "revenue")
    resp = await client.post(
        "/v1/transactions", json=transfer("assets:bank", "liabilities:wallet", 1000)
    )
    assert resp.status_code == 201
    return client


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
