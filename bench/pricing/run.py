"""azora-pricing benchmark with the shared method (bench/harness).

    uv run python bench/pricing/run.py [--rounds 3] [--seconds 10] [--concurrency 16,64]
        [--database durable|fast] [--workers 1[,2]] [--no-engine] [--smoke]

1. In-process engine, one core (not load-generated): quotes/s and quotes per CPU-second with
   1,000 active rules over 10,000 products, and the curve for 10 / 100 / 1,000 / 10,000 rules
   (rules indexed by target: cost should stay flat).
2. HTTP ``POST /v1/quotes`` (each quote stored) against ``azora-pricing serve`` on PostgreSQL,
   wrk rotating over 500 baskets, interleaved with the reference: pgbench running the quote's
   own INSERT (same statement shape, the same stored documents, one quote per transaction):
   what storing a quote costs PostgreSQL alone, the floor under the service's latency.
   Goal (issue 17): p99 <= 10 ms at c=16 and c=64 on durable PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for bench.harness below
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
from bench.harness import Bench, Comparison, Target, parser, pgbench, settle, wrk, wrk_script

PRODUCTS = 10_000
RULES = 1_000
LABELS = [f"label-{i}" for i in range(200)]
SEGMENTS = ["student", "staff", "alumni", "public"]
ADMIN = "bench-admin-token-0123456789"
TOKEN = "bench-api-token-0123456789"
SAMPLES = 500  # stored quotes the reference re-inserts


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


# --- 2. HTTP, with the reference -------------------------------------------------------------


# wrk: every request prepared once per thread, the connections rotating over the baskets.
QUOTES_LUA = """
local bodies = {BODIES}
local prepared = {}
local counter = 0
function thread_init(args)
  local headers = {["Authorization"] = "Bearer TOKEN", ["Content-Type"] = "application/json"}
  for i, body in ipairs(bodies) do
    prepared[i] = wrk.format("POST", "/v1/quotes", headers, body)
  end
  counter = thread_id * 7919
end
function request()
  counter = counter + 1
  return prepared[counter % #prepared + 1]
end
"""

# pgbench: the service's INSERT for one quote, from stored quotes (the same documents).
REFERENCE_SQL = f"""\\set k random(1, {SAMPLES})
INSERT INTO quotes (id, status, customer_id, currency, total, codes, request, result,
                    snapshot_revision, created_at, expires_at)
SELECT gen_random_uuid(), 'open', q.customer_id, q.currency, q.total, q.codes, q.request,
       q.result, s.revision, now(), now() + interval '15 minutes'
FROM bench_quote_sample q JOIN pricing_state s ON s.id = 1 AND s.revision = q.snapshot_revision
WHERE q.n = :k;
"""


def quotes_script(bodies: list[dict[str, Any]]) -> str:
    literals = []
    for body in bodies:
        text = json.dumps(body)
        assert "]==]" not in text
        literals.append(f"[==[{text}]==]")
    lua = QUOTES_LUA.replace("{BODIES}", "{" + ",\n".join(literals) + "}")
    return wrk_script(lua.replace("TOKEN", TOKEN))


async def sample_quotes(dsn: str) -> None:
    """Keep SAMPLES of the quotes the warm-up stored, for the reference to insert again."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE bench_quote_sample AS SELECT row_number() OVER () AS n, customer_id,"
            " currency, total, codes, request, result, snapshot_revision FROM quotes LIMIT $1",
            SAMPLES,
        )
        await conn.execute("ALTER TABLE bench_quote_sample ADD PRIMARY KEY (n)")
        count = await conn.fetchval("SELECT count(*) FROM bench_quote_sample")
        assert count == SAMPLES, f"the warm-up stored {count} quotes, fewer than {SAMPLES}"
    finally:
        await conn.close()


def quote_write_batches(url: str) -> dict[str, float] | None:
    """Quotes per INSERT over the whole run, from the service's own histogram."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        for suffix in ("_sum", "_count"):
            if line.startswith("azora_pricing_quote_write_batch_size" + suffix + " "):
                values[suffix] = float(line.split()[1])
    if not values.get("_count"):
        return None
    return {
        "inserts": values["_count"],
        "quotes_per_insert": round(values["_sum"] / values["_count"], 2),
    }


def main() -> int:
    cli = parser(__doc__)
    cli.add_argument("--no-engine", action="store_true", help="HTTP only")
    cli.add_argument("--workers", default="1", help="uvicorn workers; a comma list: a target each")
    args = cli.parse_args()
    bench = Bench(args)
    settings = bench.settings
    engine = (
        []
        if args.no_engine
        else bench_engine([10, 100, 1_000, 10_000], 1.0 if settings.smoke else 3.0)
    )
    workers = [int(w) for w in args.workers.split(",")]
    with bench:
        dsn = bench.database("azora_bench_pricing")
        from azora_common.migrations import upgrade_to_head

        upgrade_to_head(MIGRATIONS, dsn)
        asyncio.run(seed(dsn, RULES))
        script = quotes_script(baskets(500, random.Random(11)))
        targets, services = [], []
        for n in workers:
            service = bench.procs.serve(
                f"pricing-w{n}",
                "azora_pricing",
                {
                    "PRICING_DATABASE_URL": dsn,
                    "PRICING_ADMIN_TOKEN": ADMIN,
                    "PRICING_API_TOKENS": json.dumps({TOKEN: ["*"]}),
                    "PRICING_LOG_LEVEL": "WARNING",
                    "PRICING_DB_POOL_SIZE": "16",
                },
                workers=n,
                migrate=False,
            )
            services.append((n, service))

            def load(c: int, seconds: float, url: str = service.url) -> Any:
                return wrk(url + "/v1/quotes", script, concurrency=c, seconds=seconds)

            charge = bench.db.charge(service=service.pid)
            targets.append(Target(f"pricing_w{n}", load, charge, before=lambda: settle(dsn)))
        # Warm-up that also stores the quotes the reference re-inserts.
        wrk(services[0][1].url + "/v1/quotes", script, concurrency=16, seconds=2)
        asyncio.run(sample_quotes(dsn))
        reference = REFERENCE_SQL

        def store(c: int, seconds: float) -> Any:
            return pgbench(dsn, reference, concurrency=c, seconds=seconds)

        ref_charge = bench.db.charge()
        targets.append(Target("sql_store_quote", store, ref_charge, before=lambda: settle(dsn)))
        comparisons = [
            Comparison(f"POST /v1/quotes, {n} worker(s), {RULES:,} rules", f"pricing_w{n}",
                       "sql_store_quote")
            for n in workers
        ]  # fmt: skip
        doc = bench.run(
            "pricing",
            "azora-pricing benchmark",
            targets,
            comparisons,
            own_pids=[s.pid for _, s in services],
            extra={"engine": engine, "products": PRODUCTS, "rules": RULES},
        )
        doc["quote_writes"] = {f"w{n}": quote_write_batches(s.url) for n, s in services}
    notes = [
        "Reference: **the quote's own INSERT via pgbench** (the statement shape of "
        "`insert_quotes_if_current`, one quote per transaction, the documents of 500 quotes the "
        "service stored): what storing a quote costs PostgreSQL alone. Goal (issue 17): the "
        "service's p99 <= 10 ms at c=16 and c=64, durable.",
        "",
        f"Quotes per INSERT over the run (the service's quote writer): {doc['quote_writes']}.",
    ]
    if engine:
        notes += [
            "",
            "## Engine, in-process, one core (not load-generated)",
            "",
            "Quotes per CPU-second is what one dedicated core sustains.",
            "",
            "| active rules | evaluate: quotes/CPU-s | evaluate: quotes/s (wall) "
            "| evaluate + JSON trace: quotes/CPU-s | candidate rules/quote | adjustments/quote |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        notes += [
            f"| {row['rules']:,} | {row['evaluate_quotes_per_cpu_s']:,} | "
            f"{row['evaluate_quotes_per_s']:,} | {row['evaluate_and_trace_quotes_per_cpu_s']:,} | "
            f"{row['candidate_rules_per_quote']} | {row['adjustments_per_quote']} |"
            for row in engine
        ]
    bench.finish(doc, notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
