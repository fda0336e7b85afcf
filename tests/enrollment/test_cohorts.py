"""The admin API the operator calls: store, replace, generations, semantic refusals, status."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from azora_enrollment.models import cohorts
from tests.enrollment.conftest import AppFactory
from tests.enrollment.helpers import ADMIN, enroll, put_cohort, spec, status
from tests.support.apps import bearer, rollback_client


async def test_put_list_status_delete(client: httpx.AsyncClient, ns: str) -> None:
    first = await put_cohort(client, ns, "alpha", spec(capacity=3))
    assert first["generation"] == 1
    listed = (await client.get("/admin/v1/cohorts", headers=ADMIN)).json()["items"]
    mine = [i for i in listed if i["namespace"] == ns]
    assert mine == [
        {
            "namespace": ns,
            "name": "alpha",
            "generation": 1,
            "uid": "uid-1",
            "revision": first["revision"],
            "spec": {"course": "course-101", "title": "Intro", "capacity": 3},
        }
    ]
    assert await status(client, ns, "alpha") == {
        "revision": first["revision"],
        "generation": 1,
        "enrolled": 0,
        "capacity": 3,
        "pending_payment": 0,
        "waitlisted": 0,
        "offered": 0,
        "open": True,
        "pricing": None,
    }
    assert (await client.delete(f"/admin/v1/cohorts/{ns}/alpha", headers=ADMIN)).status_code == 204
    # Deleting again is still 204; the status of a deleted cohort is a 404 problem.
    assert (await client.delete(f"/admin/v1/cohorts/{ns}/alpha", headers=ADMIN)).status_code == 204
    gone = await client.get(f"/admin/v1/cohorts/{ns}/alpha/status", headers=ADMIN)
    assert gone.status_code == 404
    assert gone.headers["content-type"] == "application/problem+json"
    assert gone.json()["type"].endswith("/cohort-not-found")


async def test_generations(client: httpx.AsyncClient, ns: str) -> None:
    one = await put_cohort(client, ns, "c", spec(), generation=3)
    # Same generation and spec: nothing new, same revision.
    assert await put_cohort(client, ns, "c", spec(), generation=3) == one
    two = await put_cohort(client, ns, "c", spec(capacity=20), generation=4)
    assert two["revision"] > one["revision"]
    stale = await client.put(
        f"/admin/v1/cohorts/{ns}/c",
        json={"generation": 2, "uid": "uid-1", "spec": spec(capacity=1)},
        headers=ADMIN,
    )
    assert stale.status_code == 409
    assert stale.json()["type"].endswith("/stale-generation")
    assert stale.json()["stored_generation"] == 4
    assert (await status(client, ns, "c"))["capacity"] == 20
    # A new uid is a new Kubernetes object under the same name: its generation restarts.
    fresh = await put_cohort(client, ns, "c", spec(capacity=5), generation=1, uid="uid-2")
    assert fresh["generation"] == 1
    assert (await status(client, ns, "c"))["capacity"] == 5


async def test_semantic_refusals(client: httpx.AsyncClient, ns: str) -> None:
    cases = [
        (spec(opensAt="2030-01-02T00:00:00Z", closesAt="2030-01-01T00:00:00Z"), "WindowInverted"),
        (spec(opensAt="2030-01-01T00:00:00Z", closesAt="2030-01-01T00:00:00Z"), "WindowInverted"),
        (spec(waitlist={"enabled": True, "claimWindow": "soon"}), "InvalidDuration"),
        (spec(refundWindow="-3h"), "InvalidDuration"),
        (spec(eligibility={"prerequisites": ["no-slash"]}), "InvalidPrerequisite"),
        (spec(eligibility={"prerequisites": [f"{ns}/x"]}), "SelfPrerequisite"),
        (
            spec(
                waitlist={
                    "ordering": "priority",
                    "priorityRules": [
                        {"segment": "a", "priority": 1},
                        {"segment": "a", "priority": 2},
                    ],
                }
            ),
            "DuplicatePriorityRule",
        ),
        (spec(capacity=-1), "InvalidSpec"),
        (spec(surprise=True), "UnknownField"),
        ({"title": "no course"}, "MissingField"),
        (spec(pricing={"product": "sku", "currency": "euro"}), "InvalidSpec"),
    ]
    for bad, reason in cases:
        response = await client.put(
            f"/admin/v1/cohorts/{ns}/x",
            json={"generation": 1, "uid": "u", "spec": bad},
            headers=ADMIN,
        )
        assert response.status_code == 422, (bad, response.text)
        body = response.json()
        assert body["reason"] == reason, (bad, body)
        assert body["detail"]
    # Nothing was stored by any refused PUT.
    assert (await client.get(f"/admin/v1/cohorts/{ns}/x/status", headers=ADMIN)).status_code == 404


async def _refused(client: httpx.AsyncClient, ns: str, bad: dict[str, object]) -> dict[str, Any]:
    response = await client.put(
        f"/admin/v1/cohorts/{ns}/w", json={"generation": 1, "uid": "u", "spec": bad}, headers=ADMIN
    )
    assert response.status_code == 422, (bad, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    return dict(response.json())


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"refundWindow": "99999999999999999999h"}, "spec.refundWindow"),
        ({"refundWindow": "8760h1s"}, "spec.refundWindow"),
        ({"refundWindow": "9000h"}, "spec.refundWindow"),
        ({"refundWindow": "100000s"}, "spec.refundWindow"),  # six digits: the CRD's pattern
        ({"refundWindow": "500ms"}, "spec.refundWindow"),  # no ms in the CRD either
        ({"refundWindow": "1h" * 17}, "spec.refundWindow"),  # 34 characters > 32
        ({"refundWindow": "48h\n"}, "spec.refundWindow"),
        ({"waitlist": {"claimWindow": "99999999999999999999h"}}, "spec.waitlist.claimWindow"),
        ({"waitlist": {"claimWindow": "1e400h"}}, "spec.waitlist.claimWindow"),
        ({"waitlist": {"claimWindow": "721h"}}, "spec.waitlist.claimWindow"),
        ({"waitlist": {"claimWindow": "59s"}}, "spec.waitlist.claimWindow"),
        ({"waitlist": {"claimWindow": "0m"}}, "spec.waitlist.claimWindow"),
    ],
)
async def test_durations_out_of_the_crd_bounds_are_refused(
    client: httpx.AsyncClient, ns: str, overrides: dict[str, Any], field: str
) -> None:
    body = await _refused(client, ns, spec(**overrides))
    assert body["reason"] == "InvalidDuration", body
    assert [e["field"] for e in body["errors"]] == [field]
    assert body["errors"][0]["reason"]
    assert (await client.get(f"/admin/v1/cohorts/{ns}/w/status", headers=ADMIN)).status_code == 404


async def test_durations_at_the_crd_bounds_are_accepted(client: httpx.AsyncClient, ns: str) -> None:
    for i, (claim, refund) in enumerate(
        [("1m", "8760h"), ("720h", "0s"), ("99999s", "99999m"), ("1h30m", "336h"), ("0.5h", None)]
    ):
        await put_cohort(
            client,
            ns,
            "w",
            spec(
                waitlist={"enabled": True, "mode": "offer", "claimWindow": claim},
                **({"refundWindow": refund} if refund else {}),
            ),
            generation=i + 1,
        )


async def test_stored_spec_of_an_earlier_release_stays_readable(
    client: httpx.AsyncClient, ns: str
) -> None:
    """A window an earlier release accepted (``500ms``, 9000h) is not refused when read back."""
    await put_cohort(client, ns, "old", spec(refundWindow="336h"))
    app = client.app  # type: ignore[attr-defined]
    async with app.state.db.sessionmaker() as session:
        await session.execute(
            sa.update(cohorts)
            .where(cohorts.c.namespace == ns, cohorts.c.name == "old")
            .values(
                spec=spec(
                    refundWindow="9000h", waitlist={"enabled": True, "claimWindow": "1000h500ms"}
                ),
                revision=cohorts.c.revision + 1000,
            )
        )
        await session.commit()
    assert (await enroll(client, f"{ns}/old", "s1"))["state"] == "enrolled"
    assert (await status(client, ns, "old"))["enrolled"] == 1


async def test_a_cohort_is_not_its_own_prerequisite(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(client, ns, "basics", spec())
    body = await _refused(
        client, ns, spec(eligibility={"prerequisites": [f"{ns}/basics", f"{ns}/w"]})
    )
    assert body["reason"] == "SelfPrerequisite"
    assert body["type"].endswith("/invalid-spec")
    assert body["field"] == "spec.eligibility.prerequisites[1]"
    assert body["errors"] == [
        {"field": "spec.eligibility.prerequisites[1]", "reason": body["errors"][0]["reason"]}
    ]
    assert f"{ns}/w" in body["detail"]
    # Another cohort as the prerequisite is fine.
    await put_cohort(client, ns, "w", spec(eligibility={"prerequisites": [f"{ns}/basics"]}))


async def test_capacity_below_enrolled_is_refused(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(client, ns, "c", spec(capacity=3))
    for student in ("s1", "s2", "s3"):
        await enroll(client, f"{ns}/c", student)
    response = await client.put(
        f"/admin/v1/cohorts/{ns}/c",
        json={"generation": 2, "uid": "uid-1", "spec": spec(capacity=2)},
        headers=ADMIN,
    )
    assert response.status_code == 422
    assert response.json()["reason"] == "CapacityBelowEnrolled"
    assert response.json()["seats_taken"] == 3
    assert (await status(client, ns, "c"))["capacity"] == 3
    # Shrinking down to exactly the seats taken is fine.
    await put_cohort(client, ns, "c", spec(capacity=3, title="renamed"), generation=2)


async def test_capacity_increase_promotes_waitlist(client: httpx.AsyncClient, ns: str) -> None:
    await put_cohort(client, ns, "c", spec(capacity=1, waitlist={"enabled": True}))
    await enroll(client, f"{ns}/c", "s1")
    waiting = [await enroll(client, f"{ns}/c", f"w{i}") for i in range(3)]
    assert [w["waitlist_position"] for w in waiting] == [1, 2, 3]
    await put_cohort(client, ns, "c", spec(capacity=3, waitlist={"enabled": True}), generation=2)
    states = [(await client.get(f"/v1/enrollments/{w['id']}")).json()["state"] for w in waiting]
    assert states == ["enrolled", "enrolled", "waitlisted"]
    last = (await client.get(f"/v1/enrollments/{waiting[2]['id']}")).json()
    assert last["waitlist_position"] == 1
    assert await status(client, ns, "c") | {"revision": 0} == {
        "revision": 0,
        "generation": 2,
        "enrolled": 3,
        "capacity": 3,
        "pending_payment": 0,
        "waitlisted": 1,
        "offered": 0,
        "open": True,
        "pricing": None,
    }


async def test_deleted_cohort_refuses_enrollments_and_keeps_history(
    client: httpx.AsyncClient, ns: str
) -> None:
    await put_cohort(client, ns, "c", spec())
    kept = await enroll(client, f"{ns}/c", "s1")
    await client.delete(f"/admin/v1/cohorts/{ns}/c", headers=ADMIN)
    refused = await enroll(client, f"{ns}/c", "s2", expect=404)
    assert refused["type"].endswith("/cohort-not-found")
    assert (await client.get(f"/v1/enrollments/{kept['id']}")).json()["state"] == "enrolled"
    # Put back: the cohort returns with its enrollment.
    await put_cohort(client, ns, "c", spec(), generation=2)
    assert (await status(client, ns, "c"))["enrolled"] == 1


async def test_admin_routes_need_the_admin_scope(make_app: AppFactory) -> None:
    narrow = "narrow-token-0123456789"
    app = make_app(api_tokens={narrow: ["enrollment:read", "enrollment:write"]})
    async with rollback_client(app) as c:
        assert (await c.get("/admin/v1/cohorts")).status_code == 401
        bad = await c.get("/admin/v1/cohorts", headers=bearer("not-a-token"))
        assert bad.status_code == 401
        forbidden = await c.get("/admin/v1/cohorts", headers=bearer(narrow))
        assert forbidden.status_code == 403
        assert forbidden.json()["required_scope"] == "admin"
        assert (await c.get("/admin/v1/cohorts", headers=ADMIN)).status_code == 200
