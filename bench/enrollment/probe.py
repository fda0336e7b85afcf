"""Where does an enrollment decision spend its time? (a diagnostic, not the benchmark)

Runs ``azora-enrollment`` in this process under uvicorn with SQLAlchemy event hooks, drives it
with the burst load of ``burst.py`` from a child process (so the client's CPU is not in our event
loop), and reports per request transaction: statements (round trips, BEGIN/COMMIT included),
statements while the cohort row lock is held, time waiting for and holding that lock, and the
time spent waiting for a pool connection.

    uv run python bench/enrollment/probe.py [--attempts 2000] [--db-pool 20]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import event

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import burst as bench  # noqa: E402 (a sibling script, not a package)


class Probe:
    def __init__(self) -> None:
        self.tx: list[dict[str, float]] = []
        self.checkout_waits: list[float] = []

    def attach(self, engine: Any) -> None:
        sync = engine.sync_engine
        pool = sync.pool

        @event.listens_for(sync, "begin")
        def _begin(conn: Any) -> None:
            conn.info["p"] = {"t0": time.perf_counter(), "stmts": 1.0, "locked": 0.0}

        @event.listens_for(sync, "before_cursor_execute")
        def _before(conn: Any, cursor: Any, stmt: str, *a: Any) -> None:
            p = conn.info.get("p")
            if p is None:
                return
            p["stmts"] += 1
            if p["locked"]:
                p["in_lock"] += 1
            p["t_stmt"] = time.perf_counter()

        @event.listens_for(sync, "after_cursor_execute")
        def _after(conn: Any, cursor: Any, stmt: str, *a: Any) -> None:
            p = conn.info.get("p")
            if p is None or p["locked"] or "admit_started" in p:
                return
            now = time.perf_counter()
            if "FOR UPDATE" in stmt and "FROM cohorts" in stmt:
                p["locked"] = now
                p["lock_wait"] = now - p["t_stmt"]
                p["in_lock"] = 0
            elif "enrollment_admit" in stmt:
                # The function takes the lock inside (only when it may admit); its own
                # duration is the wait plus a short hold. Upper bound for the hold: from the
                # statement's start to COMMIT, counted for committed transactions only.
                p["admit_started"] = p["t_stmt"]
                p["admit_s"] = now - p["t_stmt"]
                p["admit_stmts"] = p["stmts"]

        def _end(conn: Any, committed: bool) -> None:
            p = conn.info.pop("p", None)
            if p is None:
                return
            now = time.perf_counter()
            p["stmts"] += 1  # COMMIT / ROLLBACK
            p["total"] = now - p["t0"]
            if committed and "admit_started" in p:
                p["locked"] = p["admit_started"]
                p["lock_wait"] = p["admit_s"]
                p["in_lock"] = p["stmts"] - p["admit_stmts"] + 1
            if p["locked"]:
                if "admit_started" not in p:
                    p["in_lock"] += 1
                p["lock_hold"] = now - p["locked"]
            self.tx.append(p)

        event.listen(sync, "commit", lambda conn: _end(conn, True))
        event.listen(sync, "rollback", lambda conn: _end(conn, False))

        original = pool._do_get

        def timed_get() -> Any:
            started = time.perf_counter()
            try:
                return original()
            finally:
                self.checkout_waits.append(time.perf_counter() - started)

        pool._do_get = timed_get

    def report(self) -> dict[str, Any]:
        def dist(values: list[float], scale: float = 1000.0) -> dict[str, float]:
            if not values:
                return {}
            return {
                "n": len(values),
                "mean": round(statistics.fmean(values) * scale, 2),
                "p50": round(bench.percentile(values, 50) * scale, 2),
                "p99": round(bench.percentile(values, 99) * scale, 2),
            }

        locked = [t for t in self.tx if t["locked"]]
        return {
            "transactions": len(self.tx),
            "with_cohort_lock": len(locked),
            "round_trips_per_tx": dist([t["stmts"] for t in self.tx], 1),
            "round_trips_holding_lock": dist([t["in_lock"] for t in locked], 1),
            "lock_wait_ms": dist([t["lock_wait"] for t in locked]),
            "lock_hold_ms": dist([t["lock_hold"] for t in locked]),
            "tx_total_ms": dist([t["total"] for t in self.tx]),
            "pool_checkout_wait_ms": dist(self.checkout_waits),
        }


AREAS = (
    "sqlalchemy",
    "asyncpg",
    "fastapi",
    "starlette",
    "pydantic",
    "uvicorn",
    "httptools",
    "azora_common",
    "azora_enrollment",
    "prometheus_client",
    "asyncio",
    "orjson",
    "logging",
    "greenlet",
)

CLIENT = """
import asyncio, json, sys
sys.path.insert(0, {here!r})
import burst
print(json.dumps(asyncio.run(burst.run({base!r}, {attempts}, {seats}, {waitlist}, {conns}))))
"""


async def serve_and_load(db_url: str, args: argparse.Namespace) -> dict[str, Any]:
    os.environ.update(
        {
            "ENROLLMENT_DATABASE_URL": db_url,
            "ENROLLMENT_ADMIN_TOKEN": bench.ADMIN,
            "ENROLLMENT_API_TOKENS": json.dumps(
                {bench.TOKEN: ["enrollment:read", "enrollment:write"]}
            ),
            "ENROLLMENT_DB_POOL_SIZE": str(args.db_pool),
            "ENROLLMENT_DB_MAX_OVERFLOW": "0",
            "ENROLLMENT_LOG_LEVEL": "WARNING",
        }
    )
    from azora_enrollment.app import create_app

    app = create_app()
    port = bench.free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn exposes a flag, not an event)
        await asyncio.sleep(0.05)
    probe = Probe()
    probe.attach(app.state.db.engine)
    code = CLIENT.format(
        here=str(HERE),
        base=f"http://127.0.0.1:{port}",
        attempts=args.attempts,
        seats=args.seats,
        waitlist=args.waitlist,
        conns=args.connections,
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=subprocess.PIPE)
    cpu0 = time.process_time()
    profiler = cProfile.Profile() if args.cprofile else None
    if profiler:
        profiler.enable()
    out, _ = await proc.communicate()
    if profiler:
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(30)
        by_area: dict[str, float] = {}
        for (file, _line, func), row in stats.stats.items():  # type: ignore[attr-defined]
            area = next(
                (k for k in AREAS if k in file), "builtins:" + func if file == "~" else "other"
            )
            by_area[area] = by_area.get(area, 0.0) + row[2]
        total = sum(by_area.values())
        for area, spent in sorted(by_area.items(), key=lambda kv: -kv[1])[:25]:
            sys.stderr.write(f"{spent / total:6.1%} {spent:8.3f}s {area}\n")
    cpu = time.process_time() - cpu0
    server.should_exit = True
    await task
    result = json.loads(out)
    return {
        "decisions_per_s": result["decisions_per_s"],
        "latency_ms": result["latency_ms"],
        "correct": result["correct"],
        "server_cpu_ms_per_request": round(cpu * 1000 / args.attempts, 2),
        "profile": probe.report(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=2000)
    parser.add_argument("--seats", type=int, default=100)
    parser.add_argument("--waitlist", type=int, default=200)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--db-pool", type=int, default=20)
    parser.add_argument("--cprofile", action="store_true", help="cProfile the server (stderr)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="azora-probe-enrollment-"))
    local = None
    base_url = os.environ.get("AZORA_BENCH_DATABASE_URL")
    if not base_url:
        from azora_devenv.postgres import LocalPostgres

        work.chmod(0o755)
        local = LocalPostgres(work / "pgdata", fast=True)
        local.start()
        base_url = local.url("postgres")
    try:
        from azora_common.migrations import upgrade_to_head
        from azora_enrollment.app import MIGRATIONS

        asyncio.run(bench.recreate(base_url))
        upgrade_to_head(MIGRATIONS, bench.with_db(base_url, bench.DB))
        report = asyncio.run(serve_and_load(bench.with_db(base_url, bench.DB), args))
    finally:
        if local is not None:
            local.stop()
        shutil.rmtree(work, ignore_errors=True)
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
