"""After admission (``azora_enrollment.lifecycle``): the state machine (every allowed transition
works, every other is refused), promotion, offers and their expiry, also under concurrency."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from azora_enrollment.app import sweep_offers_once
from azora_enrollment.lifecycle import API_TRANSITIONS, TRANSITIONS, transition_allowed
from azora_enrollment.models import ALL_STATES
from tests.conftest import API_TOKEN
from tests.enrollment.conftest import AppFactory
from tests.enrollment.helpers import (
    clock_of,
    counters_match_rows,
    enroll,
    move,
    promotions_per_enrollment,
    put_cohort,
    spec,
    status,
)
from tests.support.apps import bearer, committing_client

EXPECTED = {
    (None, "pending_payment"),
    (None, "enrolled"),
    (None, "waitlisted"),
    ("waitlisted", "enrolled"),  # autoEnroll promotion, unpriced
    ("waitlisted", "pending_payment"),  # autoEnroll promotion, priced
    ("waitlisted", "offered"),  # offer promotion
    ("waitlisted", "dropped"),
    ("offered", "enrolled"),  # claim, unpriced
    ("offered", "pending_payment"),  # claim, priced
    ("offered", "declined"),
    ("offered", "offer_expired"),
    ("pending_payment", "enrolled"),  # charge recorded
    ("pending_payment", "dropped"),
    ("pending_payment", "rejected"),  # payment refused for good
    ("enrolled", "dropped"),
    ("enrolled", "completed"),
}


def test_transition_table() -> None:
    actual = {
        (f, t)
        for f, t in itertools.product([None, *ALL_STATES], ALL_STATES)
        if transition_allowed(f, t)
    }
    assert actual == EXPECTED
    assert set(TRANSITIONS) == {None, *ALL_STATES}
    # What a client may ask for is a subset of the machine.
    assert all(transition_allowed(f, t) for f, t in API_TRANSITIONS)


_counter = itertools.count()


async def reach(client: httpx.AsyncClient, ns: str, state: str) -> tuple[str, str]:
    """A fresh cohort with one enrollment in ``state``; returns (cohort name, enrollment id)."""
    name = f"c{next(_counter)}"
    cohort = f"{ns}/{name}"
    waitlist = {"enabled": True, "mode": "offer", "claimWindow": "1h"}
    if state == "pending_payment":
        await put_cohort(
            client, ns, name, spec(capacity=1, pricing={"product": "sku-1", "currency": "EUR"})
        )
        return name, (await enroll(client, cohort, "target"))["id"]
    await put_cohort(client, ns, name, spec(capacity=1, waitlist=waitlist))
    if state in ("enrolled", "dropped", "completed"):
        target = (await enroll(client, cohort, "target"))["id"]
        if state != "enrolled":
            await move(client, target, state)
        return name, target
    holder = (await enroll(client, cohort, "holder"))["id"]
    target = (await enroll(client, cohort, "target"))["id"]
    if state == "waitlisted":
        return name, target
    await move(client, holder, "dropped")  # the seat goes to "target" as an offer
    if state == "declined":
        await move(client, target, "declined")
    if state == "offer_expired":
        app = client.app  # type: ignore[attr-defined]
        clock = clock_of(app)
        clock.advance(timedelta(hours=1))
        # (Offers left by earlier setups in this test may expire in the same sweep.)
        assert await sweep_offers_once(app.state.db, clock) >= 1
    return name, target


REACHABLE = [s for s in ALL_STATES if s != "rejected"]  # rejected: see test_outbox


async def test_refused_transitions_name_from_and_to(client: httpx.AsyncClient, ns: str) -> None:
    for state in REACHABLE:
        name, target = await reach(client, ns, state)
        current = (await client.get(f"/v1/enrollments/{target}")).json()
        assert current["state"] == state
        before = await status(client, ns, name)
        for to in ALL_STATES:
            if (state, to) in API_TRANSITIONS:
                continue
            refused = await move(client, target, to, expect=409)
            expected_type = (
                "offer-expired"
                if (state, to) == ("offer_expired", "enrolled")
                else "invalid-transition"
            )
            assert refused["type"].endswith("/" + expected_type), (state, to, refused)
            assert (refused["from"], refused["to"]) == (state, to)
        # Nothing moved.
        assert (await client.get(f"/v1/enrollments/{target}")).json()["state"] == state
        assert await status(client, ns, name) == before


async def test_allowed_transitions_work(client: httpx.AsyncClient, ns: str) -> None:
    for state, to in sorted(API_TRANSITIONS):
        name, target = await reach(client, ns, state)
        before = await status(client, ns, name)
        moved = await move(client, target, to)
        assert moved["state"] == to, (state, to)
        after = await status(client, ns, name)
        history = (await client.get(f"/v1/enrollments/{target}/history")).json()["items"]
        assert (history[-1]["from_state"], history[-1]["to_state"]) == (state, to)
        held_before = before["enrolled"] + before["pending_payment"] + before["offered"]
        held_after = after["enrolled"] + after["pending_payment"] + after["offered"]
        # Nobody else waits in these cohorts: a freed seat stays free.
        if to in ("dropped", "declined") and state != "waitlisted":
            assert held_after == held_before - 1, (state, to)
        elif state == "waitlisted":
            assert after["waitlisted"] == before["waitlisted"] - 1
        else:  # claim or completion keeps the seat
            assert held_after == held_before, (state, to)


async def test_priced_claim_goes_to_pending_payment(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(
        client,
        ns,
        "c",
        spec(
            capacity=1,
            waitlist={"enabled": True, "mode": "offer", "claimWindow": "30m"},
            pricing={"product": "sku-1", "currency": "EUR"},
        ),
    )
    holder = await enroll(client, f"{ns}/c", "holder")
    assert holder["state"] == "pending_payment"
    target = await enroll(client, f"{ns}/c", "target")
    await move(client, holder["id"], "dropped")
    offered = (await client.get(f"/v1/enrollments/{target['id']}")).json()
    assert offered["state"] == "offered"
    claimed = await move(client, target["id"], "enrolled")
    assert claimed["state"] == "pending_payment"
    assert claimed["payment"]["transaction_id"] is None


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


@pytest.mark.integration
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
            promoted = await promotions_per_enrollment(app, ns, name)
            assert set(promoted.values()) == {1}  # nobody promoted twice
            counts = await counters_match_rows(app, ns, name)
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


@pytest.mark.integration
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
        promoted = await promotions_per_enrollment(app, ns, "edge")
        assert set(promoted.values()) == {1}
        assert len(promoted) == 5
        await counters_match_rows(app, ns, "edge")


@pytest.mark.integration
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
        promoted = await promotions_per_enrollment(app, ns, "rt")
        assert set(promoted.values()) == {1}
        await counters_match_rows(app, ns, "rt")
