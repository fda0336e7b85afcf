"""Usage recorded in batches, cost exact against the backend's usage (streams included), the
usage API (JSON, CSV, percentiles) and the route status merged across replicas."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import aiohttp

from tests.conftest import ADMIN_TOKEN
from tests.orchestrator.conftest import (
    Admin,
    Gw,
    backend_spec,
    bearer,
    chat,
    create_key,
    unique,
    wait_for_key,
)

# $2.50 / $10.00 per million tokens, in cents.
PRICE = {"currency": "USD", "inputPerMillion": 250, "outputPerMillion": 1000}


def decimal_cost(prompt: int, completion: int) -> int:
    exact = (Decimal(prompt) * 250 + Decimal(completion) * 1000) / Decimal(1_000_000)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


async def usage(http: aiohttp.ClientSession, gw: Gw, **params: str) -> Any:
    async with http.get(
        f"{gw.base_url}/admin/v1/usage", params=params, headers=bearer(ADMIN_TOKEN)
    ) as resp:
        if params.get("format") == "csv":
            assert resp.status == 200 and resp.content_type == "text/csv"
            return await resp.text()
        body = await resp.json()
        assert resp.status == 200, body
        return body


async def test_cost_exact_streaming_and_not(
    gw: Gw, admin: Admin, http: aiohttp.ClientSession, backends
) -> None:
    a = await backends("a")
    a.prompt_tokens, a.completion_tokens = 123_457, 45_679  # costs with fractions of a cent
    model = unique("usage")
    await admin.put(model, {"model": model, "backends": [backend_spec(a, price=PRICE)]})
    team = unique("team")
    secret, key = await create_key(http, gw, team=team)
    await wait_for_key([gw], key["id"])
    start = datetime.now(UTC) - timedelta(seconds=1)
    assert (await chat(http, gw, model, headers=bearer(secret)))[0] == 200
    status, body, _ = await chat(http, gw, model, headers=bearer(secret), stream=True)
    assert status == 200 and '"usage"' not in body["raw"]
    a.prompt_tokens, a.completion_tokens = 3, 1_499
    status, body, _ = await chat(
        http, gw, model, headers=bearer(secret), stream=True, stream_options={"include_usage": True}
    )
    assert status == 200 and '"usage"' in body["raw"]
    await gw.server.arun(gw.gateway.recorder.flush())

    report = await usage(http, gw, group_by="key", key=key["id"], **{"from": start.isoformat()})
    (item,) = report["items"]
    assert item["group"] == key["id"] and item["currency"] == "USD"
    assert item["requests"] == 3 and item["errors"] == 0
    assert item["prompt_tokens"] == 2 * 123_457 + 3
    assert item["completion_tokens"] == 2 * 45_679 + 1_499
    expected = 2 * decimal_cost(123_457, 45_679) + decimal_cost(3, 1_499)
    # Per request: (123,457 x 250 + 45,679 x 1,000) / 10^6 = 76.54325 -> 77 cents;
    # (3 x 250 + 1,499 x 1,000) / 10^6 = 1.49975 -> 1 cent (half-up, once per request).
    assert item["cost"] == expected == 2 * 77 + 1
    assert item["latency_ms_p50"] > 0 and item["ttft_ms_p50"] > 0  # two streams have a TTFT

    by_team = await usage(http, gw, group_by="team", team=team, **{"from": start.isoformat()})
    assert [i["cost"] for i in by_team["items"]] == [expected]

    # The dashboards' per-team metrics: bounded labels (an unlisted team is "other"), never a
    # key id.
    async with http.get(f"{gw.base_url}/metrics") as resp:
        exposition = await resp.text()
    assert 'azora_orchestrator_spend_minor_total{currency="USD",team="other"}' in exposition
    assert team not in exposition and key["id"] not in exposition


async def test_usage_buckets_csv_and_bad_input(
    gw: Gw, admin: Admin, http: aiohttp.ClientSession, backends
) -> None:
    a = await backends("a")
    model = unique("usage-csv")
    await admin.put(model, {"model": model, "backends": [backend_spec(a, price=PRICE)]})
    start = datetime.now(UTC) - timedelta(seconds=1)
    for _ in range(3):
        assert (await chat(http, gw, model))[0] == 200
    a.status = 500
    assert (await chat(http, gw, model))[0] == 500
    await gw.server.arun(gw.gateway.recorder.flush())
    params = {"from": start.isoformat(), "group_by": "model", "model": model, "bucket": "1h"}
    report = await usage(http, gw, **params)
    assert sum(i["requests"] for i in report["items"]) == 4
    assert sum(i["errors"] for i in report["items"]) == 1
    text = await usage(http, gw, **params, format="csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sum(int(r["requests"]) for r in rows) == 4
    assert {r["group"] for r in rows} == {model}
    bad: list[dict[str, str]] = [
        {"group_by": "owner"},
        {"bucket": "soon"},
        {"bucket": "1ms"},
        {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        {"from": "2020-01-01T00:00:00Z", "bucket": "1s"},
        {"from": "2026-01-01T00:00:00"},
    ]
    for p in bad:
        async with http.get(
            f"{gw.base_url}/admin/v1/usage", params=p, headers=bearer(ADMIN_TOKEN)
        ) as resp:
            assert resp.status == 422, p
            assert resp.content_type == "application/problem+json"


async def test_route_status_merged_across_replicas(
    replicas: list[Gw], admin: Admin, http: aiohttp.ClientSession, backends
) -> None:
    a, b = await backends("a"), await backends("b")
    model = unique("fleet")
    await admin.put(model, {"model": model, "backends": [backend_spec(a), backend_spec(b)]})
    for r in replicas:
        await admin.wait_live_on(r, model)
        assert (await chat(http, r, model))[0] == 200
    for r in replicas:
        await r.server.arun(r.gateway.publisher.publish())
    async with http.get(
        f"{replicas[0].base_url}/admin/v1/route-status/test/{model}", headers=bearer(ADMIN_TOKEN)
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    names = {r.gateway.replica for r in replicas}
    assert names <= {x["replica"] for x in body["replicas"]}
    merged = {x["name"]: x for x in body["backends"]}
    assert set(merged) == {"a", "b"}
    assert merged["a"]["replicas"] >= 3 and merged["a"]["healthy_on"] >= 3
    assert any(m["latency_ms_ewma"] is not None for m in merged.values())
    async with http.get(
        f"{replicas[0].base_url}/admin/v1/route-status/test/no-such-route",
        headers=bearer(ADMIN_TOKEN),
    ) as resp:
        assert resp.status == 404
