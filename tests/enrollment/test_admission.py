"""Admission (``azora_enrollment.admission`` and its one statement, ``enrollment_admit()``):
seats, waitlist places, refusals with reasons, windows, eligibility, Idempotency-Key, bulk,
and the invariants under concurrency (real commits, two replicas)."""

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
from azora_enrollment.models import (
    cohorts,
    enrollment_history,
    enrollments,
    outbox,
    students,
)
from tests.conftest import API_TOKEN
from tests.enrollment.conftest import AppFactory
from tests.enrollment.helpers import (
    ADMIN,
    clock_of,
    counters_match_rows,
    enroll,
    iso,
    move,
    outcome,
    put_cohort,
    spec,
    status,
)
from tests.support.apps import bearer, committing_client


async def test_seat_then_waitlist_then_full(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(client, ns, "c", spec(capacity=2, waitlist={"enabled": True, "capacity": 2}))
    seated = [await enroll(client, f"{ns}/c", f"s{i}") for i in range(2)]
    assert [s["state"] for s in seated] == ["enrolled", "enrolled"]
    assert all(s["waitlist_position"] is None for s in seated)
    waiting = [await enroll(client, f"{ns}/c", f"w{i}") for i in range(2)]
    assert [(w["state"], w["waitlist_position"]) for w in waiting] == [
        ("waitlisted", 1),
        ("waitlisted", 2),
    ]
    full = await enroll(client, f"{ns}/c", "late", expect=409)
    assert full["type"].endswith("/cohort-full")
    assert "waitlist is full" in full["detail"]
    again = await enroll(client, f"{ns}/c", "s0", expect=409)
    assert again["type"].endswith("/already-enrolled")
    assert again["enrollment_id"] == seated[0]["id"]
    assert again["state"] == "enrolled"
    assert await status(client, ns, "c") | {"revision": 0} == {
        "revision": 0,
        "generation": 1,
        "enrolled": 2,
        "capacity": 2,
        "pending_payment": 0,
        "waitlisted": 2,
        "offered": 0,
        "open": True,
        "pricing": None,
    }


async def test_full_without_waitlist_and_closed_and_unlimited(
    client: httpx.AsyncClient, ns: str
) -> None:
    await put_cohort(client, ns, "one", spec(capacity=1))
    await enroll(client, f"{ns}/one", "a")
    full = await enroll(client, f"{ns}/one", "b", expect=409)
    assert full["type"].endswith("/cohort-full")
    assert full["waitlist_enabled"] is False

    await put_cohort(client, ns, "closed", spec(capacity=0, waitlist={"enabled": True}))
    closed = await enroll(client, f"{ns}/closed", "a", expect=409)
    assert closed["type"].endswith("/enrollment-window-closed")
    assert (await status(client, ns, "closed"))["open"] is False

    await put_cohort(client, ns, "open", spec(capacity=None))
    for i in range(25):
        await enroll(client, f"{ns}/open", f"s{i}")
    assert (await status(client, ns, "open"))["enrolled"] == 25

    missing = await enroll(client, f"{ns}/nope", "a", expect=404)
    assert missing["type"].endswith("/cohort-not-found")


async def test_window_edges(client: httpx.AsyncClient, ns: str) -> None:
    opens = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)
    closes = opens + timedelta(days=7)
    await put_cohort(client, ns, "c", spec(opensAt=iso(opens), closesAt=iso(closes)))
    clock = clock_of(client.app)  # type: ignore[attr-defined]
    probes = [
        (opens - timedelta(microseconds=1), 409),
        (opens, 201),  # the opening instant is inside the window
        (closes - timedelta(microseconds=1), 201),
        (closes, 409),  # the closing instant is not
    ]
    for i, (at, expected) in enumerate(probes):
        clock.freeze(at)
        result = await enroll(client, f"{ns}/c", f"s{i}", expect=expected)
        if expected == 409:
            assert result["type"].endswith("/enrollment-window-closed")
            assert result["opens_at"] == opens.isoformat()
            assert result["closes_at"] == closes.isoformat()
    clock.freeze(opens - timedelta(seconds=1))
    assert (await status(client, ns, "c"))["open"] is False
    clock.freeze(opens)
    assert (await status(client, ns, "c"))["open"] is True


async def test_eligibility_segments_and_prerequisites(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(client, ns, "basics", spec())
    await put_cohort(
        client,
        ns,
        "advanced",
        spec(eligibility={"segments": ["pro", "staff"], "prerequisites": [f"{ns}/basics"]}),
    )
    wrong_segment = await enroll(client, f"{ns}/advanced", "amy", segment="free", expect=409)
    assert wrong_segment["type"].endswith("/not-eligible")
    assert wrong_segment["unmet"] == [
        {"requirement": "segment", "segment": "free", "allowed": ["pro", "staff"]},
        {"requirement": "prerequisites", "missing": [f"{ns}/basics"]},
    ]
    no_prereq = await enroll(client, f"{ns}/advanced", "amy", segment="pro", expect=409)
    assert no_prereq["unmet"] == [{"requirement": "prerequisites", "missing": [f"{ns}/basics"]}]
    # Refused requests leave nothing behind, the segment included: it is stored from here.
    basics = await enroll(client, f"{ns}/basics", "amy", segment="pro")
    # Enrolled is not completed: still not eligible.
    await enroll(client, f"{ns}/advanced", "amy", expect=409)
    await move(client, basics["id"], "completed")
    # The stored segment ("pro") is used when the request omits it.
    ok = await enroll(client, f"{ns}/advanced", "amy")
    assert ok["state"] == "enrolled"
    assert ok["student"] == {"id": "amy", "segment": "pro"}


async def test_priority_ordering_and_positions(client: httpx.AsyncClient, ns: str) -> None:
    waitlist = {
        "enabled": True,
        "ordering": "priority",
        "priorityRules": [{"segment": "staff", "priority": 0}, {"segment": "pro", "priority": 5}],
    }
    await put_cohort(client, ns, "c", spec(capacity=1, waitlist=waitlist))
    holder = await enroll(client, f"{ns}/c", "holder")
    arrivals = [("f1", "free"), ("p1", "pro"), ("s1", "staff"), ("f2", None), ("p2", "pro")]
    positions = {}
    for student, segment in arrivals:
        positions[student] = (await enroll(client, f"{ns}/c", student, segment=segment))[
            "waitlist_position"
        ]
    # Positions at the time of joining: staff jumps ahead, unruled segments queue last.
    assert positions == {"f1": 1, "p1": 1, "s1": 1, "f2": 4, "p2": 3}
    queue = (await client.get(f"/v1/cohorts/{ns}/c/waitlist")).json()
    assert [(e["student"]["id"], e["waitlist_position"]) for e in queue["items"]] == [
        ("s1", 1),
        ("p1", 2),
        ("p2", 3),
        ("f1", 4),
        ("f2", 5),
    ]
    # Each drop promotes the head of the queue, in priority order.
    order = []
    current = holder
    for _ in range(5):
        await move(client, current["id"], "dropped")
        enrolled = (
            await client.get(f"/v1/cohorts/{ns}/c/enrollments", params={"state": "enrolled"})
        ).json()["items"]
        assert len(enrolled) == 1
        current = enrolled[0]
        order.append(current["student"]["id"])
    assert order == ["s1", "p1", "p2", "f1", "f2"]


async def test_idempotent_enrollment(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(client, ns, "c", spec())
    body = {"cohort": f"{ns}/c", "student": {"id": "amy"}}
    first = await client.post("/v1/enrollments", json=body, headers={"Idempotency-Key": "k1"})
    replay = await client.post("/v1/enrollments", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    reused = await client.post(
        "/v1/enrollments",
        json={"cohort": f"{ns}/c", "student": {"id": "bob"}},
        headers={"Idempotency-Key": "k1"},
    )
    assert reused.status_code == 422
    assert reused.json()["differing_fields"] == ["student.id"]
    assert (await status(client, ns, "c"))["enrolled"] == 1


async def test_bulk_with_partial_failures(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(
        client,
        ns,
        "c",
        spec(
            capacity=3,
            waitlist={"enabled": True, "capacity": 1},
            eligibility={"segments": ["pro"]},
        ),
    )
    await enroll(client, f"{ns}/c", "already", segment="pro")
    items = [
        {"student": {"id": "a", "segment": "pro"}},
        {"student": {"id": "already"}},
        {"student": {"id": "b", "segment": "free"}},
        {"student": {"id": "c", "segment": "pro"}},
        {"student": {"id": "a"}},  # duplicate inside the batch
        {"student": {"id": "d", "segment": "pro"}},
        {"student": {"id": "e", "segment": "pro"}},
    ]
    response = await client.post(f"/v1/cohorts/{ns}/c/enrollments:bulk", json={"items": items})
    assert response.status_code == 200, response.text
    body = response.json()
    outcomes = [
        (r["index"], r["status"], r.get("enrollment", {}).get("state") or r["problem"]["type"])
        for r in body["results"]
    ]
    assert outcomes == [
        (0, 201, "enrolled"),
        (1, 409, "https://azora.io/problems/already-enrolled"),
        (2, 409, "https://azora.io/problems/not-eligible"),
        (3, 201, "enrolled"),
        (4, 409, "https://azora.io/problems/already-enrolled"),
        (5, 201, "waitlisted"),
        (6, 409, "https://azora.io/problems/cohort-full"),
    ]
    assert body["summary"] == {
        "enrolled": 2,
        "waitlisted": 1,
        "already-enrolled": 2,
        "not-eligible": 1,
        "cohort-full": 1,
    }
    # The refused items left nothing behind; the counters match the rows.
    assert await status(client, ns, "c") | {"revision": 0} == {
        "revision": 0,
        "generation": 1,
        "enrolled": 3,
        "capacity": 3,
        "pending_payment": 0,
        "waitlisted": 1,
        "offered": 0,
        "open": True,
        "pricing": None,
    }
    cohort = (await client.get(f"/v1/cohorts/{ns}/c")).json()
    assert (cohort["seats_taken"], cohort["waitlisted"]) == (3, 1)


async def test_bulk_limits_and_validation(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(client, ns, "c", spec())
    too_many = [{"student": {"id": f"s{i}"}} for i in range(1001)]
    response = await client.post(f"/v1/cohorts/{ns}/c/enrollments:bulk", json={"items": too_many})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "items"
    empty = await client.post(f"/v1/cohorts/{ns}/c/enrollments:bulk", json={"items": []})
    assert empty.status_code == 422
    bad_id = await client.post("/v1/enrollments", json={"cohort": f"{ns}/c", "student": {"id": ""}})
    assert bad_id.status_code == 422
    assert bad_id.json()["errors"][0]["field"] == "student.id"
    bad_cohort = await client.post(
        "/v1/enrollments", json={"cohort": "no-slash", "student": {"id": "x"}}
    )
    assert bad_cohort.json()["errors"][0]["field"] == "cohort"
    missing = await client.post(
        f"/v1/cohorts/{ns}/nope/enrollments:bulk", json={"items": [{"student": {"id": "a"}}]}
    )
    assert missing.status_code == 404


async def test_spec_changes_are_seen_by_the_next_decision(
    client: httpx.AsyncClient, ns: str
) -> None:
    # Each request below is decided with whatever spec this process cached from the one
    # before; every PUT in between must still win (the revision is re-checked in the
    # deciding statement).
    cohort = f"{ns}/c"
    await put_cohort(client, ns, "c", spec(capacity=1))
    assert (await enroll(client, cohort, "a"))["state"] == "enrolled"
    assert outcome(await enroll(client, cohort, "b", expect=409)) == "cohort-full"

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
    async with app.state.db.driver() as conn:
        decided = await repo.admit(
            conn,
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
    async with app.state.db.sessionmaker() as session:
        assert (
            await session.execute(sa.select(students.c.id).where(students.c.id == f"{ns}-x"))
        ).first() is None
        assert (
            await session.execute(
                sa.select(sa.func.count()).where(enrollments.c.cohort_id == row.id)
            )
        ).scalar_one() == 0


def _slug(response: httpx.Response) -> str:
    return str(response.json()["type"]).rsplit("/", 1)[1]


async def test_unknown_cohort_is_a_404(client: httpx.AsyncClient, ns: str) -> None:
    response = await client.post(
        "/v1/enrollments",
        json={"cohort": f"{ns}/absent", "student": {"id": "s"}},
        headers={"Idempotency-Key": "k"},
    )
    assert response.status_code == 404
    assert _slug(response) == "cohort-not-found"


async def test_refusal_is_stored_under_the_key(client: httpx.AsyncClient, ns: str) -> None:
    # The request began executing, so its refusal is its answer (docs/idempotency.md): a retry
    # with the same key replays the 409 even once the cohort has room; a new attempt takes a
    # new key.
    await put_cohort(client, ns, "c", spec(capacity=0))
    body = {"cohort": f"{ns}/c", "student": {"id": "amy", "segment": "pro"}}
    key = {"Idempotency-Key": f"{ns}-k"}
    refused = await client.post("/v1/enrollments", json=body, headers=key)
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert "Idempotent-Replayed" not in refused.headers
    await put_cohort(client, ns, "c", spec(capacity=1), generation=2)
    replay = await client.post("/v1/enrollments", json=body, headers=key)
    assert (replay.status_code, replay.headers["Idempotent-Replayed"]) == (409, "true")
    assert replay.headers["content-type"] == "application/problem+json"
    assert replay.json() == refused.json()
    other = await client.post(
        "/v1/enrollments",
        json={"cohort": f"{ns}/c", "student": {"id": "amy", "segment": "basic"}},
        headers=key,
    )
    assert other.status_code == 422
    assert _slug(other) == "idempotency-key-reused"
    assert other.json()["differing_fields"] == ["student.segment"]
    taken = await client.post("/v1/enrollments", json=body, headers={"Idempotency-Key": f"{ns}-k2"})
    assert taken.status_code == 201, taken.text
    assert taken.json()["state"] == "enrolled"


async def test_full_refusal_is_stored_by_its_decision(client: httpx.AsyncClient, ns: str) -> None:
    # A full cohort's refusal under a key is stored by the statement that decides it (migration
    # 0008): the same answer as without a key, one key row with it, replayed once there is room.
    await put_cohort(client, ns, "c", spec(capacity=1))
    await enroll(client, f"{ns}/c", "a")
    unkeyed = await client.post(
        "/v1/enrollments", json={"cohort": f"{ns}/c", "student": {"id": "u"}}
    )
    body = {"cohort": f"{ns}/c", "student": {"id": "b"}}
    key = {"Idempotency-Key": f"{ns}-full"}
    refused = await client.post("/v1/enrollments", json=body, headers=key)
    assert (refused.status_code, unkeyed.status_code) == (409, 409)
    assert refused.headers["content-type"] == "application/problem+json"
    assert "Idempotent-Replayed" not in refused.headers
    assert refused.content == unkeyed.content
    assert _slug(refused) == "cohort-full"
    app = client.app  # type: ignore[attr-defined]
    async with app.state.db.sessionmaker() as session:
        stored = await session.execute(
            sa.text(
                "SELECT response_status, response_body FROM idempotency_keys"
                " WHERE scope = 'POST /v1/enrollments' AND key = :key"
            ),
            {"key": f"{ns}-full"},
        )
        assert stored.all() == [(409, refused.json())]
    await put_cohort(client, ns, "c", spec(capacity=2), generation=2)
    replay = await client.post("/v1/enrollments", json=body, headers=key)
    assert (replay.status_code, replay.headers["Idempotent-Replayed"]) == (409, "true")
    assert replay.json() == refused.json()
    other = await client.post(
        "/v1/enrollments", json={"cohort": f"{ns}/c", "student": {"id": "c"}}, headers=key
    )
    assert (other.status_code, _slug(other)) == (422, "idempotency-key-reused")
    assert (await status(client, ns, "c"))["enrolled"] == 1


async def test_validation_failure_leaves_the_key_free(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(client, ns, "c", spec(capacity=1))
    key = {"Idempotency-Key": f"{ns}-v"}
    invalid = await client.post(
        "/v1/enrollments", json={"cohort": f"{ns}/c", "student": {}}, headers=key
    )
    assert invalid.status_code == 422
    body = {"cohort": f"{ns}/c", "student": {"id": "bob"}}
    taken = await client.post("/v1/enrollments", json=body, headers=key)
    assert taken.status_code == 201, taken.text
    assert "Idempotent-Replayed" not in taken.headers


async def test_waitlist_response_and_replay(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(client, ns, "c", spec(capacity=1, waitlist={"enabled": True}))
    first = await client.post("/v1/enrollments", json={"cohort": f"{ns}/c", "student": {"id": "a"}})
    assert first.json()["seated_at"] == first.json()["created_at"]
    body = {"cohort": f"{ns}/c", "student": {"id": "b"}}
    waiting = await client.post("/v1/enrollments", json=body, headers={"Idempotency-Key": "w"})
    assert waiting.status_code == 201
    view = waiting.json()
    assert view["state"] == "waitlisted"
    assert view["waitlist_position"] == 1
    assert view["seated_at"] is None and view["payment"] is None
    assert (await client.get(f"/v1/enrollments/{view['id']}")).json()["state"] == "waitlisted"
    replay = await client.post("/v1/enrollments", json=body, headers={"Idempotency-Key": "w"})
    assert replay.json() == view
    other = await client.post(
        "/v1/enrollments",
        json={"cohort": f"{ns}/c", "student": {"id": "b", "segment": "x"}},
        headers={"Idempotency-Key": "w"},
    )
    assert other.status_code == 422
    assert other.json()["differing_fields"] == ["student.segment"]


async def test_concurrent_duplicates_take_one_place(make_app: AppFactory) -> None:
    # Two replicas, the same key sent 20 times at once: one decision, the rest replay it.
    ns = "t-" + uuid.uuid4().hex[:10]
    one, two = make_app(), make_app()
    async with (
        committing_client(one, headers=bearer(API_TOKEN)) as a,
        committing_client(two, headers=bearer(API_TOKEN)) as b,
    ):
        await put_cohort(a, ns, "c", spec(capacity=5))
        body = {"cohort": f"{ns}/c", "student": {"id": "dup"}}
        responses = await asyncio.gather(
            *(
                (a if i % 2 else b).post(
                    "/v1/enrollments", json=body, headers={"Idempotency-Key": "same"}
                )
                for i in range(20)
            )
        )
        assert Counter(r.status_code for r in responses) == {201: 20}
        assert len({r.json()["id"] for r in responses}) == 1
        assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 19
        assert (await status(a, ns, "c"))["enrolled"] == 1


async def test_concurrent_duplicates_of_a_full_refusal(make_app: AppFactory) -> None:
    # Two replicas, the same key sent 20 times at once at a full cohort: one refusal stored by
    # its decision, the other 19 replay it (none stored twice, none decided as if first).
    ns = "t-" + uuid.uuid4().hex[:10]
    one, two = make_app(), make_app()
    async with (
        committing_client(one, headers=bearer(API_TOKEN)) as a,
        committing_client(two, headers=bearer(API_TOKEN)) as b,
    ):
        await put_cohort(a, ns, "c", spec(capacity=1))
        await enroll(a, f"{ns}/c", "first")
        body = {"cohort": f"{ns}/c", "student": {"id": "dup"}}
        responses = await asyncio.gather(
            *(
                (a if i % 2 else b).post(
                    "/v1/enrollments", json=body, headers={"Idempotency-Key": f"{ns}-same"}
                )
                for i in range(20)
            )
        )
        assert Counter(r.status_code for r in responses) == {409: 20}
        assert len({r.content for r in responses if "Idempotent-Replayed" not in r.headers}) == 1
        assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 19
        assert {_slug(r) for r in responses} == {"cohort-full"}


@pytest.mark.integration
async def test_200_tasks_for_50_seats(make_app: AppFactory, ns: str) -> None:
    app = make_app()
    async with committing_client(app, headers=bearer(API_TOKEN)) as client:
        await put_cohort(client, ns, "race", spec(capacity=50))
        results = await asyncio.gather(
            *(enroll(client, f"{ns}/race", f"s{i}", expect=None) for i in range(200))
        )
        outcomes = Counter(outcome(r) for r in results)
        assert outcomes == {"enrolled": 50, "cohort-full": 150}
        assert (await status(client, ns, "race"))["enrolled"] == 50
        assert await counters_match_rows(app, ns, "race") == {"enrolled": 50}


@pytest.mark.integration
async def test_race_for_seats_and_waitlist_places(make_app: AppFactory, ns: str) -> None:
    app = make_app()
    async with committing_client(app, headers=bearer(API_TOKEN)) as client:
        await put_cohort(
            client, ns, "race", spec(capacity=20, waitlist={"enabled": True, "capacity": 30})
        )
        # The same student twice in the crowd: exactly one of the two gets in.
        students = [f"s{i}" for i in range(150)] + ["s7"]
        results = await asyncio.gather(
            *(enroll(client, f"{ns}/race", s, expect=None) for s in students)
        )
        outcomes = Counter(outcome(r) for r in results)
        assert outcomes["enrolled"] == 20
        assert outcomes["waitlisted"] == 30
        assert outcomes["already-enrolled"] + outcomes["cohort-full"] == 101
        positions = sorted(r["waitlist_position"] for r in results if outcome(r) == "waitlisted")
        assert positions == list(range(1, 31))  # FIFO: each place given once
        assert await counters_match_rows(app, ns, "race") == {"enrolled": 20, "waitlisted": 30}


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
        outcomes = Counter(outcome(r) for r in results)
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


async def test_a_cohort_that_keeps_changing_is_a_409_after_five_statements(
    client: httpx.AsyncClient, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The one retry loop is bounded: a spec that changes under every decision (here: the
    # function always answers stale) ends in a problem, not a loop.
    await put_cohort(client, ns, "c", spec(capacity=5))
    calls: list[repo.AdmitArgs] = []

    async def always_stale(session: Any, args: repo.AdmitArgs) -> repo.Admission:
        calls.append(args)
        return repo.Admission("stale", None, None, None, None, None, None, None, None)

    monkeypatch.setattr(repo, "admit", always_stale)
    refused = await enroll(client, f"{ns}/c", "a", expect=409)
    assert refused["type"].endswith("/cohort-changing")
    assert len(calls) == 5
    assert len({a.id for a in calls}) == 1  # one enrollment id for the request, whatever retries
