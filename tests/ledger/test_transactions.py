"""Transfers, idempotency, references and bad input through the HTTP API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.ledger.conftest import balance, open_account, snapshot, transfer

PROBLEM = "application/problem+json"


async def test_reference_replays_original_and_refuses_other_body(books: httpx.AsyncClient) -> None:
    body = transfer("assets:cash", "revenue:tuition", 700, reference="enr-1")
    first = await books.post("/v1/transactions", json=body)
    assert first.status_code == 201
    again = await books.post("/v1/transactions", json=body)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = await books.post(
        "/v1/transactions", json=transfer("assets:cash", "revenue:tuition", 800, reference="enr-1")
    )
    assert other.status_code == 409
    assert other.json()["type"].endswith("/reference-reused")
    assert set(other.json()["differing_fields"]) == {"postings[0].amount", "postings[1].amount"}
    assert (await balance(books, "assets:cash"))["posted"]["balance"] == 700


async def test_idempotency_key_replays_and_lists_differing_fields(
    books: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "charge-9"}
    body = transfer("assets:cash", "revenue:tuition", 250, description="fee")
    first = await books.post("/v1/transactions", json=body, headers=headers)
    replay = await books.post("/v1/transactions", json=body, headers=headers)
    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    changed = await books.post(
        "/v1/transactions",
        json=transfer("assets:cash", "revenue:tuition", 250, description="other"),
        headers=headers,
    )
    assert changed.status_code == 422
    assert changed.json()["differing_fields"] == ["description"]
    assert (await balance(books, "assets:cash"))["posted"]["balance"] == 250


async def test_multi_currency_transaction_balances_per_currency(
    books: httpx.AsyncClient,
) -> None:
    body = {
        "postings": [
            {"account": "assets:cash", "direction": "debit", "amount": 100, "currency": "EUR"},
            {"account": "revenue:tuition", "direction": "credit", "amount": 100, "currency": "EUR"},
            {"account": "assets:usd", "direction": "debit", "amount": 120, "currency": "USD"},
            {"account": "equity:usd", "direction": "credit", "amount": 120, "currency": "USD"},
        ],
        "category": "tuition",
        "tags": ["fx"],
    }
    resp = await books.post("/v1/transactions", json=body)
    assert resp.status_code == 201, resp.text
    assert (await balance(books, "equity:usd"))["posted"]["balance"] == 120


def _p(account: str, direction: str, amount: Any, currency: str = "EUR") -> dict[str, Any]:
    return {"account": account, "direction": direction, "amount": amount, "currency": currency}


BAD_INPUTS = [
    (
        "unbalanced",
        {"postings": [_p("assets:cash", "debit", 100), _p("revenue:tuition", "credit", 90)]},
        422,
        "postings",
        "unbalanced",
    ),
    (
        "zero",
        {"postings": [_p("assets:cash", "debit", 0), _p("revenue:tuition", "credit", 0)]},
        422,
        "postings[0].amount",
        "validation-error",
    ),
    (
        "negative",
        {"postings": [_p("assets:cash", "debit", -5), _p("revenue:tuition", "credit", -5)]},
        422,
        "postings[0].amount",
        "validation-error",
    ),
    (
        "float",
        {"postings": [_p("assets:cash", "debit", 1.5), _p("revenue:tuition", "credit", 1.5)]},
        422,
        "postings[0].amount",
        "validation-error",
    ),
    (
        "string amount",
        {"postings": [_p("assets:cash", "debit", "10"), _p("revenue:tuition", "credit", "10")]},
        422,
        "postings[0].amount",
        "validation-error",
    ),
    (
        "over 2^63",
        {"postings": [_p("assets:cash", "debit", 2**63), _p("revenue:tuition", "credit", 2**63)]},
        422,
        "postings[0].amount",
        "validation-error",
    ),
    (
        "unknown account",
        transfer("assets:nope", "revenue:tuition", 10),
        422,
        "postings[0].account",
        "unknown-account",
    ),
    (
        "currency mismatch",
        {
            "postings": [
                _p("assets:cash", "debit", 10, "USD"),
                _p("equity:usd", "credit", 10, "USD"),
            ]
        },
        422,
        "postings[0].currency",
        "currency-mismatch",
    ),
    (
        "one posting",
        {"postings": [_p("assets:cash", "debit", 10)]},
        422,
        "postings",
        "validation-error",
    ),
    (
        "unknown category",
        transfer("assets:cash", "revenue:tuition", 10, category="nope"),
        422,
        "category",
        "unknown-category",
    ),
    (
        "unknown field",
        transfer("assets:cash", "revenue:tuition", 10, colour="red"),
        422,
        "colour",
        "validation-error",
    ),
    (
        "naive effective_at",
        transfer("assets:cash", "revenue:tuition", 10, effective_at="2026-01-01T00:00:00"),
        422,
        "effective_at",
        "validation-error",
    ),
    (
        "expiry without pending",
        transfer("assets:cash", "revenue:tuition", 10, timeout_seconds=5),
        422,
        "body",
        "validation-error",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "field", "slug"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
async def test_bad_input_is_a_clear_problem_and_writes_nothing(
    books: httpx.AsyncClient, body: dict[str, Any], status: int, field: str, slug: str
) -> None:
    before = await snapshot(books)
    resp = await books.post("/v1/transactions", json=body)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM
    problem = resp.json()
    assert problem["type"].endswith("/" + slug)
    assert field in [e["field"] for e in problem["errors"]]
    assert await snapshot(books) == before


async def test_amount_overflowing_the_running_total_is_refused(books: httpx.AsyncClient) -> None:
    big = 2**63 - 1
    ok = await books.post("/v1/transactions", json=transfer("assets:cash", "revenue:tuition", big))
    assert ok.status_code == 201
    before = await snapshot(books)
    resp = await books.post("/v1/transactions", json=transfer("assets:cash", "revenue:tuition", 1))
    assert resp.status_code == 422
    assert resp.json()["type"].endswith("/amount-overflow")
    assert await snapshot(books) == before


async def test_malformed_json_is_400(books: httpx.AsyncClient) -> None:
    before = await snapshot(books)
    resp = await books.post(
        "/v1/transactions", content=b'{"postings": [', headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert resp.json()["type"].endswith("/malformed-json")
    assert await snapshot(books) == before


async def test_writes_need_the_write_scope(books: httpx.AsyncClient) -> None:
    resp = await books.post(
        "/v1/transactions",
        json=transfer("assets:cash", "revenue:tuition", 5),
        headers={"Authorization": "Bearer nope"},
    )
    assert resp.status_code == 401


async def test_batch_independent_and_atomic(books: httpx.AsyncClient) -> None:
    good = transfer("assets:cash", "revenue:tuition", 10)
    bad = transfer("assets:nope", "revenue:tuition", 10)
    resp = await books.post(
        "/v1/transactions:batch", json={"mode": "independent", "transactions": [good, bad, good]}
    )
    assert resp.status_code == 200, resp.text
    assert [r["status"] for r in resp.json()["results"]] == [201, 422, 201]
    assert resp.json()["results"][1]["error"]["errors"][0]["field"] == "postings[0].account"
    before = await snapshot(books)
    atomic = await books.post(
        "/v1/transactions:batch", json={"mode": "atomic", "transactions": [good, bad]}
    )
    assert atomic.status_code == 422
    assert atomic.json()["type"].endswith("/batch-rejected")
    assert [r["index"] for r in atomic.json()["results"]] == [1]
    assert await snapshot(books) == before
    ok = await books.post(
        "/v1/transactions:batch", json={"mode": "atomic", "transactions": [good, good]}
    )
    assert ok.status_code == 201
    assert (await balance(books, "assets:cash"))["posted"]["balance"] == 40


async def test_batch_over_1000_items_is_refused(books: httpx.AsyncClient) -> None:
    body = {"transactions": [transfer("assets:cash", "revenue:tuition", 1)] * 1001}
    resp = await books.post("/v1/transactions:batch", json=body)
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "transactions"


async def test_conditions_expected_version_and_balance(books: httpx.AsyncClient) -> None:
    cash = (await books.get("/v1/accounts/assets:cash")).json()
    cond = [{"account": "assets:cash", "expected_version": cash["version"]}]
    first = await books.post(
        "/v1/transactions", json=transfer("assets:cash", "revenue:tuition", 5, conditions=cond)
    )
    assert first.status_code == 201
    stale = await books.post(
        "/v1/transactions", json=transfer("assets:cash", "revenue:tuition", 5, conditions=cond)
    )
    assert stale.status_code == 409
    assert stale.json()["type"].endswith("/condition-failed")
    assert stale.json()["actual_version"] == cash["version"] + 1
    low = await books.post(
        "/v1/transactions",
        json=transfer(
            "revenue:tuition",
            "assets:cash",
            5,
            conditions=[{"account": "assets:cash", "balance_at_least": 6}],
        ),
    )
    assert low.status_code == 409
    assert low.json()["available"] == 5


async def test_fast_route_validates_like_the_documented_schema(books: httpx.AsyncClient) -> None:
    """POST /v1/transactions is parsed and validated by hand (fastpath.py): same answers."""
    before = await snapshot(books)
    # Integers beyond 64 bits stay integers (orjson alone would turn them into floats, and the
    # error would say "not an integer" instead of naming the limit).
    resp = await books.post(
        "/v1/transactions", json=transfer("assets:cash", "revenue:tuition", 2**64)
    )
    assert resp.status_code == 422
    assert resp.json()["errors"][0] == {
        "field": "postings[0].amount",
        "reason": "Input should be less than or equal to 9223372036854775807",
        "code": "less_than_equal",
    }
    # The header and the body are validated together, as FastAPI does.
    resp = await books.post(
        "/v1/transactions", json={"postings": 3}, headers={"Idempotency-Key": "k" * 256}
    )
    assert resp.status_code == 422
    assert [e["field"] for e in resp.json()["errors"]] == ["header.Idempotency-Key", "postings"]
    # Only a JSON content type is parsed; no body at all is a missing body.
    resp = await books.post(
        "/v1/transactions", content=b'{"postings": []}', headers={"content-type": "text/plain"}
    )
    assert (resp.status_code, resp.json()["errors"][0]["field"]) == (422, "body")
    resp = await books.post("/v1/transactions")
    assert (resp.status_code, resp.json()["errors"][0]["code"]) == (422, "missing")
    # A malformed body is a 400 even before authentication, as before.
    resp = await books.post(
        "/v1/transactions",
        content=b"{",
        headers={"content-type": "application/json", "Authorization": ""},
    )
    assert resp.status_code == 400
    assert await snapshot(books) == before


async def test_times_outside_the_utc_range_are_client_errors(books: httpx.AsyncClient) -> None:
    # Valid RFC 3339, but before the first instant UTC can represent (found by schemathesis).
    early = "0001-01-01T00:00:00+00:01"
    resp = await books.get("/v1/reports/totals", params={"from": early})
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "query.from"
    resp = await books.get("/v1/reports/trial-balance", params={"as_of": early})
    assert resp.status_code == 422
    before = await snapshot(books)
    resp = await books.post(
        "/v1/transactions",
        json=transfer("assets:cash", "revenue:tuition", 5, effective_at=early),
    )
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "effective_at"
    assert await snapshot(books) == before


async def test_large_independent_batch_with_items_rejected_under_the_locks(
    books: httpx.AsyncClient,
) -> None:
    # Large enough to store its transactions before taking the write turn (speculatively):
    # items refused by the locked checks make it roll those back and plan again.
    from azora_ledger.transactions.service import SPECULATE_FROM

    await open_account(
        books, "liabilities:wallet", "liability", flags={"debits_must_not_exceed_credits": True}
    )
    items: list[dict[str, Any]] = []
    expected: list[int] = []
    for i in range(SPECULATE_FROM + 50):
        if i % 37 == 5:  # the wallet is empty: refused under the locks (balance flag)
            items.append(transfer("liabilities:wallet", "revenue:tuition", 10))
            expected.append(422)
        elif i % 41 == 7:  # unknown account: refused under the locks too
            items.append(transfer("assets:nowhere", "revenue:tuition", 10))
            expected.append(422)
        else:
            items.append(transfer("assets:cash", "revenue:tuition", 1))
            expected.append(201)
    assert len(items) >= SPECULATE_FROM
    resp = await books.post(
        "/v1/transactions:batch", json={"mode": "independent", "transactions": items}
    )
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["status"] for r in results] == expected
    written = sum(1 for s in expected if s == 201)
    moved = sum(items[i]["postings"][0]["amount"] for i, s in enumerate(expected) if s == 201)
    assert (await balance(books, "assets:cash"))["posted"]["balance"] == moved
    assert (await balance(books, "liabilities:wallet"))["posted"]["balance"] == 0
    listed = (await books.get("/v1/transactions", params={"limit": 1000})).json()["items"]
    assert len(listed) == written
    # Every stored transaction has its postings (nothing left over from the speculation).
    for r in results:
        if r["status"] == 201:
            stored = (await books.get(f"/v1/transactions/{r['transaction']['id']}")).json()
            assert len(stored["postings"]) == 2


async def test_large_batch_with_references_replays_and_refuses_like_a_small_one(
    books: httpx.AsyncClient,
) -> None:
    # References keep a batch off the speculative path (see create_transactions): the same
    # answers, one transaction per reference.
    from azora_ledger.transactions.service import SPECULATE_FROM

    items = [
        transfer("assets:cash", "revenue:tuition", 1, reference=f"ref-{i}")
        for i in range(SPECULATE_FROM + 10)
    ]
    items.append(transfer("assets:cash", "revenue:tuition", 1, reference="ref-3"))  # replay
    items.append(transfer("assets:cash", "revenue:tuition", 2, reference="ref-4"))  # differs
    first = await books.post(
        "/v1/transactions:batch", json={"mode": "independent", "transactions": items}
    )
    assert first.status_code == 200, first.text
    statuses = [r["status"] for r in first.json()["results"]]
    assert statuses == [201] * (SPECULATE_FROM + 10) + [200, 409]
    again = await books.post(
        "/v1/transactions:batch", json={"mode": "independent", "transactions": items[:-1]}
    )
    assert [r["status"] for r in again.json()["results"]] == [200] * (SPECULATE_FROM + 11)
    assert (await balance(books, "assets:cash"))["posted"]["balance"] == SPECULATE_FROM + 10


async def test_large_atomic_batch_rejected_under_the_locks_writes_nothing(
    books: httpx.AsyncClient,
) -> None:
    from azora_ledger.transactions.service import SPECULATE_FROM

    await open_account(
        books, "liabilities:wallet", "liability", flags={"debits_must_not_exceed_credits": True}
    )
    items = [transfer("assets:cash", "revenue:tuition", 1) for _ in range(SPECULATE_FROM + 20)]
    items[SPECULATE_FROM // 2] = transfer("liabilities:wallet", "revenue:tuition", 10)
    before = await snapshot(books)
    resp = await books.post(
        "/v1/transactions:batch", json={"mode": "atomic", "transactions": items}
    )
    assert resp.status_code == 422, resp.text
    assert [r["index"] for r in resp.json()["results"]] == [SPECULATE_FROM // 2]
    assert await snapshot(books) == before
    # The same batch without the refused item is stored whole.
    del items[SPECULATE_FROM // 2]
    ok = await books.post("/v1/transactions:batch", json={"mode": "atomic", "transactions": items})
    assert ok.status_code == 201, ok.text
    assert (await balance(books, "assets:cash"))["posted"]["balance"] == len(items)


async def test_overdraft_limit(client: httpx.AsyncClient) -> None:
    await open_account(client, "assets:card", "asset")
    await open_account(
        client, "liabilities:credit-line", "liability", flags={"overdraft_limit": 500}
    )
    ok = await client.post(
        "/v1/transactions", json=transfer("liabilities:credit-line", "assets:card", 500)
    )
    assert ok.status_code == 201
    assert (await balance(client, "liabilities:credit-line"))["available"] == -500
    over = await client.post(
        "/v1/transactions", json=transfer("liabilities:credit-line", "assets:card", 1)
    )
    assert over.status_code == 422
    assert over.json()["constraint"] == "overdraft_limit"


async def test_405_lists_every_allowed_method(books: httpx.AsyncClient) -> None:
    # GET /v1/transactions (a FastAPI route) and POST (a plain route) share the path.
    resp = await books.delete("/v1/transactions")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET, POST"
    resp = await books.put("/v1/accounts")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET, POST"
