"""What clients read (``azora_enrollment.views``): history, waitlist positions, cohort views."""

from __future__ import annotations

import httpx

from tests.enrollment.helpers import (
    enroll,
    put_cohort,
    spec,
)


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


async def test_position_hidden_when_not_visible(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(
        client, ns, "c", spec(capacity=0 + 1, waitlist={"enabled": True, "positionVisible": False})
    )
    await enroll(client, f"{ns}/c", "a")
    waiting = await enroll(client, f"{ns}/c", "b")
    assert waiting["state"] == "waitlisted"
    assert waiting["waitlist_position"] is None


async def test_cohort_view_listing_and_waitlist(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(client, ns, "c", spec(capacity=1, waitlist={"enabled": True}))
    seated = await enroll(client, f"{ns}/c", "a")
    first = await enroll(client, f"{ns}/c", "b")
    second = await enroll(client, f"{ns}/c", "c")
    view = (await client.get(f"/v1/cohorts/{ns}/c")).json()
    assert (view["cohort"], view["capacity"], view["seats_taken"], view["waitlisted"]) == (
        f"{ns}/c",
        1,
        1,
        2,
    )
    assert view["open"] is True
    assert view["waitlist"] == {
        "enabled": True,
        "capacity": None,
        "mode": "autoEnroll",
        "ordering": "fifo",
    }
    listed = (await client.get(f"/v1/cohorts/{ns}/c/enrollments", params={"limit": 2})).json()
    assert len(listed["items"]) == 2
    assert listed["next_after"] == listed["items"][-1]["id"]
    rest = (
        await client.get(
            f"/v1/cohorts/{ns}/c/enrollments", params={"limit": 2, "after": listed["next_after"]}
        )
    ).json()
    assert rest["next_after"] is None
    ids = {i["id"] for i in listed["items"] + rest["items"]}
    assert ids == {seated["id"], first["id"], second["id"]}
    url = f"/v1/cohorts/{ns}/c/enrollments"
    only = (await client.get(url, params={"state": "enrolled"})).json()
    assert [i["id"] for i in only["items"]] == [seated["id"]]
    waitlist = (await client.get(f"/v1/cohorts/{ns}/c/waitlist", params={"offset": 1})).json()
    assert waitlist["waitlisted"] == 2
    assert [(i["id"], i["waitlist_position"]) for i in waitlist["items"]] == [(second["id"], 2)]
    missing = await client.get(f"/v1/cohorts/{ns}/absent")
    assert missing.status_code == 404
