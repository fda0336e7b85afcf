"""Analytics (``azora_enrollment.analytics``): derived from the rows and the history."""

from __future__ import annotations

import httpx

from tests.enrollment.helpers import enroll, move, put_cohort, spec


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
