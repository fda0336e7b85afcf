"""azora-ledger benchmark: HTTP single transfers (uniform, hot account), the batch endpoint,
and a pgledger-style SQL transfer function, on one PostgreSQL in one run; ends with `verify`.

    uv run python bench/ledger/run.py [--seconds 8] [--concurrency 64] [--client python|c]

Uses ``AZORA_BENCH_DATABASE_URL`` (a server where databases may be created) or starts its own
PostgreSQL (azora_devenv.LocalPostgres, durable settings). pgledger itself is not
fetched (only package registries are reachable here); ``pgledger_style.sql`` is our own
re-implementation of its transfer function and is labelled so in the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import loadgen  # bench/ledger/loadgen.py, next to this script

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
TOKEN = "bench-token-0123456789abcdef"
ADMIN = "bench-admin-0123456789abcdef"
ACCOUNTS = 1000
HOT = "bench:hot"


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    url = os.environ.get("AZORA_BENCH_DATABASE_URL")
    if url:
        yield url
        return
    from azora_devenv.postgres import LocalPostgres

    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        pg = LocalPostgres(
            Path(tmp) / "data",
            extra_settings={"shared_buffers": "256MB", "max_wal_size": "2GB"},
        )
        pg.start()
        POSTMASTER[:] = [int((pg.data_dir / "postmaster.pid").read_text().split()[0])]
        try:
            yield pg.url("postgres")
        finally:
            pg.stop()


async def settle(url: str) -> None:
    """Before each measured scenario, as pgbench does before its runs: vacuum and analyze the
    database and checkpoint, so no scenario pays for the previous one's dead rows or for a
    checkpoint (and its full-page writes) that happens to start inside it."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def recreate(base: str, name: str) -> str:
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drive(
    seconds: float, concurrency: int, one: Callable[[], Awaitable[int]]
) -> dict[str, Any]:
    """Run ``one`` from ``concurrency`` loops for ``seconds``; ``one`` returns transfers done."""
    latencies: list[float] = []
    done = 0
    errors = 0
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done, errors
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                n = await one()
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            done += n

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "transfers": done,
        "errors": errors,
        "seconds": round(elapsed, 2),
        "transfers_per_second": round(done / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "concurrency": concurrency,
    }


def pair(codes: list[str]) -> tuple[str, str]:
    a, b = random.sample(codes, 2)
    return a, b


def body(debit: str, credit: str, amount: int) -> dict[str, Any]:
    return {
        "postings": [
            {"account": debit, "direction": "debit", "amount": amount, "currency": "EUR"},
            {"account": credit, "direction": "credit", "amount": amount, "currency": "EUR"},
        ]
    }


def start_service(
    url: str, port: int, workers: int, log: Path, write_gate: str = "process"
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LEDGER_WRITE_GATE": write_gate,
        "LEDGER_DATABASE_URL": url,
        "LEDGER_API_TOKENS": json.dumps({TOKEN: ["*"]}),
        "LEDGER_ADMIN_TOKEN": ADMIN,
        "LEDGER_LOG_LEVEL": "WARNING",
        "LEDGER_DB_POOL_SIZE": "20",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from azora_ledger.cli import main; main()",
            "serve",
            "--migrate",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r,
        ):
            if r.status == 200:
                return proc
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        time.sleep(0.2)
    raise TimeoutError("ledger did not become ready")


async def bench_service(base: str, args: argparse.Namespace) -> dict[str, Any]:
    url = await recreate(base, "ledger_bench")
    port = 18000 + random.randint(0, 999)
    log = Path(tempfile.gettempdir()) / "ledger-bench-service.log"
    proc = start_service(url, port, args.workers, log, args.write_gate)
    api = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    results: dict[str, Any] = {}
    try:
        conn = aiohttp.TCPConnector(limit=args.concurrency * 2)
        async with aiohttp.ClientSession(api, headers=headers, connector=conn) as http:
            codes = [f"bench:acc:{i}" for i in range(ACCOUNTS)]
            for code in [*codes, HOT, "bench:source"]:
                async with http.post(
                    "/v1/accounts", json={"code": code, "type": "asset", "currency": "EUR"}
                ) as r:
                    assert r.status in (201, 409), await r.text()

            async def batch(items: list[dict[str, Any]]) -> int:
                payload = json.dumps({"mode": "atomic", "transactions": items}).encode()
                return await post_batch(payload, len(items))

            async def post_batch(payload: bytes, size: int) -> int:
                async with http.post(
                    "/v1/transactions:batch",
                    data=payload,
                    headers={"Content-Type": "application/json"},
                ) as r:
                    if r.status != 201:
                        raise RuntimeError(await r.text())
                    return size

            # The measured batches are encoded up front and rotated (as the wrk script does):
            # encoding 1,000 items with the stdlib is ~3 ms of the shared cores per request.
            batch_bodies = [
                json.dumps(
                    {
                        "mode": "atomic",
                        "transactions": [body(*pair(codes), 3) for _ in range(1000)],
                    }
                ).encode()
                for _ in range(16)
            ]
            rotation = iter(range(1 << 62))

            # Warm-up with history: 50k transfers through the batch endpoint.
            for _ in range(100):
                await batch([body(*pair(codes), random.randint(1, 10_000)) for _ in range(500)])

            async def single(debit: str, credit: str) -> int:
                async with http.post("/v1/transactions", json=body(debit, credit, 7)) as r:
                    if r.status != 201:
                        raise RuntimeError(f"{r.status} {await r.text()}")
                    return 1

            scenarios: dict[str, tuple[int, Callable[[], Awaitable[int]]]] = {
                "http_single_uniform": (
                    args.concurrency,
                    lambda: single(*pair(codes)),
                ),
                "http_single_hot": (args.concurrency, lambda: single(HOT, random.choice(codes))),
                "http_batch_uniform": (
                    4,
                    lambda: post_batch(batch_bodies[next(rotation) % len(batch_bodies)], 1000),
                ),
            }
            c_scenarios: dict[str, dict[str, Any]] = {
                "http_single_uniform": {"concurrency": args.concurrency},
                "http_single_hot": {"concurrency": args.concurrency, "hot": HOT},
                "http_batch_uniform": {"concurrency": 4, "batch_size": 1000},
            }
            for name, (concurrency, one) in scenarios.items():
                if args.only and name not in args.only:
                    continue

                async def scenario(
                    name: str = name,
                    concurrency: int = concurrency,
                    one: Callable[[], Awaitable[int]] = one,
                ) -> dict[str, Any]:
                    cpu_before = process_cpu_seconds(proc.pid)
                    with profiled(proc.pid, args.profile_dir, name):
                        if args.client == "c":
                            result = await asyncio.to_thread(
                                loadgen.wrk,
                                api,
                                token=TOKEN,
                                seconds=args.seconds,
                                accounts=ACCOUNTS,
                                **c_scenarios[name],
                            )
                        else:
                            result = await drive(args.seconds, concurrency, one)
                    # CPU time of the service per transfer: unlike throughput, barely moved by
                    # whatever else the shared cores are doing.
                    cpu = process_cpu_seconds(proc.pid) - cpu_before
                    done = max(result["transfers"], 1)
                    result["service_cpu_us_per_transfer"] = round(cpu / done * 1e6, 1)
                    return result

                results[name] = await with_database_cpu(url, scenario())
            async with http.get("/metrics") as r:
                metrics = await r.text()
            size = _histogram_mean(metrics, "azora_ledger_batch_size", 'source="coalesced"')
            results["coalesced_batch_size"] = round(size, 1) if size is not None else None
            for name in ("wait", "held"):
                mean = _histogram_mean(metrics, f"azora_ledger_write_turn_{name}_seconds", "")
                results[f"write_turn_{name}_mean_ms"] = (
                    round(mean * 1000, 2) if mean is not None else None
                )
    finally:
        proc.terminate()
        proc.wait(30)
    verify = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from azora_ledger.cli import main; main()",
        "verify",
        env={**os.environ, "LEDGER_DATABASE_URL": url},
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(verify.communicate(), 300)
    report = json.loads(stdout)
    results["verify"] = {
        "ok": report["ok"] and verify.returncode == 0,
        "checked": report["checked"],
        "duration_seconds": report["duration_seconds"],
    }
    return results


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants, live (``/proc/<pid>/task``)
    or exited and reaped (cutime/cstime: pgbench's connections end before the measurement)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    total = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    total += process_cpu_seconds(int(child))
    return total


POSTMASTER: list[int] = []  # the local PostgreSQL's postmaster pid, when the bench started it


def database_cpu_seconds() -> float | None:
    """CPU time of the local PostgreSQL (postmaster + backends); None for an external server."""
    return process_cpu_seconds(POSTMASTER[0]) if POSTMASTER else None


@contextlib.contextmanager
def profiled(pid: int, out_dir: Path | None, name: str) -> Iterator[None]:
    """Sample the service with py-spy (collapsed stacks) while a scenario runs, if asked."""
    if out_dir is None:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            os.environ.get("PY_SPY", "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--format",
            "raw",
            "--rate",
            "200",
            "--output",
            str(out_dir / f"{name}.txt"),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
        spy.wait(30)


def _histogram_mean(text: str, name: str, label: str) -> float | None:
    total = count = None
    for line in text.splitlines():
        if label not in line:
            continue
        if line.startswith(name + "_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_count"):
            count = float(line.rsplit(" ", 1)[1])
    return round(total / count, 5) if total is not None and count else None


async def bench_reference(base: str, args: argparse.Namespace) -> dict[str, Any]:
    url = await recreate(base, "ledger_bench_ref")
    pool = await asyncpg.create_pool(url, min_size=args.concurrency, max_size=args.concurrency)
    assert pool is not None
    sql = (Path(__file__).parent / "pgledger_style.sql").read_text()
    async with pool.acquire() as conn:
        await conn.execute(sql)
        await conn.execute(
            "INSERT INTO ref.accounts (name, currency) SELECT 'acc' || g, 'EUR' "
            "FROM generate_series(1, $1) g",
            ACCOUNTS + 1,
        )
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM ref.accounts ORDER BY id")]
        hot, ids = ids[0], ids[1:]
        # Same warm-up history as the service.
        for _ in range(50):
            async with conn.transaction():
                await conn.executemany(
                    "SELECT ref.create_transfer($1, $2, $3)",
                    [(*random.sample(ids, 2), random.randint(1, 10_000)) for _ in range(1000)],
                )

    async def transfer(a: int, b: int) -> int:
        async with pool.acquire() as c:
            await c.fetchval("SELECT ref.create_transfer($1, $2, 7)", a, b)
        return 1

    if args.client == "c":
        await pool.close()
        from azora_devenv.postgres import find_pg_bindir

        exe = find_pg_bindir() / "pgbench"
        common = {
            "first_id": min(ids),
            "last_id": max(ids),
            "concurrency": args.concurrency,
            "seconds": args.seconds,
        }
        assert max(ids) - min(ids) + 1 == len(ids), "reference account ids are not contiguous"
        return {
            "sql_uniform": await with_database_cpu(
                url, asyncio.to_thread(loadgen.pgbench, exe, url, hot_id=None, **common)
            ),
            "sql_hot": await with_database_cpu(
                url, asyncio.to_thread(loadgen.pgbench, exe, url, hot_id=hot, **common)
            ),
        }

    results = {
        "sql_uniform": await with_database_cpu(
            url, drive(args.seconds, args.concurrency, lambda: transfer(*random.sample(ids, 2)))
        ),
        "sql_hot": await with_database_cpu(
            url, drive(args.seconds, args.concurrency, lambda: transfer(hot, random.choice(ids)))
        ),
    }
    await pool.close()
    return results


async def with_database_cpu(url: str, run: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """``run``'s result plus the database's CPU time per transfer while it ran."""
    await settle(url)
    before = database_cpu_seconds()
    result = await run
    after = database_cpu_seconds()
    if before is not None and after is not None:
        result["database_cpu_us_per_transfer"] = round(
            (after - before) / max(result["transfers"], 1) * 1e6, 1
        )
    return result


def markdown(report: dict[str, Any]) -> str:
    s, r = report["service"], report["reference"]
    rows = [
        ("HTTP single transfer, uniform", s["http_single_uniform"], r["sql_uniform"], 1.0),
        ("HTTP single transfer, hot account", s["http_single_hot"], r["sql_hot"], 2.0),
        (
            "HTTP batch endpoint (1,000/request), uniform",
            s["http_batch_uniform"],
            r["sql_uniform"],
            5.0,
        ),
    ]
    out = [
        f"# azora-ledger benchmark, {report['date']}",
        "",
        f"Machine: {report['machine']}. PostgreSQL: {report['postgres']}. "
        f"Service: {report.get('service_workers', 1)} uvicorn worker(s), write gate "
        f"{report.get('write_gate', 'process')}. Load generators: "
        f"{'wrk and pgbench' if report.get('client') == 'c' else 'aiohttp and asyncpg'}. "
        f"Reference: **{report['reference_label']}**.",
        "",
        "| scenario | transfers/s | p50 ms | p99 ms | service CPU µs/transfer "
        "| database CPU µs/transfer | reference transfers/s | ratio | target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, ours, ref, target in rows:
        ratio = ours["transfers_per_second"] / max(ref["transfers_per_second"], 1e-9)
        out.append(
            f"| {name} | {ours['transfers_per_second']:,} | {ours['p50_ms']} | {ours['p99_ms']} "
            f"| {ours.get('service_cpu_us_per_transfer', '-')} "
            f"| {ours.get('database_cpu_us_per_transfer', '-')} "
            f"| {ref['transfers_per_second']:,} | {ratio:.2f}x | >= {target}x |"
        )
    out += [
        "",
        "| reference scenario | transfers/s | p50 ms | p99 ms | database CPU µs/transfer |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, key in [("SQL function, uniform", "sql_uniform"), ("SQL function, hot", "sql_hot")]:
        x = r[key]
        out.append(
            f"| {name} | {x['transfers_per_second']:,} | {x['p50_ms']} | {x['p99_ms']} "
            f"| {x.get('database_cpu_us_per_transfer', '-')} |"
        )
    out += [
        "",
        f"Mean coalesced batch size: {s.get('coalesced_batch_size')}. "
        f"Verify after the run: **{'passed' if s['verify']['ok'] else 'FAILED'}** "
        f"({s['verify']['checked']}).",
        "",
        f"Command: `{report['command']}`",
    ]
    return "\n".join(out) + "\n"


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--write-gate",
        choices=["process", "database"],
        default="process",
        help="LEDGER_WRITE_GATE of the service (database: one writer across its workers)",
    )
    parser.add_argument(
        "--client",
        choices=["python", "c"],
        default="python",
        help="load generators: the aiohttp/asyncpg drivers (default; the setup in which the "
        "reference gives the ~3,000/s uniform the issue calibrates on), or wrk + pgbench",
    )
    parser.add_argument(
        "--only", nargs="*", help="run only these service scenarios (and skip the reference)"
    )
    parser.add_argument(
        "--profile-dir",
        type=Path,
        help="record py-spy collapsed stacks of the service per scenario here ($PY_SPY or py-spy)",
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with postgres() as base:
        conn = await asyncpg.connect(base)
        version = await conn.fetchval("SHOW server_version")
        await conn.close()
        if args.only:
            # A partial run is for profiling and iteration: print it, write no results.
            sys.stdout.write(json.dumps(await bench_service(base, args), indent=2) + "\n")
            return 0
        reference = await bench_reference(base, args)
        service = await bench_service(base, args)
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    report = {
        "date": date,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), Python "
        f"{platform.python_version()}",
        "postgres": version,
        "reference_label": "pgledger-style SQL reference (our re-implementation)",
        "command": "uv run python bench/ledger/run.py " + " ".join(sys.argv[1:]),
        "service_workers": args.workers,
        "write_gate": args.write_gate,
        "client": args.client,
        "service": service,
        "reference": reference,
    }
    # One uvicorn worker is the default deployment (replicas scale out); other counts are
    # kept beside it instead of replacing it.
    name = (
        f"ledger-{date}"
        + (f"-workers{args.workers}" if args.workers != 1 else "")
        + ("-c-clients" if args.client == "c" else "")
        + ("-database-gate" if args.write_gate == "database" else "")
    )
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (RESULTS / f"{name}.md").write_text(text)
    sys.stdout.write(text)
    return 0 if service["verify"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
