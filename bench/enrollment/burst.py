"""The burst load of probe.py (a diagnostic, not the benchmark: bench/enrollment/run.py uses
the shared method): 2,000 concurrent enrollment attempts on a 100-seat cohort with a 200-place
waitlist from one aiohttp client, with the outcome checked (exactly 100 enrolled, 200
waitlisted, the rest refused).
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
TOKEN = "bench-token-0123456789abcdef"
ADMIN = "bench-admin-0123456789abcdef"
DB = "azora_bench_enrollment"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


async def recreate(url: str) -> None:
    conn = await asyncpg.connect(with_db(url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{DB}"')
    finally:
        await conn.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index]


async def attempt(
    session: aiohttp.ClientSession,
    cohort: str,
    i: int,
    latencies: list[float],
    retries: Counter[str],
) -> tuple[int, str]:
    started = time.perf_counter()
    for left in range(3, -1, -1):
        try:
            async with session.post(
                "/v1/enrollments",
                json={"cohort": cohort, "student": {"id": f"student-{i}", "segment": "pro"}},
                headers={"Idempotency-Key": f"bench-{i}"},
            ) as response:
                status = response.status
                body = await response.json(content_type=None)
            break
        except (aiohttp.ClientConnectionError, aiohttp.ServerDisconnectedError) as exc:
            # A kept-alive connection closed under us: retrying with the same
            # Idempotency-Key is safe by design (a committed first attempt is replayed).
            retries[type(exc).__name__] += 1
            if not left:
                raise
    latencies.append(time.perf_counter() - started)
    if status == 201:
        return 201, str(body["state"])
    return status, str(body.get("type", "")).rsplit("/", 1)[-1]


async def run(
    base: str, attempts: int, seats: int, waitlist: int, connections: int
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    # aiohttp, not httpx: with thousands of concurrent requests httpx's own CPU cost would be
    # what this benchmark measured on a 2-core machine.
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(
        base, headers=headers, connector=connector, timeout=timeout
    ) as c:
        async with c.put(
            "/admin/v1/cohorts/bench/cohort-1",
            json={
                "generation": 1,
                "uid": "bench",
                "spec": {
                    "course": "bench-101",
                    "title": "Benchmark cohort",
                    "capacity": seats,
                    "waitlist": {"enabled": True, "capacity": waitlist},
                },
            },
            headers=admin,
        ) as put:
            put.raise_for_status()

        async def warm() -> None:
            async with c.get("/v1/cohorts/bench/cohort-1") as r:
                await r.read()

        # Warm the connection pools (HTTP and database) outside the measured window.
        await asyncio.gather(*(warm() for _ in range(connections)))
        latencies: list[float] = []
        retries: Counter[str] = Counter()
        started = time.perf_counter()
        results = await asyncio.gather(
            *(attempt(c, "bench/cohort-1", i, latencies, retries) for i in range(attempts))
        )
        elapsed = time.perf_counter() - started
        async with c.get("/admin/v1/cohorts/bench/cohort-1/status", headers=admin) as r:
            status = await r.json()
    outcomes = Counter(outcome for _, outcome in results)
    codes = Counter(code for code, _ in results)
    return {
        "attempts": attempts,
        "seats": seats,
        "waitlist_capacity": waitlist,
        "client_connections": connections,
        "transport_retries": dict(retries),
        "outcomes": dict(outcomes),
        "status_codes": {str(k): v for k, v in codes.items()},
        "cohort_status": status,
        "elapsed_s": round(elapsed, 3),
        "decisions_per_s": round(attempts / elapsed, 1),
        "latency_ms": {
            "p50": round(statistics.median(latencies) * 1000, 2),
            "p90": round(percentile(latencies, 90) * 1000, 2),
            "p99": round(percentile(latencies, 99) * 1000, 2),
            "max": round(max(latencies) * 1000, 2),
        },
        "correct": outcomes.get("enrolled") == seats
        and outcomes.get("waitlisted") == waitlist
        and outcomes.get("cohort-full") == attempts - seats - waitlist
        and status["enrolled"] == seats
        and status["waitlisted"] == waitlist,
    }
