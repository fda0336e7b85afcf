"""Concurrency: the invariants under real commits and many simultaneous requests."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from azora_enrollment.app import sweep_offers_once
from azora_enrollment.models import cohorts, enrollment_history, enrollments
from tests.conftest import API_TOKEN
from tests.enrollment.conftest import AppFactory
from tests.enrollment.helpers import clock_of, enroll, move, put_cohort, spec, status
from tests.support.apps import bearer, committing_client

pytestmark = pytest.mark.integration


def _outcome(result: dict[str, Any]) -> str:
    if result["_status"] == 201:
        return str(result["state"])
    return str(result["type"].rsplit("/", 1)[1])


async def _counters_match_rows(app: FastAPI, ns: str, name: str) -> dict[str, int]:
    """The cohort's counters equal what its enrollment rows say; returns the state counts."""
    async with app.state.db.sessionmaker() as session:
        cohort = (
            await session.execute(
                sa.select(cohorts).where(cohorts.c.namespace == ns, cohorts.c.name == name)
            )
        ).one()
        rows = await session.execute(
            sa.select(enrollments.c.state, sa.func.count())
            .where(enrollments.c.cohort_id == cohort.id)
            .group_by(enrollments.c.state)
        )
        counts = {s: int(n) for s, n in rows}
    held = sum(counts.get(s, 0) for s in ("enrolled", "pending_payment", "offered", "completed"))
    assert cohort.seats_taken == held
    assert cohort.waitlisted == counts.get("waitlisted", 0)
    if cohort.capacity is not None:
        assert cohort.seats_taken <= cohort.capacity
    return counts


async def _promotions_per_enrollment(app: FastAPI, ns: str, name: str) -> Counter[uuid.UUID]:
    async with app.state.db.sessionmaker() as session:
        rows = await session.execute(
            sa.select(enrollment_history.c.enrollment_id)
            .join(cohorts, cohorts.c.id == enrollment_history.c.cohort_id)
            .where(
                cohorts.c.namespace == ns,
                cohorts.c.name == name,
                enrollment_history.c.from_state == "waitlisted",
                enrollment_history.c.to_state != "dropped",
            )
        )
        return Counter(r[0] for r in rows)


async def test_200_tasks_for_50_seats(make_app: AppFactory, ns: str) -> None:
    app = make_app()
    async with committing_client(app, headers=bearer(API_TOKEN)) as client:
        await put_cohort(client, ns, "race", spec(capacity=50))
        results = await asyncio.gather(
            *(enroll(client, f"{ns}/race", f"s{i}", expect=None) for i in range(200))
        )
        outcomes = Counter(_outcome(r) for r in results)
        assert outcomes == {"enrolled": 50, "cohort-full": 150}
        assert (await status(client, ns, "race"))["enrolled"] == 50
        assert await _counters_match_rows(app, ns, "race") == {"enrolled": 50}


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
        outcomes = Counter(_outcome(r) for r in results)
        assert outcomes["enrolled"] == 20
        assert outcomes["waitlisted"] == 30
        assert outcomes["already-enrolled"] + outcomes["cohort-full"] == 101
        positions = sorted(r["waitlist_position"] for r in results if _outcome(r) == "waitlisted")
        assert positions == list(range(1, 31))  # FIFO: each place given once
        assert await _counters_match_rows(app, ns, "race") == {"enrolled": 20, "waitlisted": 30}


async def test_concurrent_drops_promote_each_student_at_most_once(
    make_app: AppFactory, ns: str
) -> None:
    app = make_app()
    async with committing_client(app, headers=bearer(API_TOKEN)) as client:
        for name, mode in (("auto", "autoEnroll"), ("offer", "offer")):
            await put_cohort(
                client,
                ns,
                name,
                spec(capacity=15, waitlist={"enabled": True, "mode": mode, "claimWindow": "1h"}),
            )
            seated = [await enroll(client, f"{ns}/{name}", f"s{i}") for i in range(15)]
            waiting = [await enroll(client, f"{ns}/{name}", f"w{i}") for i in range(40)]
            # Everyone seated drops at once, and 10 of the waitlist leave at the same time.
            leaving = waiting[5:15]

            async def leave(enrollment_id: str) -> dict[str, Any]:
                result = await move(client, enrollment_id, "dropped", expect=None)
                if result["_status"] == 409 and result["from"] == "offered":
                    # Promoted to an offer a moment ago: an offer is declined, not dropped.
                    result = await move(client, enrollment_id, "declined", expect=None)
                return result

            results = await asyncio.gather(*(leave(e["id"]) for e in seated + leaving))
            assert all(r["_status"] == 200 for r in results), results
            promoted = await _promotions_per_enrollment(app, ns, name)
            assert set(promoted.values()) == {1}  # nobody promoted twice
            counts = await _counters_match_rows(app, ns, name)
            seat_state = "enrolled" if mode == "autoEnroll" else "offered"
            # Every freed seat was refilled (a leaver may have been promoted just before
            # leaving; their seat was then refilled too).
            left_count = counts.pop("dropped") + counts.pop("declined", 0)
            assert left_count == 25
            assert counts == {seat_state: 15, "waitlisted": 15}
            left = {e["id"] for e in leaving}
            holders = (
                await client.get(
                    f"/v1/cohorts/{ns}/{name}/enrollments",
                    params={"state": seat_state, "limit": 100},
                )
            ).json()["items"]
            # The seats went to the head of the queue, minus those who left.
            expected_heads = [e["id"] for e in waiting if e["id"] not in left][:15]
            assert {h["id"] for h in holders} == set(expected_heads)
            assert {h["id"] for h in holders} <= {str(i) for i in promoted}


async def _offers(client: httpx.AsyncClient, ns: str, name: str, n: int, window: str) -> list[str]:
    await put_cohort(
        client,
        ns,
        name,
        spec(capacity=n, waitlist={"enabled": True, "mode": "offer", "claimWindow": window}),
    )
    seated = [await enroll(client, f"{ns}/{name}", f"s{i}") for i in range(n)]
    waiting = [await enroll(client, f"{ns}/{name}", f"w{i}") for i in range(2 * n)]
    for e in seated:
        await move(client, e["id"], "dropped")
    return [e["id"] for e in waiting]


async def _offer_outcomes(
    client: httpx.AsyncClient, ids: list[str], claims: list[dict[str, Any]]
) -> None:
    """Each claimed offer has exactly one outcome, and the claim's answer says which."""
    for enrollment_id, claim in zip(ids, claims, strict=True):
        current = (await client.get(f"/v1/enrollments/{enrollment_id}")).json()
        history = (await client.get(f"/v1/enrollments/{enrollment_id}/history")).json()["items"]
        exits = [h for h in history if h["from_state"] == "offered"]
        assert len(exits) == 1, history
        if claim["_status"] == 200:
            assert current["state"] == exits[0]["to_state"] == "enrolled"
        else:
            assert claim["_status"] == 409
            assert claim["type"].endswith("/offer-expired")
            assert current["state"] == exits[0]["to_state"] == "offer_expired"


async def test_claim_at_the_expiry_instant_loses(make_app: AppFactory, ns: str) -> None:
    app = make_app()
    async with committing_client(app, headers=bearer(API_TOKEN)) as client:
        ids = await _offers(client, ns, "edge", 3, "1h")
        offered = [(await client.get(f"/v1/enrollments/{i}")).json() for i in ids[:3]]
        assert {o["state"] for o in offered} == {"offered"}
        expires = datetime.fromisoformat(offered[0]["offer_expires_at"])
        clock = clock_of(app)
        clock.freeze(expires - timedelta(microseconds=1))
        claimed = await move(client, ids[0], "enrolled")  # just inside the window
        assert claimed["state"] == "enrolled"
        # The expiry instant belongs to the expiry (offers were made moments apart: take the
        # later instant of the two).
        clock.freeze(max(datetime.fromisoformat(o["offer_expires_at"]) for o in offered[1:]))
        claims = await asyncio.gather(
            move(client, ids[1], "enrolled", expect=None),
            sweep_offers_once(app.state.db, clock),
            move(client, ids[2], "enrolled", expect=None),
        )
        await _offer_outcomes(client, ids[1:3], [claims[0], claims[2]])
        assert [c["_status"] for c in (claims[0], claims[2])] == [409, 409]
        # The two expired offers passed to the next two in the queue, once each.
        promoted = await _promotions_per_enrollment(app, ns, "edge")
        assert set(promoted.values()) == {1}
        assert len(promoted) == 5
        await _counters_match_rows(app, ns, "edge")


async def test_claims_racing_the_expiry_task(make_app: AppFactory, ns: str) -> None:
    # Real time, a short claim window, the sweeper running in the background (as on a
    # replica) plus a second sweeper loop (as another replica): whoever wins, one outcome.
    app = make_app(background_tasks=True, offer_sweep_interval_s=0.01)
    async with committing_client(app, headers=bearer(API_TOKEN)) as client:
        ids = await _offers(client, ns, "rt", 12, "1h")
        offered = ids[:12]
        views = [(await client.get(f"/v1/enrollments/{i}")).json() for i in offered]
        instants = sorted(datetime.fromisoformat(v["offer_expires_at"]) for v in views)
        clock = clock_of(app)
        # Jump the (running, not frozen) clock to just before the first expiry: the claims
        # below land on both sides of the expiry instants, which are spread over the setup.
        clock.advance(instants[0] - clock.now() - timedelta(milliseconds=30))

        async def other_replica() -> None:
            for _ in range(20):
                await sweep_offers_once(app.state.db, clock_of(app))
                await asyncio.sleep(0.005)

        results = await asyncio.gather(
            *(move(client, i, "enrolled", expect=None) for i in offered), other_replica()
        )
        claims = [r for r in results if r is not None]
        await _offer_outcomes(client, offered, claims)
        promoted = await _promotions_per_enrollment(app, ns, "rt")
        assert set(promoted.values()) == {1}
        await _counters_match_rows(app, ns, "rt")
