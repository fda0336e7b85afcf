"""``POST /v1/quotes`` on the fast path (one conditional INSERT, no session) with real commits.

The rollback-client tests see every write uncommitted, so their snapshot is always behind and
their quotes take the full path; these tests commit, so the fast path answers, and check both
of its outcomes: the quote stored is the quote answered, and a snapshot behind the stored
revision stores nothing and hands over to the full path, which prices at the new revision.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from azora_pricing.models import quotes
from azora_pricing.snapshot import SnapshotHolder
from tests.conftest import API_TOKEN
from tests.pricing.conftest import make_app
from tests.pricing.test_api import put_product, quote_body, uniq
from tests.support.apps import bearer, committing_client


@pytest.fixture
async def live(pricing_db: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = make_app(pricing_db)
    async with committing_client(app, headers=bearer(API_TOKEN)) as client:
        yield app, client


async def current_snapshot(app: FastAPI, client: httpx.AsyncClient) -> SnapshotHolder:
    """Wait until the listener has loaded every committed write (it reloads on NOTIFY)."""
    holder: SnapshotHolder = app.state.snapshot
    async with app.state.db.engine.connect() as conn:
        stored = (await conn.execute(sa.text("SELECT revision FROM pricing_state"))).scalar_one()
    for _ in range(100):
        if holder.snapshot.revision >= stored:
            return holder
        await asyncio.sleep(0.05)
    raise AssertionError(f"snapshot stuck at {holder.snapshot.revision}, stored {stored}")


async def stored_results(app: FastAPI, quote_id: str) -> list[dict[str, object]]:
    async with app.state.db.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(quotes.c.result).where(quotes.c.id == uuid.UUID(quote_id))
        )
        return [row.result for row in rows]


async def test_fast_path_stores_exactly_the_quote_it_answers(
    live: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = live
    sku = uniq("fast")
    await put_product(client, sku, 1234)
    holder = await current_snapshot(app, client)
    response = await client.post("/v1/quotes", json=quote_body(sku, 3))
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    q = response.json()
    assert q["total"] == 3702
    assert q["revisions"]["snapshot"] == holder.snapshot.revision
    assert await stored_results(app, q["id"]) == [q]
    assert (await client.get(f"/v1/quotes/{q['id']}")).json() == q


async def test_a_stale_snapshot_stores_nothing_and_the_full_path_reprices(
    live: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = live
    sku = uniq("stale")
    await put_product(client, sku, 1000)
    holder = await current_snapshot(app, client)
    old = holder.snapshot
    await put_product(client, sku, 2000)
    await current_snapshot(app, client)
    # Pin this replica to the snapshot from before the price change: as if its listener lagged.
    holder.snapshot = old
    response = await client.post("/v1/quotes", json=quote_body(sku, 2))
    assert response.status_code == 201, response.text
    q = response.json()
    assert q["total"] == 4000  # the new price: the stale snapshot's quote was not stored
    assert q["revisions"]["snapshot"] > old.revision
    assert await stored_results(app, q["id"]) == [q]
    assert holder.snapshot.revision > old.revision  # the full path reloaded it


async def test_a_product_unknown_to_a_stale_snapshot_is_priced_after_reload(
    live: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = live
    holder = await current_snapshot(app, client)
    old = holder.snapshot
    sku = uniq("new")
    await put_product(client, sku, 700)
    await current_snapshot(app, client)
    holder.snapshot = old
    response = await client.post("/v1/quotes", json=quote_body(sku))
    assert response.status_code == 201, response.text
    assert response.json()["total"] == 700
