"""Small HTTP helpers shared by the enrollment tests."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI

from azora_enrollment.clock import Clock
from azora_enrollment.models import cohorts, enrollment_history, enrollments
from tests.conftest import ADMIN_TOKEN, API_TOKEN
from tests.support.apps import bearer
from tests.support.services import ServiceProcess

ADMIN = bearer(ADMIN_TOKEN)


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"course": "course-101", "title": "Intro", "capacity": 10}
    base.update(overrides)
    return base


async def put_cohort(
    client: httpx.AsyncClient,
    ns: str,
    name: str,
    cohort_spec: dict[str, Any],
    *,
    generation: int = 1,
    uid: str = "uid-1",
    expect: int = 200,
) -> dict[str, Any]:
    response = await client.put(
        f"/admin/v1/cohorts/{ns}/{name}",
        json={"generation": generation, "uid": uid, "spec": cohort_spec},
        headers=ADMIN,
    )
    assert response.status_code == expect, response.text
    return dict(response.json())


async def enroll(
    client: httpx.AsyncClient,
    cohort: str,
    student: str,
    *,
    segment: str | None = None,
    expect: int | None = 201,
    key: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"cohort": cohort, "student": {"id": student}}
    if segment is not None:
        body["student"]["segment"] = segment
    headers = {"Idempotency-Key": key} if key else None
    response = await client.post("/v1/enrollments", json=body, headers=headers)
    if expect is not None:
        assert response.status_code == expect, response.text
    result = dict(response.json())
    result["_status"] = response.status_code
    return result


async def move(
    client: httpx.AsyncClient, enrollment_id: str, to: str, *, expect: int | None = 200
) -> dict[str, Any]:
    response = await client.post(f"/v1/enrollments/{enrollment_id}/transitions", json={"to": to})
    if expect is not None:
        assert response.status_code == expect, response.text
    result = dict(response.json())
    result["_status"] = response.status_code
    return result


async def status(client: httpx.AsyncClient, ns: str, name: str) -> dict[str, Any]:
    response = await client.get(f"/admin/v1/cohorts/{ns}/{name}/status", headers=ADMIN)
    assert response.status_code == 200, response.text
    return dict(response.json())


def paying_app(
    make_app: Callable[..., FastAPI], ledger: ServiceProcess, pricing: ServiceProcess, **more: Any
) -> FastAPI:
    """The service with its background tasks, talking to real ledger and pricing processes."""
    settings: dict[str, Any] = {
        "background_tasks": True,
        "pricing_url": pricing.url,
        "ledger_url": ledger.url,
        "service_token": API_TOKEN,
        "http_timeout_s": 2.0,
        "outbox_poll_interval_s": 0.05,
        "outbox_backoff_base_s": 0.05,
        "outbox_backoff_max_s": 0.5,
        "outbox_max_refusals": 2,
        "gauges_interval_s": 0.2,
        "pricing_recheck_interval_s": 0.2,
    }
    return make_app(**(settings | more))


async def eventually(check: Callable[[], Awaitable[bool]], what: str, limit: float = 60) -> None:
    """Poll until ``check`` holds (a bound on waiting, not a speed assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        await asyncio.sleep(0.05)


def clock_of(app: FastAPI) -> Clock:
    clock: Clock = app.state.clock
    return clock


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def outcome(result: dict[str, Any]) -> str:
    if result["_status"] == 201:
        return str(result["state"])
    return str(result["type"].rsplit("/", 1)[1])


async def counters_match_rows(app: FastAPI, ns: str, name: str) -> dict[str, int]:
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


async def promotions_per_enrollment(app: FastAPI, ns: str, name: str) -> Counter[uuid.UUID]:
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
