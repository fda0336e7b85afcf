"""The hot path's quote writer: many quotes per INSERT, each with its own answer (real commits).

Quotes stored here use fresh random ids and are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import create_async_engine

from azora_common.db import Database
from azora_pricing.models import quotes
from azora_pricing.quote_writer import QuoteWriter
from azora_pricing.repository import QuoteRow
from tests.conftest import API_TOKEN
from tests.pricing.conftest import make_app, make_settings
from tests.pricing.test_api import assert_problem, put_product, quote_body, uniq
from tests.pricing.test_quote_fastpath import current_snapshot, stored_results
from tests.support.apps import BASE_URL, bearer, committing_client, running


def batches() -> tuple[float, float]:
    """(INSERT statements, quotes) the writers of this process have written so far."""
    count = REGISTRY.get_sample_value("azora_pricing_quote_write_batch_size_count") or 0.0
    total = REGISTRY.get_sample_value("azora_pricing_quote_write_batch_size_sum") or 0.0
    return count, total


@pytest.fixture
async def db(pricing_db: str) -> AsyncIterator[Database]:
    database = Database(make_settings(pricing_db))
    try:
        yield database
    finally:
        await database.dispose()


async def stored_revision(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(sa.text("SELECT revision FROM pricing_state"))).scalar_one())


async def stored_ids(db: Database, ids: list[str]) -> set[str]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(quotes.c.id).where(quotes.c.id.in_([uuid.UUID(i) for i in ids]))
        )
        return {str(r.id) for r in rows}


async def delete_quotes(db: Database, ids: list[str]) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(sa.delete(quotes).where(quotes.c.id.in_([uuid.UUID(i) for i in ids])))


def row(revision: int, *, customer_id: str | None = None) -> QuoteRow:
    now = datetime.now(UTC)
    quote_id = str(uuid.uuid4())
    return QuoteRow(
        id=quote_id,
        customer_id=customer_id,
        currency="EUR",
        total=100,
        codes_json="[]",
        request_json='{"currency": "EUR"}',
        result_json=f'{{"id": "{quote_id}"}}',
        snapshot_revision=revision,
        created_at=now,
        expires_at=now + timedelta(minutes=15),
    )


async def test_concurrent_quotes_share_inserts_and_each_gets_its_own(
    pricing_db: str,
) -> None:
    app: FastAPI = make_app(pricing_db)
    async with committing_client(app, headers=bearer(API_TOKEN)) as client:
        skus = [uniq("many") for _ in range(3)]
        for i, sku in enumerate(skus):
            await put_product(client, sku, 100 * (i + 1))
        await current_snapshot(app, client)
        before = batches()
        responses = await asyncio.gather(
            *(client.post("/v1/quotes", json=quote_body(skus[i % 3], i % 7 + 1)) for i in range(60))
        )
        after = batches()
        assert [r.status_code for r in responses] == [201] * 60
        documents = [r.json() for r in responses]
        assert len({q["id"] for q in documents}) == 60
        for i, q in enumerate(documents):
            # Each request got its own quote back (not a neighbour's from the same batch), and
            # exactly that document is what was stored.
            assert q["total"] == 100 * (i % 3 + 1) * (i % 7 + 1)
            assert await stored_results(app, q["id"]) == [q]
        statements, stored = after[0] - before[0], after[1] - before[1]
        assert stored == 60
        assert statements < 60  # coalesced: fewer INSERTs than quotes


async def test_a_stale_quote_in_a_batch_is_refused_alone(db: Database) -> None:
    revision = await stored_revision(db)
    writer = QuoteWriter(db.engine, max_batch=256)
    rows = [row(revision if i % 3 else revision - 1) for i in range(30)]
    try:
        before = batches()
        # Queued in one go while the writer is idle: they form one batch.
        results = await asyncio.gather(*(writer.store(r) for r in rows))
        assert batches()[0] - before[0] == 1
        assert results == [r.snapshot_revision == revision for r in rows]
        assert await stored_ids(db, [r.id for r in rows]) == {
            r.id for r in rows if r.snapshot_revision == revision
        }
    finally:
        await writer.close()
        await delete_quotes(db, [r.id for r in rows])


async def test_a_value_the_database_refuses_fails_only_its_own_quote(db: Database) -> None:
    revision = await stored_revision(db)
    writer = QuoteWriter(db.engine, max_batch=256)
    rows = [row(revision, customer_id="bad\x00id" if i == 4 else f"c-{i}") for i in range(10)]
    try:
        results = await asyncio.gather(*(writer.store(r) for r in rows))
        assert results == [i != 4 for i in range(10)]
        assert await stored_ids(db, [r.id for r in rows]) == {r.id for r in rows} - {rows[4].id}
        assert await writer.store(row(revision)) is True  # the connection is still fine
    finally:
        await writer.close()
        await delete_quotes(db, [r.id for r in rows])


async def test_a_refused_value_over_http_is_a_422_and_its_neighbours_are_stored(
    pricing_db: str,
) -> None:
    app: FastAPI = make_app(pricing_db)
    async with committing_client(app, headers=bearer(API_TOKEN)) as client:
        sku = uniq("nul")
        await put_product(client, sku, 500)
        await current_snapshot(app, client)
        bodies = [quote_body(sku, customer={"id": f"c-{i}"}) for i in range(8)]
        bodies[3] = quote_body(sku, customer={"id": "nul\x00byte"})
        responses = await asyncio.gather(*(client.post("/v1/quotes", json=b) for b in bodies))
        assert assert_problem(responses[3], 422)["type"].endswith("/invalid-input")
        for i, response in enumerate(responses):
            if i != 3:
                assert response.status_code == 201, response.text
                assert await stored_results(app, response.json()["id"]) == [response.json()]


async def test_shutdown_writes_and_answers_everything_queued(db: Database) -> None:
    revision = await stored_revision(db)
    writer = QuoteWriter(db.engine, max_batch=4)
    rows = [row(revision) for _ in range(25)]
    try:
        waiters = [asyncio.create_task(writer.store(r)) for r in rows]
        await asyncio.sleep(0)  # all queued; close before the writer has written them
        await writer.close()
        assert all(w.done() for w in waiters)
        assert [w.result() for w in waiters] == [True] * 25
        assert await stored_ids(db, [r.id for r in rows]) == {r.id for r in rows}
        # Closed: the caller is told to take the full path, nothing hangs.
        assert await writer.store(row(revision)) is False
    finally:
        await delete_quotes(db, [r.id for r in rows])


async def test_a_request_cancelled_while_queued_is_not_written(db: Database) -> None:
    revision = await stored_revision(db)
    writer = QuoteWriter(db.engine, max_batch=256)
    rows = [row(revision) for _ in range(3)]
    try:
        waiters = [asyncio.create_task(writer.store(r)) for r in rows]
        await asyncio.sleep(0)  # all three queued; the writer runs after this test step
        waiters[1].cancel()
        done = await asyncio.gather(*waiters, return_exceptions=True)
        assert done[0] is True and done[2] is True
        assert isinstance(done[1], asyncio.CancelledError)
        assert await stored_ids(db, [r.id for r in rows]) == {rows[0].id, rows[2].id}
    finally:
        await writer.close()
        await delete_quotes(db, [r.id for r in rows])


async def test_a_failed_statement_fails_every_waiter_of_the_batch(pricing_db: str) -> None:
    # A database that does not exist: connecting fails, as it would with the server down.
    missing = pricing_db.rsplit("/", 1)[0] + "/azora_test_pricing_missing"
    engine = create_async_engine(missing)
    writer = QuoteWriter(engine, max_batch=256)
    try:
        results = await asyncio.gather(
            *(writer.store(row(1)) for _ in range(5)), return_exceptions=True
        )
        assert len(results) == 5
        assert all(isinstance(r, Exception) for r in results), results
    finally:
        await writer.close()
        await engine.dispose()


async def test_a_quote_whose_connection_died_is_a_5xx_and_the_next_is_stored(
    pricing_db: str,
) -> None:
    app: FastAPI = make_app(pricing_db)
    # The 5xx is rendered by the app; the test client must not re-raise the error behind it.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        running(app),
        httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, headers=bearer(API_TOKEN)
        ) as client,
    ):
        sku = uniq("down")
        await put_product(client, sku, 500)
        await current_snapshot(app, client)
        assert (await client.post("/v1/quotes", json=quote_body(sku))).status_code == 201
        async with app.state.db.engine.connect() as conn:  # as a database restart would
            await conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = 'azora-pricing'"
                    " AND pid <> pg_backend_pid()"
                )
            )
        # A 5xx problem: 503 database-unavailable when the driver reports the lost connection
        # as such, 500 when the failure surfaces otherwise (which one depends on timing).
        failed = await client.post("/v1/quotes", json=quote_body(sku))
        assert failed.status_code in (500, 503), failed.text
        assert_problem(failed, failed.status_code)
        # The writer dropped the dead connection; the next batch takes a fresh one.
        response = await client.post("/v1/quotes", json=quote_body(sku))
        assert response.status_code == 201, response.text
        assert await stored_results(app, response.json()["id"]) == [response.json()]


async def test_without_the_writer_quotes_take_one_insert_each(pricing_db: str) -> None:
    app: FastAPI = make_app(pricing_db, coalesce_quote_writes=False)
    async with committing_client(app, headers=bearer(API_TOKEN)) as client:
        assert app.state.quote_writer is None
        sku = uniq("solo")
        await put_product(client, sku, 250)
        await current_snapshot(app, client)
        before = batches()
        response = await client.post("/v1/quotes", json=quote_body(sku, 2))
        assert response.status_code == 201, response.text
        assert response.json()["total"] == 500
        assert await stored_results(app, response.json()["id"]) == [response.json()]
        assert batches() == before
        refused = await client.post("/v1/quotes", json=quote_body(sku, customer={"id": "a\x00b"}))
        assert assert_problem(refused, 422)["type"].endswith("/invalid-input")
