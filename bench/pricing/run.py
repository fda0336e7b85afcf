"""Benchmark of azora-pricing (not a test): engine throughput and HTTP quote latency.

    uv run python bench/pricing/run.py [--quick]

1. In-process engine, one core: quotes/s with 1,000 active rules over 10,000 products, and the
   curve for 10 / 100 / 1,000 / 10,000 rules (rules indexed by target: cost should stay flat).
2. HTTP ``POST /v1/quotes`` at concurrency 16 against ``azora-pricing serve`` (uvicorn, one
   worker) on a real PostgreSQL (``AZORA_BENCH_DATABASE_URL`` or a private LocalPostgres):
   p50 / p99 latency, throughput and the server's CPU time per request (from /proc: the
   steady figure on a shared machine). Each quote is stored (one INSERT per request).
   ``AZORA_BENCH_PYSPY=<py-spy binary>`` also records the server's stacks during the run
   (collapsed format, into ``AZORA_BENCH_PYSPY_OUT``).

Results: bench/results/pricing-<date>.json and .md.
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
    """User + system CPU time of a process (Linux ``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


async def load(
    url: str, bodies: list[dict[str, Any]], concurrency: int, total: int, warmup: int
) -> dict[str, Any]:
    # aiohttp rather than httpx: the client shares the machine, so its CPU cost matters.
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(total + warmup))
    payloads = [json.dumps(b).encode() for b in bodies]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url=url, connector=connector, headers=headers) as http:

        async def worker() -> None:
            for n in counter:
                start = time.perf_counter()
                async with http.post("/v1/quotes", data=payloads[n % len(payloads)]) as response:
                    await response.read()
                elapsed = time.perf_counter() - start
                if n >= warmup:
                    latencies.append(elapsed)
                    statuses[response.status] = statuses.get(response.status, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    return {
        "requests": len(latencies),
        "concurrency": concurrency,
        "statuses": statuses,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
        "throughput_rps_incl_warmup": round((total + warmup) / wall),
    }


def bench_http(
    rule_count: int, total: int, *, concurrency: int = 16, workers: int = 1
) -> dict[str, Any]:
    from azora_common.devenv.postgres import LocalPostgres

    work = Path(tempfile.mkdtemp(prefix="pricing-bench-"))
    server: LocalPostgres | None = None
    base = os.environ.get("AZORA_BENCH_DATABASE_URL")
    try:
        if base is None:
            server = LocalPostgres(work / "pgdata", fast=True)
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
            [script, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
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
            # Service CPU per request is the steady measure on a shared machine (wall-clock
            # latency depends on what else runs); it is sampled around the measured part only.
            asyncio.run(load(url, bodies, concurrency, 300, warmup=0))
            profiler = None
            if pyspy := os.environ.get("AZORA_BENCH_PYSPY"):
                out = os.environ.get("AZORA_BENCH_PYSPY_OUT", "pricing-profile.txt")
                profiler = subprocess.Popen(
                    [pyspy, "record", "-p", str(proc.pid), "-f", "raw", "-o", out]
                )
                time.sleep(1)
            cpu_start, client_start = process_cpu_seconds(proc.pid), time.process_time()
            result = asyncio.run(load(url, bodies, concurrency, total, warmup=0))
            cpu = process_cpu_seconds(proc.pid) - cpu_start
            client_cpu = time.process_time() - client_start
            if profiler is not None:
                profiler.send_signal(2)
                profiler.wait(timeout=30)
            result["server_cpu_ms_per_request"] = round(cpu * 1000 / total, 3)
            result["client_cpu_ms_per_request"] = round(client_cpu * 1000 / total, 3)
            result["rules"] = rule_count
            result["workers"] = workers
            result["products"] = PRODUCTS
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


def write_results(engine: list[dict[str, Any]], http: dict[str, Any] | None) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    doc = {
        "benchmark": "pricing",
        "date": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "products": PRODUCTS,
        "engine": engine,
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
        "## Engine, in-process, one core",
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
    if http is not None:
        lines += [
            "",
            f"## HTTP POST /v1/quotes (uvicorn, {http['workers']} worker(s), PostgreSQL, "
            f"concurrency {http['concurrency']}, {http['rules']:,} rules)",
            "",
            "| requests | p50 ms | p90 ms | p99 ms | max ms | req/s | server CPU ms/request "
            "| client CPU ms/request |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {http['requests']:,} | {http['p50_ms']} | {http['p90_ms']} | {http['p99_ms']} | "
            f"{http['max_ms']} | {http['throughput_rps_incl_warmup']:,} | "
            f"{http['server_cpu_ms_per_request']} | {http['client_cpu_ms_per_request']} |",
            "",
            f"Statuses: {http['statuses']}. Client, server and PostgreSQL share the machine.",
        ]
    md = RESULTS / f"pricing-{day}.md"
    md.write_text("\n".join(lines) + "\n")
    return md


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--no-engine", action="store_true")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--requests", type=int, default=None)
    args = parser.parse_args()
    seconds = 1.0 if args.quick else 3.0
    engine = [] if args.no_engine else bench_engine([10, 100, 1_000, 10_000], seconds)
    total = args.requests or (1_000 if args.quick else 4_000)
    http = None
    if not args.no_http:
        http = bench_http(1_000, total, concurrency=args.concurrency, workers=args.workers)
    print(write_results(engine, http).read_text())


if __name__ == "__main__":
    main()
