"""Analytics (``azora_enrollment.analytics``): derived from the rows and the history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from azora_enrollment.app import sweep_offers_once
from tests.enrollment.helpers import clock_of, enroll, move, put_cohort, spec


async def test_cohort_analytics_and_summary(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(client, ns, "c", spec(capacity=1, waitlist={"enabled": True}))
    first = await enroll(client, f"{ns}/c", "a")
    waiting = await enroll(client, f"{ns}/c", "b")
    assert waiting["state"] == "waitlisted"
    await move(client, first["id"], "dropped")  # b is promoted to the freed seat
    report = (await client.get(f"/v1/analytics/cohorts/{ns}/c")).json()
    assert (report["capacity"], report["seats_taken"], report["enrolled"]) == (1, 1, 1)
    assert report["fill_rate"] == "1.0000"
    assert (report["ever_waitlisted"], report["ever_enrolled"]) == (1, 2)
    assert report["waitlist_conversion"] == "1.0000"
    assert report["drop_rate"] == "0.5000"
    assert report["states"] == {"enrolled": 1, "dropped": 1}
    assert sum(d["enrolled"] for d in report["enrollments_per_day"]) == 2
    assert report["time_to_seat"]["median_seconds_from_waitlist"] is not None
    summary = (await client.get("/v1/analytics/summary")).json()
    mine = [c for c in summary["by_cohort"] if c["cohort"] == f"{ns}/c"]
    assert mine == [
        {
            "cohort": f"{ns}/c",
            "capacity": 1,
            "seats_taken": 1,
            "waitlisted": 0,
            "fill_rate": "1.0000",
        }
    ]
    missing = await client.get(f"/v1/analytics/cohorts/{ns}/absent")
    assert missing.status_code == 404


async def test_cohort_analytics_exact_figures_on_a_scripted_history(
    client: httpx.AsyncClient, ns: str
) -> None:
    # Built through the API on the service's own clock (frozen, then moved by hand), so every
    # figure is known exactly. Capacity 2, waitlist with offers (claim window 1 h).
    app = client.app  # type: ignore[attr-defined]
    clock = clock_of(app)
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    clock.freeze(t0)

    def at(minutes: int) -> None:
        clock.freeze(t0 + timedelta(minutes=minutes))

    cohort = f"{ns}/c"
    waitlist = {"enabled": True, "mode": "offer", "claimWindow": "1h"}
    await put_cohort(client, ns, "c", spec(capacity=2, waitlist=waitlist))
    a = await enroll(client, cohort, "a")  # 09:00 seated at once
    at(10)
    b = await enroll(client, cohort, "b")  # 09:10 seated at once
    queued = {}
    for minute, student in ((20, "c"), (30, "d"), (40, "e"), (50, "h")):
        at(minute)
        queued[student] = await enroll(client, cohort, student)
        assert queued[student]["state"] == "waitlisted"
    at(60)
    await move(client, a["id"], "dropped")  # offer 1 -> c
    at(90)
    await move(client, queued["c"]["id"], "enrolled")  # claimed: 09:20 -> 10:30, 4200 s
    at(120)
    await move(client, b["id"], "dropped")  # offer 2 -> d, until 12:00
    at(185)
    assert await sweep_offers_once(app.state.db, clock) >= 1  # d expires; offer 3 -> e
    at(195)
    await move(client, queued["e"]["id"], "declined")  # offer 4 -> h
    at(225)
    await move(client, queued["h"]["id"], "enrolled")  # claimed: 09:50 -> 12:45, 10500 s
    at(300)
    await move(client, queued["c"]["id"], "dropped")  # nobody left to offer the seat to

    report = (await client.get(f"/v1/analytics/cohorts/{cohort}")).json()
    assert report["states"] == {
        "enrolled": 1,
        "dropped": 3,
        "offer_expired": 1,
        "declined": 1,
    }
    assert (report["capacity"], report["seats_taken"], report["enrolled"]) == (2, 1, 1)
    assert report["fill_rate"] == "0.5000"  # 1 seat of 2
    assert (report["ever_waitlisted"], report["ever_enrolled"]) == (4, 4)
    assert report["waitlist_conversion"] == "0.5000"  # c and h of c, d, e, h
    assert report["offers"] == {
        "made": 4,
        "claimed": 2,
        "expired": 1,
        "declined": 1,
        "claim_rate": "0.5000",  # 2 of the 4 resolved offers
    }
    assert report["drop_rate"] == "0.7500"  # a, b, c of a, b, c, h
    # Seated: a 0 s, b 0 s, c 4200 s, h 10500 s.
    assert report["time_to_seat"] == {
        "median_seconds": 2100.0,
        "median_seconds_from_waitlist": 7350.0,
    }
    assert report["enrollments_per_day"] == [{"date": "2026-03-02", "enrolled": 4}]
    assert report["generated_at"] == (t0 + timedelta(minutes=300)).isoformat()
    summary = (await client.get("/v1/analytics/summary")).json()
    assert [c for c in summary["by_cohort"] if c["cohort"] == cohort] == [
        {"cohort": cohort, "capacity": 2, "seats_taken": 1, "waitlisted": 0, "fill_rate": "0.5000"}
    ]
