"""The one-statement decision (``enrollment_admit``): it must give exactly the answers of the
general path, whatever this process last saw of the cohort, and keep capacity a database
guarantee across replicas."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from azora_enrollment import repository as repo
from azora_enrollment.models import cohorts, enrollment_history, enrollments, outbox, students
from tests.conftest import API_TOKEN
from tests.enrollment.conftest import AppFactory
from tests.enrollment.helpers import ADMIN, clock_of, enroll, iso, move, put_cohort, spec
from tests.support.apps import bearer, committing_client


def _outcome(result: dict[str, Any]) -> str:
    if result["_status"] == 201:
        return str(result["state"])
    return str(result["type"].rsplit("/", 1)[1])


async def test_spec_changes_are_seen_by_the_next_decision(
    client: httpx.AsyncClient, ns: str
) -> None:
    # Each request below is decided with whatever spec this process cached from the one
    # before; every PUT in between must still win (the revision is re-checked in the
    # deciding statement).
    cohort = f"{ns}/c"
    await put_cohort(client, ns, "c", spec(capacity=1))
    assert (await enroll(client, cohort, "a"))["state"] == "enrolled"
    assert _outcome(await enroll(client, cohort, "b", expect=409)) == "cohort-full"

    await put_cohort(client, ns, "c", spec(capacity=2), generation=2)
    assert (await enroll(client, cohort, "b"))["state"] == "enrolled"

    await put_cohort(
        client,
        ns,
        "c",
        spec(capacity=3, waitlist={"enabled": True}, eligibility={"segments": ["pro"]}),
        generation=3,
    )
    refused = await enroll(client, cohort, "c", segment="free", expect=409)
    assert refused["type"].endswith("/not-eligible")
    assert refused["unmet"] == [{"requirement": "segment", "segment": "free", "allowed": ["pro"]}]
    seated = await enroll(client, cohort, "d", segment="pro")
    assert seated["state"] == "enrolled"
    waiting = await enroll(client, cohort, "e", segment="pro")
    assert (waiting["state"], waiting["waitlist_position"]) == ("waitlisted", 1)
    # The answers are built without reading the row back: they equal what a read shows.
    for answer in (seated, waiting):
        stored = (await client.get(f"/v1/enrollments/{answer['id']}")).json()
        assert stored == {k: v for k, v in answer.items() if k != "_status"}

    later = datetime.now(UTC) + timedelta(days=1)
    await put_cohort(
        client,
        ns,
        "c",
        spec(capacity=3, opensAt=iso(later), waitlist={"enabled": True}),
        generation=4,
    )
    closed = await enroll(client, cohort, "f", expect=409)
    assert closed["type"].endswith("/enrollment-window-closed")


async def test_refusals_leave_nothing_behind(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(client, ns, "c", spec(capacity=1, eligibility={"segments": ["pro"]}))
    await enroll(client, f"{ns}/c", "a", segment="pro")
    full = await enroll(client, f"{ns}/c", f"{ns}-late", segment="pro", expect=409)
    assert full["type"].endswith("/cohort-full")
    ineligible = await enroll(client, f"{ns}/c", f"{ns}-free", segment="free", expect=409)
    assert ineligible["type"].endswith("/not-eligible")
    app = client.app  # type: ignore[attr-defined]
    async with app.state.db.sessionmaker() as session:
        stored = await session.execute(
            sa.select(students.c.id).where(students.c.id.in_([f"{ns}-late", f"{ns}-free"]))
        )
        assert stored.all() == []


async def test_deleted_and_restored_cohort(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(client, ns, "c", spec(capacity=5))
    await enroll(client, f"{ns}/c", "a")
    deleted = await client.delete(f"/admin/v1/cohorts/{ns}/c", headers=ADMIN)
    assert deleted.status_code == 204
    gone = await enroll(client, f"{ns}/c", "b", expect=404)
    assert gone["type"].endswith("/cohort-not-found")
    await put_cohort(client, ns, "c", spec(capacity=5), generation=2)
    assert (await enroll(client, f"{ns}/c", "b"))["state"] == "enrolled"
    again = await enroll(client, f"{ns}/c", "a", expect=409)
    assert again["type"].endswith("/already-enrolled")


async def test_newcomer_expires_dead_offers_before_deciding(
    client: httpx.AsyncClient, ns: str
) -> None:
    # Offer mode: a dead offer still holds its seat until someone expires it. The newcomer's
    # statement notices under the lock and the general path expires it first.
    await put_cohort(
        client,
        ns,
        "c",
        spec(capacity=1, waitlist={"enabled": True, "mode": "offer", "claimWindow": "1h"}),
    )
    a = await enroll(client, f"{ns}/c", "a")
    b = await enroll(client, f"{ns}/c", "b")
    await move(client, a["id"], "dropped")
    assert (await client.get(f"/v1/enrollments/{b['id']}")).json()["state"] == "offered"
    clock_of(client.app).advance(timedelta(hours=2))  # type: ignore[attr-defined]
    c = await enroll(client, f"{ns}/c", "c")
    assert c["state"] == "enrolled"
    assert (await client.get(f"/v1/enrollments/{b['id']}")).json()["state"] == "offer_expired"


async def test_priced_enrollment_holds_the_seat_and_queues_the_charge(
    client: httpx.AsyncClient, ns: str
) -> None:
    await put_cohort(
        client, ns, "paid", spec(capacity=2, pricing={"product": "sku-1", "currency": "EUR"})
    )
    view = await enroll(client, f"{ns}/paid", "a")
    assert view["state"] == "pending_payment"
    assert view["payment"] == {
        "quote_id": None,
        "amount": None,
        "currency": None,
        "transaction_id": None,
        "charged_at": None,
        "refund_transaction_id": None,
        "error": None,
    }
    # The answer equals what a later read shows.
    stored = (await client.get(f"/v1/enrollments/{view['id']}")).json()
    assert stored == {k: v for k, v in view.items() if k != "_status"}
    app = client.app  # type: ignore[attr-defined]
    async with app.state.db.sessionmaker() as session:
        jobs = await session.execute(
            sa.select(outbox.c.kind, outbox.c.status).where(
                outbox.c.enrollment_id == uuid.UUID(view["id"])
            )
        )
        assert jobs.all() == [("charge", "pending")]
        history = await session.execute(
            sa.select(enrollment_history.c.from_state, enrollment_history.c.to_state).where(
                enrollment_history.c.enrollment_id == uuid.UUID(view["id"])
            )
        )
        assert history.all() == [(None, "pending_payment")]


async def test_stale_revision_decides_nothing(client: httpx.AsyncClient, ns: str) -> None:
    # The guard itself, at the database: a caller holding an old revision gets "stale" and
    # nothing is written, not even the student.
    await put_cohort(client, ns, "c", spec(capacity=5))
    app = client.app  # type: ignore[attr-defined]
    async with app.state.db.sessionmaker() as session:
        row = await repo.get_cohort(session, ns, "c")
        assert row is not None
        decided = await repo.admit(
            session,
            repo.AdmitArgs(
                scope="POST /v1/enrollments",
                key=None,
                request_hash=None,
                request_body=None,
                key_expired_before=datetime.now(UTC),
                view="{}",
                namespace=ns,
                name="c",
                revision=row.revision - 1,
                open=True,
                student=f"{ns}-x",
                segment=None,
                attributes=None,
                allowed_segments=None,
                prerequisites=None,
                priorities="{}",
                default_priority=0,
                seat_state="enrolled",
                waitlist_enabled=False,
                waitlist_capacity=None,
                offer_mode=False,
                position_visible=True,
                id=uuid.uuid4(),
                now=datetime.now(UTC),
                actor="test",
                reason="test",
            ),
        )
        assert decided.outcome == "stale"
        assert (
            await session.execute(sa.select(students.c.id).where(students.c.id == f"{ns}-x"))
        ).first() is None
        assert (
            await session.execute(
                sa.select(sa.func.count()).where(enrollments.c.cohort_id == row.id)
            )
        ).scalar_one() == 0


@pytest.mark.integration
async def test_two_replicas_race_for_seats_and_places(make_app: AppFactory, ns: str) -> None:
    # Two app instances, each with its own connection pool (as two replicas): the cohort row
    # lock, not anything in the process, is what keeps the counts exact.
    first, second = make_app(), make_app()
    async with (
        committing_client(first, headers=bearer(API_TOKEN)) as one,
        committing_client(second, headers=bearer(API_TOKEN)) as two,
    ):
        await put_cohort(
            one, ns, "race", spec(capacity=50, waitlist={"enabled": True, "capacity": 30})
        )
        results = await asyncio.gather(
            *(
                enroll(one if i % 2 else two, f"{ns}/race", f"s{i}", expect=None, key=f"k{i}")
                for i in range(200)
            )
        )
        outcomes = Counter(_outcome(r) for r in results)
        assert outcomes == {"enrolled": 50, "waitlisted": 30, "cohort-full": 120}
        positions = sorted(
            r["waitlist_position"] for r in results if r.get("state") == "waitlisted"
        )
        assert positions == list(range(1, 31))  # each place given once, in order
        async with first.state.db.sessionmaker() as session:
            row = (
                await session.execute(
                    sa.select(cohorts).where(cohorts.c.namespace == ns, cohorts.c.name == "race")
                )
            ).one()
            counts = dict(
                (
                    await session.execute(
                        sa.select(enrollments.c.state, sa.func.count())
                        .where(enrollments.c.cohort_id == row.id)
                        .group_by(enrollments.c.state)
                    )
                ).all()
            )
        assert (row.seats_taken, row.waitlisted) == (50, 30)
        assert counts == {"enrolled": 50, "waitlisted": 30}


@pytest.mark.integration
async def test_bulk_and_single_requests_for_the_same_students(
    make_app: AppFactory, ns: str
) -> None:
    # Lock order: a bulk request holds the cohort lock and then writes each student row; a
    # single request must not hold a student row while it queues for the cohort (it would
    # deadlock with the bulk). Every student ends with exactly one enrollment, no 5xx.
    app = make_app()
    async with committing_client(app, headers=bearer(API_TOKEN)) as client:
        await put_cohort(client, ns, "c", spec(capacity=500))
        names = [f"s{i}" for i in range(60)]

        async def bulk() -> httpx.Response:
            return await client.post(
                f"/v1/cohorts/{ns}/c/enrollments:bulk",
                json={"items": [{"student": {"id": n, "segment": "pro"}} for n in names]},
            )

        results = await asyncio.gather(
            *(enroll(client, f"{ns}/c", n, segment="pro", expect=None) for n in names[::-1]),
            bulk(),
        )
        singles, batch = results[:-1], results[-1]
        assert isinstance(batch, httpx.Response)
        assert batch.status_code == 200, batch.text
        assert {s["_status"] for s in singles} <= {201, 409}  # type: ignore[index]
        items = batch.json()["results"]
        assert {i["status"] for i in items} <= {201, 409}
        enrolled = sum(s["_status"] == 201 for s in singles)  # type: ignore[index]
        enrolled += sum(i["status"] == 201 for i in items)
        assert enrolled == len(names)
        async with app.state.db.sessionmaker() as session:
            row = (
                await session.execute(
                    sa.select(cohorts).where(cohorts.c.namespace == ns, cohorts.c.name == "c")
                )
            ).one()
        assert row.seats_taken == len(names)
