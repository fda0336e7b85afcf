"""Enrollment decisions: seats, waitlist, refusals with reasons, windows, eligibility, bulk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.enrollment.helpers import (
    clock_of,
    enroll,
    iso,
    move,
    put_cohort,
    spec,
    status,
)


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


async def test_position_hidden_when_not_visible(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(
        client, ns, "c", spec(capacity=0 + 1, waitlist={"enabled": True, "positionVisible": False})
    )
    await enroll(client, f"{ns}/c", "a")
    waiting = await enroll(client, f"{ns}/c", "b")
    assert waiting["state"] == "waitlisted"
    assert waiting["waitlist_position"] is None


async def test_ineligible_waitlisted_student_is_skipped_but_keeps_place(
    client: httpx.AsyncClient, ns: str
) -> None:
    await put_cohort(client, ns, "c", spec(capacity=1, waitlist={"enabled": True}))
    holder = await enroll(client, f"{ns}/c", "holder", segment="pro")
    first = await enroll(client, f"{ns}/c", "first", segment="free")
    second = await enroll(client, f"{ns}/c", "second", segment="pro")
    # Eligibility tightens after they joined: "first" no longer qualifies.
    await put_cohort(
        client,
        ns,
        "c",
        spec(capacity=1, waitlist={"enabled": True}, eligibility={"segments": ["pro"]}),
        generation=2,
    )
    await move(client, holder["id"], "dropped")
    assert (await client.get(f"/v1/enrollments/{second['id']}")).json()["state"] == "enrolled"
    kept = (await client.get(f"/v1/enrollments/{first['id']}")).json()
    assert kept["state"] == "waitlisted"
    assert kept["waitlist_position"] == 1


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


async def test_history_records_who_when_why(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(client, ns, "c", spec(capacity=1, waitlist={"enabled": True}))
    holder = await enroll(client, f"{ns}/c", "holder")
    waiting = await enroll(client, f"{ns}/c", "w")
    await client.post(
        f"/v1/enrollments/{holder['id']}/transitions", json={"to": "dropped", "reason": "moved"}
    )
    mine = (await client.get(f"/v1/enrollments/{holder['id']}/history")).json()["items"]
    assert [(h["from_state"], h["to_state"], h["reason"]) for h in mine] == [
        (None, "enrolled", "enrollment requested"),
        ("enrolled", "dropped", "moved"),
    ]
    assert all(h["actor"].startswith("token:") for h in mine)
    promoted = (await client.get(f"/v1/enrollments/{waiting['id']}/history")).json()["items"]
    assert [(h["from_state"], h["to_state"], h["actor"]) for h in promoted] == [
        (None, "waitlisted", promoted[0]["actor"]),
        ("waitlisted", "enrolled", "system:promotion"),
    ]
    missing = await client.get("/v1/enrollments/00000000-0000-0000-0000-000000000000/history")
    assert missing.status_code == 404


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
