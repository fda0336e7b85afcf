"""Fuzz every operation of the ledger's OpenAPI schema: whatever the input, no 5xx.

Stands in for schemathesis, which cannot generate object bodies with the installed hypothesis
(hypothesis-jsonschema calls ``many.more()``, gone from hypothesis 6.170). Bodies mix the
schema's own property names with hostile values: huge and negative numbers, floats, NUL bytes,
deep nesting, wrong types.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ledger.conftest import open_account, transfer

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**63 - 1, 2**63, 2**64, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(
        [
            "EUR",
            "USD",
            "asset",
            "debit",
            "credit",
            "f:a",
            "f:b",
            "\x00",
            "2026-01-01T00:00:00Z",
            "9999-12-31T23:59:59+00:00",
            "0001-01-01T00:00:00+00:00",
            "atomic",
        ]
    ),
)


def values(names: list[str]) -> st.SearchStrategy[Any]:
    keys = st.sampled_from(names) if names else st.text(max_size=8)
    return st.recursive(
        SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=6)
        ),
        max_leaves=25,
    )


def _names(spec: dict[str, Any]) -> list[str]:
    return sorted(
        set(re.findall(r'"properties": \{"([a-z_]+)"', str(spec).replace("'", '"')))
        | {
            "postings",
            "account",
            "direction",
            "amount",
            "currency",
            "code",
            "type",
            "transactions",
            "mode",
            "pending",
            "flags",
            "metadata",
            "effective_at",
            "expires_at",
            "timeout_seconds",
            "conditions",
            "expected_version",
            "reference",
            "tags",
            "category",
            "scale",
            "overdraft_limit",
            "name",
        }
    )


PATH_VALUES = st.one_of(
    st.sampled_from(["f:a", "f:b", str(uuid.uuid4()), "x" * 300, "%00", "a:b:c"]),
    st.text(
        alphabet=st.characters(codec="ascii", exclude_characters="/?#"), min_size=1, max_size=12
    ),
)


async def _setup(client: httpx.AsyncClient) -> list[str]:
    cached: list[str] | None = getattr(client, "fuzz_ids", None)
    if cached is None:
        await open_account(client, "f:a")
        await open_account(client, "f:b", "revenue")
        tx = await client.post("/v1/transactions", json=transfer("f:a", "f:b", 10))
        pending = await client.post(
            "/v1/transactions", json=transfer("f:a", "f:b", 5, pending=True)
        )
        cached = [tx.json()["id"], pending.json()["id"]]
        client.fuzz_ids = cached  # type: ignore[attr-defined]
    return cached


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_no_operation_answers_5xx(client: httpx.AsyncClient, data: st.DataObject) -> None:
    ids = await _setup(client)
    spec = client.app.openapi()  # type: ignore[attr-defined]
    names = _names(spec)
    operations = [
        (method.upper(), path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if not path.startswith("/admin")
    ]
    method, path, op = data.draw(st.sampled_from(operations))
    url = path
    for param in re.findall(r"\{(\w+)\}", path):
        value = data.draw(st.one_of(st.sampled_from(ids), PATH_VALUES))
        url = url.replace("{" + param + "}", quote(value, safe=":@"))
    query = {
        p["name"]: data.draw(
            st.text(max_size=30)
            | st.sampled_from(
                ["2026-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "EUR", "category", "0"]
            )
        )
        for p in op.get("parameters", [])
        if p["in"] == "query" and data.draw(st.booleans())
    }
    kwargs: dict[str, Any] = {"params": query}
    if method == "POST":
        kwargs["json"] = data.draw(values(names))
    resp = await client.request(method, url, **kwargs)
    assert resp.status_code < 500, (method, url, kwargs, resp.text)
