"""Benchmark of azora-pricing (not a test): engine throughput and HTTP quote latency.

    uv run python bench/pricing/run.py [--quick] [--no-engine] [--workers 1,2]
                                       [--database fast,durable] [--client wrk|aiohttp]

1. In-process engine, one core: quotes/s with 1,000 active rules over 10,000 products, and the
   curve for 10 / 100 / 1,000 / 10,000 rules (rules indexed by target: cost should stay flat).
2. HTTP ``POST /v1/quotes`` at concurrency 16 against ``azora-pricing serve`` (uvicorn) on a
   real PostgreSQL (``AZORA_BENCH_DATABASE_URL`` or a private LocalPostgres: fsync off, or
   PostgreSQL's defaults with ``--database durable``), driven by ``wrk`` (installed by
   ``hack/system-deps.sh --bench``) rotating over 500 baskets: p50 / p90 / p99 / p99.9
   latency, throughput, every response's status, and CPU time per request of the server,
   PostgreSQL and the client (from /proc and wait4: the steady figures on a shared machine).
   Each quote is stored. ``--client aiohttp`` runs the old in-process Python client.
   ``AZORA_BENCH_PYSPY=<py-spy binary>`` also records the server's stacks during the run
   (collapsed format, into ``AZORA_BENCH_PYSPY_OUT``).

Results: bench/results/pricing-<date>.json and .md (a ``--no-engine`` run keeps the newest
engine rows).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx

from azora_pricing.app import MIGRATIONS
from azora_pricing.engine import (
    CombinationMode,
    LineInput,
    PricingSnapshot,
    QuoteInput,
    RuleIndex,
    evaluate,
)
from azora_pricing.engine.catalog import ModelKind, PriceModel, Product, Tier
from azora_pricing.engine.spec import compile_rule
from azora_pricing.engine.trace import result_document

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
PRODUCTS = 10_000
LABELS = [f"label-{i}" for i in range(200)]
SEGMENTS = ["student", "staff", "alumni", "public"]
ADMIN = "bench-admin-token-0123456789"
TOKEN = "bench-api-token-0123456789"


# --- data -----------------------------------------------------------------------------------


def product_specs(rng: random.Random) -> list[dict[str, Any]]:
    specs = []
    for i in range(PRODUCTS):
        kind = i % 4
        if kind == 0:
            price: dict[str, Any] = {"model": "perUnit", "unitAmount": rng.randint(100, 100_000)}
        elif kind == 1:
            price = {
                "model": "graduated",
                "tiers": [{"upTo": 10, "unitAmount": 1000}, {"upTo": None, "unitAmount": 800}],
            }
        elif kind == 2:
            price = {
                "model": "volume",
                "tiers": [{"upTo": 5, "unitAmount": 1500}, {"upTo": None, "unitAmount": 1200}],
            }
        else:
            price = {"model": "package", "packageSize": 5, "packageAmount": 4000}
        specs.append(
            {
                "sku": f"sku-{i:05d}",
                "labels": rng.sample(LABELS, 2),
                "prices": {"EUR": price},
            }
        )
    return specs


def engine_product(spec: dict[str, Any]) -> Product:
    p = spec["prices"]["EUR"]
    model = ModelKind(p["model"])
    if model is ModelKind.PER_UNIT:
        price = PriceModel(model, unit_amount=p["unitAmount"])
    elif model is ModelKind.PACKAGE:
        price = PriceModel(model, package_size=p["packageSize"], package_amount=p["packageAmount"])
    else:
        price = PriceModel(model, tiers=tuple(Tier(t["upTo"], t["unitAmount"]) for t in p["tiers"]))
    return Product(spec["sku"], spec["sku"], frozenset(spec["labels"]), {"EUR": price})


def rule_specs(count: int, rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """A realistic mix: mostly product- or label-targeted, a handful engine-wide."""
    actions: list[dict[str, Any]] = [
        {"percentOff": "10"},
        {"percentOff": "12.5"},
        {"amountOff": {"amount": 250, "currency": "EUR"}},
        {"multiplier": "1.05"},
        {"fixedPrice": {"amount": 900, "currency": "EUR"}},
    ]
    rules = []
    for i in range(count):
        spec: dict[str, Any] = {"priority": rng.randint(1, 500), "action": rng.choice(actions)}
        roll = rng.random()
        if i < 5:  # five wildcard rules whatever the total (an engine-wide sale, segments)
            spec["target"] = {"segments": [SEGMENTS[i % len(SEGMENTS)]]}
        elif roll < 0.7:
            spec["target"] = {
                "products": [f"sku-{rng.randrange(PRODUCTS):05d}" for _ in range(rng.randint(1, 3))]
            }
        else:
            spec["target"] = {"labels": [rng.choice(LABELS)], "segments": rng.sample(SEGMENTS, 2)}
        if rng.random() < 0.1:
            spec["schedule"] = {
                "timeZone": "Europe/Berlin",
                "windows": [
                    {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "20:00"}
                ],
            }
        if rng.random() < 0.05:
            spec["mode"] = "shadow"
        if rng.random() < 0.1:
            spec["stacking"] = rng.choice(["exclusive", "stopAfter"])
        rules.append((f"rule-{i:05d}", spec))
    return rules


def baskets(count: int, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for _ in range(count):
        lines = [
            {"product": f"sku-{rng.randrange(PRODUCTS):05d}", "quantity": rng.randint(1, 12)}
            for _ in range(rng.choice([1, 1, 2, 3]))
        ]
        out.append(
            {"currency": "EUR", "customer": {"segment": rng.choice(SEGMENTS)}, "lines": lines}
        )
    return out


# --- 1. engine ------------------------------------------------------------------------------


def bench_engine(rule_counts: list[int], seconds: float) -> list[dict[str, Any]]:
    rng = random.Random(7)
    products = {p.sku: p for p in map(engine_product, product_specs(rng))}
    inputs = [
        QuoteInput(
            "EUR",
            [LineInput(line["product"], line["quantity"]) for line in b["lines"]],
            segment=b["customer"]["segment"],
        )
        for b in baskets(2000, rng)
    ]
    at = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    rows = []
    for count in rule_counts:
        rules = [
            compile_rule("bench", name, spec, revision=1)
            for name, spec in rule_specs(count, random.Random(count))
        ]
        snapshot = PricingSnapshot(1, products, RuleIndex(rules))
        for q in inputs:  # warm the per-product candidate memo, as a long-running process has
            evaluate(snapshot, q, at, mode=CombinationMode.STACK)
        row: dict[str, Any] = {"rules": count}
        candidates = sum(
            len(snapshot.index.candidates(products[line.product]))
            for q in inputs
            for line in q.lines
        )
        row["candidate_rules_per_quote"] = round(candidates / len(inputs), 2)
        for label, with_trace in (("evaluate", False), ("evaluate_and_trace", True)):
            done, adjustments = 0, 0
            # CPU time as well as wall time: the machine is shared, and quotes per CPU-second
            # is what one dedicated core would sustain.
            start, cpu_start = time.perf_counter(), time.process_time()
            deadline = start + seconds
            while time.perf_counter() < deadline:
                for q in inputs[:200]:
                    result = evaluate(snapshot, q, at)
                    if with_trace:
                        result_document(result)
                    adjustments += sum(len(line.adjustments) for line in result.lines)
                done += 200
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            row[f"{label}_quotes_per_s"] = round(done / elapsed)
            row[f"{label}_quotes_per_cpu_s"] = round(done / cpu)
            row["adjustments_per_quote"] = round(adjustments / done, 2)
        rows.append(row)
        print(f"engine rules={count:>6}: {row}", flush=True)
    return rows


# --- 2. HTTP --------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live descendants (uvicorn workers)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += process_cpu_seconds(int(child))
    return total


def postmaster_pid(server: Any) -> int | None:
    """The local PostgreSQL's postmaster (its backends are its children); None if external."""
    if server is None:
        return None
    return int((server.data_dir / "postmaster.pid").read_text().split()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def seed(dsn: str, rule_count: int) -> None:
    rng = random.Random(7)
    conn = await asyncpg.connect(dsn)
    try:
        now = datetime.now(UTC)
        # Bulk seeding straight into the tables (10k admin/REST calls would dominate the
        # runtime); the revision bump + NOTIFY below is exactly what the API does per write.
        await conn.executemany(
            "INSERT INTO products (sku, name, labels, active, prices, revision, created_at,"
            " updated_at) VALUES ($1, $1, $2, true, $3, 1, $4, $4)",
            [
                (p["sku"], json.dumps(p["labels"]), json.dumps(p["prices"]), now)
                for p in product_specs(rng)
            ],
        )
        await conn.executemany(
            "INSERT INTO pricing_rules (namespace, name, uid, generation, spec, revision,"
            " updated_at) VALUES ('bench', $1, '', 1, $2, 2, $3)",
            [(name, json.dumps(spec), now) for name, spec in rule_specs(rule_count, rng)],
        )
        await conn.execute("UPDATE pricing_state SET revision = 2 WHERE id = 1")
        await conn.execute("NOTIFY pricing_config")
    finally:
        await conn.close()


async def load_aiohttp(
    url: str, bodies: list[dict[str, Any]], concurrency: int, total: int
) -> dict[str, Any]:
    """The old in-process client, kept for comparison (``--client aiohttp``).

    It shares the two cores and its own event loop with nothing else, but its queueing (16
    coroutines on one loop, ~0.15 ms of CPU per request) is inside every latency it reports.
    """
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(total))
    payloads = [json.dumps(b).encode() for b in bodies]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url=url, connector=connector, headers=headers) as http:

        async def worker() -> None:
            for n in counter:
                start = time.perf_counter()
                async with http.post("/v1/quotes", data=payloads[n % len(payloads)]) as response:
                    await response.read()
                latencies.append(time.perf_counter() - start)
                statuses[response.status] = statuses.get(response.status, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    return {
        "client": "aiohttp",
        "requests": len(latencies),
        "concurrency": concurrency,
        "statuses": statuses,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "p999_ms": pct(0.999),
        "max_ms": round(latencies[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
        "throughput_rps": round(total / wall),
    }


# wrk (C, epoll) as the load generator: it costs a fraction of a Python client's CPU on the
# shared cores and adds no event-loop queueing of its own to the latencies. Every request is
# prepared once (wrk.format) and the connections rotate over the baskets; each thread counts
# response statuses, and done() prints them with wrk's own latency histogram as one JSON line.
WRK_SCRIPT = """
local bodies = {BODIES}
local prepared = {}
local counter = 0
local threads = {}
statuses = {}

function setup(thread)
  thread:set("offset", #threads)
  table.insert(threads, thread)
end

function init(args)
  local headers = {["Authorization"] = "Bearer TOKEN", ["Content-Type"] = "application/json"}
  for i, body in ipairs(bodies) do
    prepared[i] = wrk.format("POST", "/v1/quotes", headers, body)
  end
  counter = offset * 7919
end

function request()
  counter = counter + 1
  return prepared[counter % #prepared + 1]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      merged[status] = (merged[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(merged) do
    table.insert(parts, string.format('"%d": %d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "statuses": {%s}, '
    .. '"socket_errors": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, '
    .. '"max_us": %d, "mean_us": %.1f}\\n',
    summary.requests, summary.duration, table.concat(parts, ", "),
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
end
"""


def wrk_script(bodies: list[dict[str, Any]]) -> str:
    literals = []
    for body in bodies:
        text = json.dumps(body)
        assert "]==]" not in text
        literals.append(f"[==[{text}]==]")
    return WRK_SCRIPT.replace("{BODIES}", "{" + ",\n".join(literals) + "}").replace("TOKEN", TOKEN)


def load_wrk(
    url: str, script: Path, concurrency: int, seconds: float, threads: int = 2
) -> dict[str, Any]:
    """One wrk run; its own CPU time comes from the kernel's accounting of the child (wait4)."""
    proc = subprocess.Popen(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url + "/v1/quotes",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or "WRK_RESULT " not in out:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out}")
    raw = json.loads(out.split("WRK_RESULT ", 1)[1].splitlines()[0])
    requests = int(raw["requests"])
    return {
        "client": f"wrk -t{threads} -c{concurrency} -d{seconds:g}s",
        "requests": requests,
        "concurrency": concurrency,
        "statuses": {int(k): v for k, v in raw["statuses"].items()},
        "socket_errors": raw["socket_errors"],
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p90_ms": round(raw["p90_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "p999_ms": round(raw["p999_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "mean_ms": round(raw["mean_us"] / 1000, 2),
        "throughput_rps": round(requests * 1e6 / raw["duration_us"]),
        "client_cpu_s": usage.ru_utime + usage.ru_stime,
    }


def batch_sizes(url: str) -> dict[str, float] | None:
    """Mean quote-write batch size so far, from the service's own histogram (None if absent)."""
    text = httpx.get(url + "/metrics", timeout=5).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        for suffix in ("_sum", "_count"):
            name = "azora_pricing_quote_write_batch_size" + suffix
            if line.startswith(name + " "):
                values[suffix] = float(line.split()[1])
    if not values.get("_count"):
        return None
    return {"batches": values["_count"], "quotes": values["_sum"]}


def bench_http(
    rule_count: int,
    *,
    concurrency: int = 16,
    workers: int = 1,
    client: str = "wrk",
    seconds: float = 5.0,
    total: int = 4_000,
    durable: bool = False,
) -> dict[str, Any]:
    from azora_devenv.postgres import LocalPostgres

    work = Path(tempfile.mkdtemp(prefix="pricing-bench-"))
    server: LocalPostgres | None = None
    base = os.environ.get("AZORA_BENCH_DATABASE_URL")
    try:
        if base is None:
            # fast=True: fsync, synchronous_commit and full_page_writes off (a test database);
            # durable: the server with PostgreSQL's defaults, as production would run it.
            server = LocalPostgres(work / "pgdata", fast=not durable)
            server.start()
            base = server.url("postgres")
        admin_dsn = base.replace("postgresql+asyncpg://", "postgresql://")
        dbname = "azora_bench_pricing"

        async def recreate() -> None:
            conn = await asyncpg.connect(admin_dsn)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
                await conn.execute(f'CREATE DATABASE "{dbname}"')
            finally:
                await conn.close()

        asyncio.run(recreate())
        dsn = admin_dsn.rsplit("/", 1)[0] + "/" + dbname
        from azora_common.migrations import upgrade_to_head

        upgrade_to_head(MIGRATIONS, dsn)
        asyncio.run(seed(dsn, rule_count))
        port = free_port()
        env = {
            **os.environ,
            "PRICING_DATABASE_URL": dsn,
            "PRICING_ADMIN_TOKEN": ADMIN,
            "PRICING_API_TOKENS": json.dumps({TOKEN: ["*"]}),
            "PRICING_LOG_LEVEL": "WARNING",
            "PRICING_DB_POOL_SIZE": "16",
        }
        script = shutil.which("azora-pricing") or str(Path(sys.executable).parent / "azora-pricing")
        log = (work / "server.log").open("w")
        proc = subprocess.Popen(
            [script, "serve", "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            bodies = baskets(500, random.Random(11))
            lua = work / "quotes.lua"
            lua.write_text(wrk_script(bodies))

            def run_load(measured: bool) -> dict[str, Any]:
                if client == "wrk":
                    return load_wrk(url, lua, concurrency, seconds if measured else 2)
                n = total if measured else 1_000
                return asyncio.run(load_aiohttp(url, bodies, concurrency, n))

            # Warm-up (connections, caches, the snapshot's per-product memo), not measured.
            run_load(measured=False)
            profiler = None
            if pyspy := os.environ.get("AZORA_BENCH_PYSPY"):
                out = os.environ.get("AZORA_BENCH_PYSPY_OUT", "pricing-profile.txt")
                profiler = subprocess.Popen(
                    [pyspy, "record", "-p", str(proc.pid), "-f", "raw", "-o", out]
                )
                time.sleep(1)
            # CPU per request of each party (server with its workers, PostgreSQL with its
            # backends, the client) is the steady measure on a shared machine; sampled around
            # the measured run only.
            pg_pid = postmaster_pid(server)
            batches_start = batch_sizes(url) if workers == 1 else None
            cpu_start, client_start = process_cpu_seconds(proc.pid), time.process_time()
            pg_start = process_cpu_seconds(pg_pid) if pg_pid else 0.0
            result = run_load(measured=True)
            cpu = process_cpu_seconds(proc.pid) - cpu_start
            pg_cpu = process_cpu_seconds(pg_pid) - pg_start if pg_pid else None
            client_cpu = result.pop("client_cpu_s", None)
            if client_cpu is None:  # the in-process client
                client_cpu = time.process_time() - client_start
            batches_end = batch_sizes(url) if workers == 1 else None
            if profiler is not None:
                profiler.send_signal(2)
                profiler.wait(timeout=30)
            n = result["requests"]
            result["server_cpu_ms_per_request"] = round(cpu * 1000 / n, 3)
            if pg_cpu is not None:
                result["database_cpu_ms_per_request"] = round(pg_cpu * 1000 / n, 3)
            result["client_cpu_ms_per_request"] = round(client_cpu * 1000 / n, 3)
            if batches_start is not None and batches_end is not None:
                count = batches_end["batches"] - batches_start["batches"]
                if count:
                    quotes = batches_end["quotes"] - batches_start["quotes"]
                    result["mean_quote_write_batch"] = round(quotes / count, 2)
            result["rules"] = rule_count
            result["workers"] = workers
            result["products"] = PRODUCTS
            result["database"] = (
                "external"
                if server is None
                else ("durable (PostgreSQL defaults)" if durable else "fast (fsync off)")
            )
            print(f"http: {result}", flush=True)
            return result
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


# --- report ---------------------------------------------------------------------------------


def previous_engine_rows() -> tuple[list[dict[str, Any]], str | None]:
    """The newest recorded engine rows (a ``--no-engine`` run keeps them in its results)."""
    for path in sorted(RESULTS.glob("pricing-*.json"), reverse=True):
        doc = json.loads(path.read_text())
        if doc.get("engine"):
            return doc["engine"], doc.get("engine_date", doc["date"])
    return [], None


def write_results(engine: list[dict[str, Any]], http: list[dict[str, Any]]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    day = now.strftime("%Y-%m-%d")
    engine_date: str | None = now.isoformat()
    if not engine:
        engine, engine_date = previous_engine_rows()
    doc = {
        "benchmark": "pricing",
        "date": now.isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "products": PRODUCTS,
        "engine": engine,
        "engine_date": engine_date,
        "http": http,
    }
    path = RESULTS / f"pricing-{day}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        f"# azora-pricing benchmark ({day})",
        "",
        f"Machine: {os.cpu_count()} CPUs (shared), Python {sys.version.split()[0]}. "
        f"{PRODUCTS:,} products; baskets of 1-3 lines; "
        "command `uv run python bench/pricing/run.py`.",
        "",
        f"## Engine, in-process, one core (measured {engine_date})",
        "",
        "Quotes per CPU-second is what one dedicated core sustains; wall-clock quotes/s is",
        "lower whenever other work shares the core.",
        "",
        "| active rules | evaluate: quotes/CPU-s | evaluate: quotes/s (wall) "
        "| evaluate + JSON trace: quotes/CPU-s | candidate rules/quote | adjustments/quote |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in engine:
        lines.append(
            f"| {row['rules']:,} | {row['evaluate_quotes_per_cpu_s']:,} | "
            f"{row['evaluate_quotes_per_s']:,} | {row['evaluate_and_trace_quotes_per_cpu_s']:,} | "
            f"{row['candidate_rules_per_quote']} | {row['adjustments_per_quote']} |"
        )
    if http:
        first = http[0]
        lines += [
            "",
            f"## HTTP POST /v1/quotes (uvicorn, PostgreSQL, concurrency {first['concurrency']}, "
            f"{first['rules']:,} rules, each quote stored)",
            "",
            "Client, server and PostgreSQL share the machine; CPU is milliseconds per request.",
            "",
            "| client | workers | database | requests | p50 ms | p90 ms | p99 ms | p99.9 ms "
            "| max ms | req/s | server CPU | PostgreSQL CPU | client CPU | quotes/INSERT "
            "| statuses |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for run in http:
            lines.append(
                f"| {run['client']} | {run['workers']} | {run['database']} | "
                f"{run['requests']:,} | {run['p50_ms']} | {run['p90_ms']} | {run['p99_ms']} | "
                f"{run['p999_ms']} | {run['max_ms']} | {run['throughput_rps']:,} | "
                f"{run['server_cpu_ms_per_request']} | "
                f"{run.get('database_cpu_ms_per_request', '-')} | "
                f"{run['client_cpu_ms_per_request']} | {run.get('mean_quote_write_batch', '-')} | "
                f"{run['statuses']}"
                + (f", {run['socket_errors']} socket errors" if run.get("socket_errors") else "")
                + " |"
            )
    md = RESULTS / f"pricing-{day}.md"
    md.write_text("\n".join(lines) + "\n")
    return md


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument(
        "--no-engine", action="store_true", help="HTTP only; the newest engine rows are kept"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--workers", default="1", help="uvicorn worker processes; a comma list runs each"
    )
    parser.add_argument("--client", choices=["wrk", "aiohttp"], default="wrk")
    parser.add_argument("--seconds", type=float, default=None, help="wrk run length")
    parser.add_argument("--requests", type=int, default=None, help="aiohttp request count")
    parser.add_argument(
        "--database",
        default="fast",
        help="fast (fsync off), durable (PostgreSQL defaults) or a comma list: runs each",
    )
    args = parser.parse_args()
    seconds = 1.0 if args.quick else 3.0
    engine = [] if args.no_engine else bench_engine([10, 100, 1_000, 10_000], seconds)
    http = []
    if not args.no_http:
        for database in args.database.split(","):
            if database not in ("fast", "durable"):
                parser.error(f"--database: {database!r} is not fast or durable")
            for workers in (int(w) for w in args.workers.split(",")):
                http.append(
                    bench_http(
                        1_000,
                        concurrency=args.concurrency,
                        workers=workers,
                        client=args.client,
                        seconds=args.seconds or (2.0 if args.quick else 5.0),
                        total=args.requests or (1_000 if args.quick else 4_000),
                        durable=database == "durable",
                    )
                )
    print(write_results(engine, http).read_text())


if __name__ == "__main__":
    main()
