"""Prices in the route spec, integer cost with explicit rounding, and the stream usage the
gateway asks for on every stream."""

from __future__ import annotations

import random
from decimal import ROUND_HALF_UP, Decimal

import aiohttp

from azora_orchestrator.cost import MILLION, BackendPrice, cost_minor
from tests.conftest import ADMIN_TOKEN
from tests.orchestrator.conftest import Admin, Gw, backend_spec, bearer, chat, unique


def test_cost_is_decimal_half_up() -> None:
    rng = random.Random(7)
    values = [0, 1, 499_999, 500_000, 500_001, 1_499_999, 1_500_000, 2_500_000, 10**15 + 500_000]
    values += [rng.randrange(0, 10**14) for _ in range(5000)]
    for micro in values:
        expected = (Decimal(micro) / MILLION).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        assert cost_minor(micro) == int(expected), micro
    price = BackendPrice("USD", 150, 600)  # $1.50 / $6.00 per million tokens, in cents
    # 1,000 prompt + 500 completion tokens: 150,000 + 300,000 = 450,000 micro-cents -> 0 cents
    assert price.cost(1_000, 500) == 0
    assert price.cost(3_000, 1_000) == 1  # 1,050,000 -> 1.05 -> 1
    assert price.cost(10_000, 0) == 2  # 1,500,000 -> 1.5 -> 2 (half-up)


async def test_price_in_spec_validated(
    gw: Gw, admin: Admin, http: aiohttp.ClientSession, backends
) -> None:
    a = await backends("a")
    model = unique("priced")
    good = {"currency": "USD", "inputPerMillion": 150, "outputPerMillion": 600}
    await admin.put(model, {"model": model, "backends": [backend_spec(a, price=good)]})
    route = gw.gateway.table.by_model[model]
    price = next(iter(route.backends)).cfg.price
    assert price == BackendPrice("USD", 150, 600)
    for bad in (
        {**good, "inputPerMillion": 1.5},
        {**good, "outputPerMillion": -1},
        {**good, "currency": "usd"},
        {"currency": "USD", "inputPerMillion": 1},
    ):
        async with http.put(
            f"{gw.base_url}/admin/v1/routes/test/{unique('bad-price')}",
            json={
                "generation": 1,
                "uid": "u",
                "spec": {"model": unique("m"), "backends": [backend_spec(a, price=bad)]},
            },
            headers=bearer(ADMIN_TOKEN),
        ) as resp:
            body = await resp.json()
            assert resp.status == 422, bad
            assert body["reason"] == "InvalidSpec"


async def test_streams_ask_for_usage(
    gw: Gw, admin: Admin, http: aiohttp.ClientSession, backends
) -> None:
    a = await backends("a")
    model = unique("stream-usage")
    await admin.put(model, {"model": model, "backends": [backend_spec(a)]})
    status, body, _ = await chat(http, gw, model, stream=True)
    assert status == 200
    assert a.bodies[-1]["stream_options"] == {"include_usage": True}
    # The client did not ask: the usage event is not relayed, everything else is.
    assert '"usage"' not in body["raw"]
    assert body["raw"].count("data: ") == a.chunks + 2  # content, final chunk, [DONE]
    status, body, _ = await chat(
        http, gw, model, stream=True, stream_options={"include_usage": True}
    )
    assert status == 200
    assert '"prompt_tokens":7' in body["raw"].replace(" ", "")
