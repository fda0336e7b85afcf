"""azora-ledger benchmark with the shared method (bench/harness): HTTP single transfers
(uniform, hot account) and the batch endpoint (1,000 transfers a request), each beside the
pgledger-style one-round-trip SQL transfer function driven by pgbench; ends with `verify`.

    uv run python bench/ledger/run.py [--rounds 3] [--seconds 10] [--concurrency 16,64]
        [--database durable|fast] [--workers N] [--write-gate process|database] [--smoke]

Targets, interleaved in every round: http_single_uniform, http_single_hot, http_batch (also at
its natural concurrency 4), sql_uniform (also at 4, the batch's reference there), sql_hot.
PostgreSQL: ``AZORA_BENCH_DATABASE_URL`` or a private durable server. pgledger itself is not
fetched (only package registries are reachable here); ``pgledger_style.sql`` is our own
re-implementation of its transfer function and is labelled so in the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.harness import (  # after the line above: the repository root on the path
    Bench,
    Comparison,
    Database,
    LoadResult,
    Service,
    Target,
    parser,
    pgbench,
    settle,
    wrk,
    wrk_script,
)

TOKEN = "bench-token-0123456789abcdef"
ADMIN = "bench-admin-0123456789abcdef"
ACCOUNTS = 1000
HOT = "bench:hot"
BATCH = 1000
BATCH_CONCURRENCY = 4  # the batch endpoint's natural concurrency: a few large writers

# wrk: one transfer per request between two random accounts (or from the hot account).
_SINGLE = """
wrk.method = "POST"
wrk.path = "/v1/transactions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
local hot = %(hot)s
function request()
    local a = math.random(0, %(accounts)d - 1)
    local b = (a + math.random(1, %(accounts)d - 1)) %% %(accounts)d
    local debit = hot and "%(hot_code)s" or string.format("bench:acc:%%d", a)
    local body = string.format('{"postings":[{"account":"%%s","direction":"debit",' ..
        '"amount":7,"currency":"EUR"},{"account":"bench:acc:%%d","direction":"credit",' ..
        '"amount":7,"currency":"EUR"}]}', debit, b)
    return wrk.format(nil, nil, nil, body)
end
"""

# wrk: 1,000 uniform transfers a request; 16 bodies per thread, built once and rotated.
_BATCH = """
wrk.method = "POST"
wrk.path = "/v1/transactions:batch"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
local bodies = {}
local next_body = 0
function make_body()
    local items = {}
    for i = 1, %(size)d do
        local a = math.random(0, %(accounts)d - 1)
        local b = (a + math.random(1, %(accounts)d - 1)) %% %(accounts)d
        items[i] = string.format('{"postings":[{"account":"bench:acc:%%d","direction":"debit",' ..
            '"amount":3,"currency":"EUR"},{"account":"bench:acc:%%d","direction":"credit",' ..
            '"amount":3,"currency":"EUR"}]}', a, b)
    end
    return wrk.format(nil, nil, nil, '{"mode":"atomic","transactions":[' ..
        table.concat(items, ",") .. ']}')
end
function request()
    if #bodies < 16 then bodies[#bodies + 1] = make_body() end
    next_body = next_body %% #bodies + 1
    return bodies[next_body]
end
"""


def single_script(hot: bool) -> str:
    params = {"token": TOKEN, "accounts": ACCOUNTS, "hot": str(hot).lower(), "hot_code": HOT}
    return wrk_script(_SINGLE % params)


def batch_script() -> str:
    return wrk_script(_BATCH % {"token": TOKEN, "accounts": ACCOUNTS, "size": BATCH})


def sql_script(first_id: int, last_id: int, hot_id: int | None) -> str:
    """pgbench: one call of the reference's transfer function per transaction."""
    n = last_id - first_id + 1
    lines = [
        f"\\set a random({first_id}, {last_id})",
        f"\\set d random(1, {n - 1})",
        f"\\set b {first_id} + ((:a - {first_id} + :d) % {n})",
        f"SELECT ref.create_transfer({hot_id if hot_id is not None else ':a'}, :b, 7);",
    ]
    return "\n".join(lines) + "\n"


def body(debit: str, credit: str, amount: int) -> dict[str, Any]:
    return {
        "postings": [
            {"account": debit, "direction": "debit", "amount": amount, "currency": "EUR"},
            {"account": credit, "direction": "credit", "amount": amount, "currency": "EUR"},
        ]
    }


async def prepare_service(api: str) -> None:
    """Accounts, then history: 50,000 transfers through the batch endpoint (not measured)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    codes = [f"bench:acc:{i}" for i in range(ACCOUNTS)]
    async with aiohttp.ClientSession(api, headers=headers) as http:
        for code in [*codes, HOT, "bench:source"]:
            async with http.post(
                "/v1/accounts", json={"code": code, "type": "asset", "currency": "EUR"}
            ) as r:
                assert r.status in (201, 409), await r.text()
        for _ in range(100):
            items = [body(*random.sample(codes, 2), random.randint(1, 10_000)) for _ in range(500)]
            async with http.post(
                "/v1/transactions:batch", json={"mode": "atomic", "transactions": items}
            ) as r:
                assert r.status == 201, await r.text()


async def prepare_reference(url: str) -> tuple[int, int, int]:
    """The reference schema and accounts, with the same history; (hot, first, last) ids."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute((Path(__file__).parent / "pgledger_style.sql").read_text())
        await conn.execute(
            "INSERT INTO ref.accounts (name, currency) SELECT 'acc' || g, 'EUR' "
            "FROM generate_series(1, $1) g",
            ACCOUNTS + 1,
        )
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM ref.accounts ORDER BY id")]
        hot, ids = ids[0], ids[1:]
        assert ids[-1] - ids[0] + 1 == len(ids), "reference account ids are not contiguous"
        for _ in range(50):
            async with conn.transaction():
                await conn.executemany(
                    "SELECT ref.create_transfer($1, $2, $3)",
                    [(*random.sample(ids, 2), random.randint(1, 10_000)) for _ in range(1000)],
                )
        return hot, ids[0], ids[-1]
    finally:
        await conn.close()


def service_figures(api: str) -> dict[str, Any]:
    """Mean coalesced batch size and write-turn times, from the service's own metrics."""
    import urllib.request

    with urllib.request.urlopen(api + "/metrics", timeout=10) as r:
        text = r.read().decode()

    def mean(name: str, label: str) -> float | None:
        total = count = None
        for line in text.splitlines():
            if label in line and line.startswith(name + "_sum"):
                total = float(line.rsplit(" ", 1)[1])
            elif label in line and line.startswith(name + "_count"):
                count = float(line.rsplit(" ", 1)[1])
        return round(total / count, 5) if total is not None and count else None

    size = mean("azora_ledger_batch_size", 'source="coalesced"')
    out: dict[str, Any] = {"coalesced_batch_size": round(size, 1) if size is not None else None}
    for name in ("wait", "held"):
        m = mean(f"azora_ledger_write_turn_{name}_seconds", "")
        out[f"write_turn_{name}_mean_ms"] = round(m * 1000, 2) if m is not None else None
    return out


def verify(url: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", "from azora_ledger.cli import main; main()", "verify"],
        env={**os.environ, "LEDGER_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(proc.stdout)
    return {
        "ok": bool(report["ok"]) and proc.returncode == 0,
        "checked": report["checked"],
        "duration_seconds": report["duration_seconds"],
    }


@contextlib.contextmanager
def profiled(pid: int, out_dir: Path | None, name: str) -> Iterator[None]:
    """Sample the service with py-spy (collapsed stacks) while a target runs, if asked."""
    if out_dir is None:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [os.environ.get("PY_SPY", "py-spy"), "record", "--pid", str(pid), "--subprocesses",
         "--format", "raw", "--rate", "200", "--output", str(out_dir / f"{name}.txt"),
         "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
        spy.wait(30)


def targets_for(
    db: Database,
    api: str,
    service_pid: int,
    service_url: str,
    ref_url: str,
    ref_ids: tuple[int, int, int],
    concurrencies: tuple[int, ...],
    seconds: float,
    profile_dir: Path | None,
    variants: list[tuple[str, str, int, str]] = [],  # noqa: B006 (read only)
) -> list[Target]:
    """``variants``: (name, api, pid, url) of further services (``--variant``), whose HTTP
    targets are named ``<target>@<name>`` and measured in the same rounds."""
    hot_id, first, last = ref_ids
    with_batch_level = (BATCH_CONCURRENCY, *concurrencies)
    service_charge = db.charge(service=service_pid)
    ref_charge = db.charge()

    def http(name: str, script: str, path: str) -> Callable[[int, float], LoadResult]:
        def go(concurrency: int, seconds: float) -> LoadResult:
            with profiled(service_pid, profile_dir, f"{name}-c{concurrency}"):
                return wrk(api + path, script, concurrency=concurrency, seconds=seconds)

        return go

    def sql(script: str) -> Callable[[int, float], LoadResult]:
        def go(concurrency: int, seconds: float) -> LoadResult:
            return pgbench(ref_url, script, concurrency=concurrency, seconds=seconds)

        return go

    def settle_service() -> None:
        settle(service_url)

    def settle_reference() -> None:
        settle(ref_url)

    def variant_targets(name: str, api: str, pid: int, url: str) -> list[Target]:
        charge = db.charge(service=pid)

        def load(script: str, path: str) -> Callable[[int, float], LoadResult]:
            def go(concurrency: int, seconds: float) -> LoadResult:
                return wrk(api + path, script, concurrency=concurrency, seconds=seconds)

            return go

        def settle_variant() -> None:
            settle(url)

        return [
            Target(f"http_single_uniform@{name}", load(single_script(False), "/v1/transactions"),
                   charge, before=settle_variant),
            Target(f"http_single_hot@{name}", load(single_script(True), "/v1/transactions"),
                   charge, before=settle_variant),
            Target(f"http_batch@{name}", load(batch_script(), "/v1/transactions:batch"), charge,
                   concurrencies=with_batch_level, units_per_request=BATCH,
                   before=settle_variant, min_seconds=3 * seconds),
        ]  # fmt: skip

    return [
        *(t for v in variants for t in variant_targets(*v)),
        Target("http_single_uniform", http("http_single_uniform", single_script(False),
               "/v1/transactions"), service_charge, before=settle_service),
        Target("http_single_hot", http("http_single_hot", single_script(True),
               "/v1/transactions"), service_charge, before=settle_service),
        # A batch takes seconds at c=64: measured three times as long, so the requests cut
        # off at the end (half a request per connection on average) weigh little.
        Target("http_batch", http("http_batch", batch_script(), "/v1/transactions:batch"),
               service_charge, concurrencies=with_batch_level, units_per_request=BATCH,
               before=settle_service, min_seconds=3 * seconds),
        Target("sql_uniform", sql(sql_script(first, last, None)), ref_charge,
               concurrencies=with_batch_level, before=settle_reference),
        Target("sql_hot", sql(sql_script(first, last, hot_id)), ref_charge,
               before=settle_reference),
    ]  # fmt: skip


COMPARISONS = [
    Comparison("HTTP single transfer, uniform", "http_single_uniform", "sql_uniform", 1.0),
    Comparison("HTTP single transfer, hot account", "http_single_hot", "sql_hot", 2.0),
    Comparison("HTTP batch endpoint (1,000/request), uniform", "http_batch", "sql_uniform", 5.0),
]


def main() -> int:
    cli = parser(__doc__)
    cli.add_argument("--workers", type=int, default=1, help="uvicorn workers of the service")
    cli.add_argument(
        "--write-gate",
        choices=["process", "database"],
        default="process",
        help="LEDGER_WRITE_GATE of the service (database: one writer across its workers)",
    )
    cli.add_argument(
        "--profile-dir",
        type=Path,
        help="record py-spy collapsed stacks of the service per measurement ($PY_SPY or py-spy)",
    )
    cli.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=VAR=VALUE[,VAR=VALUE...]",
        help="also start a service with these LEDGER_ settings; its targets are "
        "<target>@NAME, measured in the same rounds (an A/B of settings on a noisy machine)",
    )
    args = cli.parse_args()
    bench = Bench(args)
    settings = bench.settings
    variant_env: list[tuple[str, dict[str, str]]] = []
    for spec in args.variant:
        name, _, assignments = spec.partition("=")
        pairs = [a.partition("=") for a in assignments.split(",") if a]
        variant_env.append((name, {k: v for k, _, v in pairs}))

    def serve(name: str, url: str, env: dict[str, str]) -> Service:
        service = bench.procs.serve(
            name,
            "azora_ledger",
            {
                "LEDGER_WRITE_GATE": args.write_gate,
                "LEDGER_DATABASE_URL": url,
                "LEDGER_API_TOKENS": json.dumps({TOKEN: ["*"]}),
                "LEDGER_ADMIN_TOKEN": ADMIN,
                "LEDGER_LOG_LEVEL": "WARNING",
                "LEDGER_DB_POOL_SIZE": "20",
                **env,
            },
            workers=args.workers,
        )
        asyncio.run(prepare_service(service.url))
        return service

    with bench:
        ref_url = bench.database("ledger_bench_ref")
        ref_ids = asyncio.run(prepare_reference(ref_url))
        service_url = bench.database("ledger_bench")
        service = serve("ledger", service_url, {})
        api = service.url
        variants: list[tuple[str, str, int, str]] = []
        for name, env in variant_env:
            v_url = bench.database(f"ledger_bench_{name}")
            v_service = serve(f"ledger-{name}", v_url, env)
            variants.append((name, v_service.url, v_service.pid, v_url))
        targets = targets_for(
            bench.db, api, service.pid, service_url, ref_url, ref_ids, settings.concurrencies,
            settings.seconds, args.profile_dir, variants,
        )  # fmt: skip
        doc = bench.run(
            "ledger",
            "azora-ledger benchmark",
            targets,
            [
                *COMPARISONS,
                *(
                    Comparison(f"{c.label} @{name}", f"{c.target}@{name}", c.reference, c.goal)
                    for name, _ in variant_env
                    for c in COMPARISONS
                ),
            ],
            own_pids=[service.pid, *(v[2] for v in variants)],
            extra={
                "reference_label": "pgledger-style SQL reference (our re-implementation)",
                "service_workers": args.workers,
                "write_gate": args.write_gate,
                "variants": dict(variant_env),
            },
        )
        doc["service_figures"] = service_figures(api)
        for name, v_api, _, _ in variants:
            doc[f"service_figures@{name}"] = service_figures(v_api)
        bench.procs.stop(service.proc)
        doc["verify"] = verify(service_url)
        for name, _, _, v_url in variants:
            doc[f"verify@{name}"] = verify(v_url)
    figures, checked = doc["service_figures"], doc["verify"]
    notes = [
        f"Service: {args.workers} uvicorn worker(s), write gate {args.write_gate}. Reference: "
        f"**{doc['reference_label']}**, one `SELECT ref.create_transfer(...)` per pgbench "
        "transaction (prepared). Batch figures are transfers/s and CPU per transfer; the batch "
        f"also runs at its natural concurrency {BATCH_CONCURRENCY}, and for three times as long "
        "as the other targets (a request takes seconds at c=64).",
        "",
        f"Mean coalesced batch size: {figures['coalesced_batch_size']}; write turn wait / held "
        f"(means): {figures['write_turn_wait_mean_ms']} / {figures['write_turn_held_mean_ms']} "
        f"ms. Verify after the run: **{'passed' if checked['ok'] else 'FAILED'}** "
        f"({checked['checked']}).",
    ]
    suffix = (f"-workers{args.workers}" if args.workers != 1 else "") + (
        "-database-gate" if args.write_gate == "database" else ""
    )
    for name, env in variant_env:
        v_figures, v_checked = doc[f"service_figures@{name}"], doc[f"verify@{name}"]
        notes += [
            "",
            f"Variant **{name}** ({env}): mean coalesced batch size "
            f"{v_figures['coalesced_batch_size']}; write turn wait / held (means): "
            f"{v_figures['write_turn_wait_mean_ms']} / {v_figures['write_turn_held_mean_ms']} "
            f"ms. Verify: **{'passed' if v_checked['ok'] else 'FAILED'}** "
            f"({v_checked['checked']}).",
        ]
    if variant_env:
        suffix += "-variants"
    bench.finish(doc, notes=notes, suffix=suffix)
    ok = checked["ok"] and all(doc[f"verify@{n}"]["ok"] for n, _ in variant_env)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
