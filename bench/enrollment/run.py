"""Benchmark: 2,000 concurrent enrollment attempts on a 100-seat cohort with a 200-place
waitlist (unpriced), over HTTP against a real ``azora-enrollment`` process and PostgreSQL.

Checks the outcome (exactly 100 enrolled, 200 waitlisted, the rest refused) and records
throughput and latency percentiles in bench/results/enrollment-<date>.{json,md}.

PostgreSQL: ``AZORA_BENCH_DATABASE_URL`` (a server where we may create databases) or a private
throw-away cluster (azora_devenv.postgres.LocalPostgres).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (uvicorn workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("service not ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=2000)
    parser.add_argument("--seats", type=int, default=100)
    parser.add_argument("--waitlist", type=int, default=200)
    parser.add_argument("--connections", type=int, default=100, help="client HTTP connections")
    parser.add_argument("--db-pool", type=int, default=20, help="service database pool size")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes (replicas sharing one port; the DB lock spans them)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results")
    args = parser.parse_args()

    local = None
    work = Path(tempfile.mkdtemp(prefix="azora-bench-enrollment-"))
    base_url = os.environ.get("AZORA_BENCH_DATABASE_URL")
    if not base_url:
        from azora_devenv.postgres import LocalPostgres

        work.chmod(0o755)
        local = LocalPostgres(work / "pgdata", fast=True)
        local.start()
        base_url = local.url("postgres")
    proc: subprocess.Popen[bytes] | None = None
    try:
        asyncio.run(recreate(base_url))
        db_url = with_db(base_url, DB)
        port = free_port()
        env = {
            **os.environ,
            "ENROLLMENT_DATABASE_URL": db_url,
            "ENROLLMENT_ADMIN_TOKEN": ADMIN,
            "ENROLLMENT_API_TOKENS": json.dumps({TOKEN: ["enrollment:read", "enrollment:write"]}),
            "ENROLLMENT_DB_POOL_SIZE": str(args.db_pool),
            "ENROLLMENT_DB_MAX_OVERFLOW": "0",
            "ENROLLMENT_LOG_LEVEL": "WARNING",
        }
        script = Path(sys.executable).parent / "azora-enrollment"
        log = (work / "service.log").open("wb")
        proc = subprocess.Popen(
            [
                str(script),
                "serve",
                "--migrate",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, proc)
        load_before = os.getloadavg()[0]
        cpu_before = cpu_seconds(proc.pid)
        result = asyncio.run(run(base, args.attempts, args.seats, args.waitlist, args.connections))
        # Includes the warm-up and the setup requests: a slight over-estimate per decision.
        # On a shared machine this, not decisions/s, is the stable number.
        service_cpu = cpu_seconds(proc.pid) - cpu_before
        result["service_cpu_ms_per_decision"] = round(service_cpu * 1000 / args.attempts, 2)
        result["load_avg_1m_before"] = round(load_before, 2)
        result["workers"] = args.workers
    except BaseException:
        log_file = work / "service.log"
        if log_file.exists():
            sys.stderr.write(log_file.read_text()[-5000:])
        raise
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        if local is not None:
            local.stop()
        shutil.rmtree(work, ignore_errors=True)

    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "postgres": "AZORA_BENCH_DATABASE_URL"
        if os.environ.get("AZORA_BENCH_DATABASE_URL")
        else "LocalPostgres(fast=True)",
    }
    result["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(json.dumps(result, indent=2))
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stem = RESULTS / f"enrollment-{datetime.now(UTC).date().isoformat()}"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        lat = result["latency_ms"]
        stem.with_suffix(".md").write_text(
            "# enrollment benchmark\n\n"
            f"{result['attempts']} concurrent `POST /v1/enrollments` (with Idempotency-Key) on a "
            f"{result['seats']}-seat cohort with a {result['waitlist_capacity']}-place waitlist, "
            f"unpriced; `azora-enrollment` with {result['workers']} uvicorn worker(s), "
            f"{result['machine']['postgres']}, {result['machine']['cpus']} CPUs shared "
            f"(1-minute load average {result['load_avg_1m_before']} when it started).\n\n"
            "| attempts | enrolled | waitlisted | refused | correct | decisions/s | p50 ms | "
            "p90 ms | p99 ms | max ms | service CPU ms/decision |\n"
            "|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|---:|\n"
            f"| {result['attempts']} | {result['outcomes'].get('enrolled', 0)} | "
            f"{result['outcomes'].get('waitlisted', 0)} | "
            f"{result['outcomes'].get('cohort-full', 0)} | "
            f"{'yes' if result['correct'] else 'NO'} | {result['decisions_per_s']} | "
            f"{lat['p50']} | {lat['p90']} | {lat['p99']} | {lat['max']} | "
            f"{result['service_cpu_ms_per_decision']} |\n\n"
            f"Command: `uv run python bench/enrollment/run.py` ({result['date']}).\n"
        )
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
