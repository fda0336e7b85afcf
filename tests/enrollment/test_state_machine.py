"""The enrollment state machine: every allowed transition works, every other is refused."""

from __future__ import annotations

import itertools
from datetime import timedelta

import httpx

from azora_enrollment.app import sweep_offers_once
from azora_enrollment.models import ALL_STATES
from azora_enrollment.lifecycle import API_TRANSITIONS, TRANSITIONS, transition_allowed
from tests.enrollment.helpers import clock_of, enroll, move, put_cohort, spec, status

# The machine as the issue describes it, written out independently of the code.
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
