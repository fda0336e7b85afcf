"""ai-orchestrator benchmark with the shared method (bench/harness): the gateway against a
bare proxy floor and LiteLLM, in front of the same instant backend, interleaved in every round.

    uv run python bench/orchestrator/run.py [--rounds 3] [--seconds 10] [--concurrency 16,64]
        [--database durable|fast] [--smoke]      (BENCH_SKIP_LITELLM=1 leaves LiteLLM out)

Targets (each its own process on 127.0.0.1, one worker): ``direct`` (the fake backend,
backend.py), ``floor`` (floor.py: raw ASGI + aiohttp, nothing else), ``orchestrator`` (all
features on: auth, least-request routing over two backends, rate limits per route and client,
metrics, active health checks), ``orchestrator-governed`` (the same, plus a virtual key with
requests/min, tokens/min and a budget: one shared admission statement in PostgreSQL per request,
cost and usage recorded, settlements batched) and ``litellm`` (LiteLLM proxy in its own venv,
never a project dependency). wrk sends non-streaming chat completions at c=1 (the added
latency), 16 and 64; CPU per request is charged to the proxy's process tree. After the rounds,
ttft.py (a Python client, its own process) measures streaming time to first chunk at c=1 once
per target. PostgreSQL (the gateway's routes): ``AZORA_BENCH_DATABASE_URL`` or a private durable
server.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.harness import (  # after the line above: the repository root on the path
    Bench,
    Comparison,
    LoadResult,
    Processes,
    Target,
    free_port,
    parser,
    wrk,
    wrk_script,
)

HERE = Path(__file__).resolve().parent
PY = sys.executable
TOKEN = "bench-api-token-0123456789abcdef"
ADMIN = "bench-admin-token-0123456789abcd"
# LiteLLM refuses to start without a strong master key; with it, it authenticates like we do.
LITELLM_KEY = "sk-bench-master-7f3c9a1e5b2d4c6a8e0f"
LITELLM_VENV = Path("/tmp/litellm-venv")
LITELLM_VERSION = "1.108.7"
CHAT_BODY = '{"model":"bench","messages":[{"role":"user","content":"hello"}],"max_tokens":16}'
PRICE = {"currency": "USD", "inputPerMillion": 250, "outputPerMillion": 1000}
NATURAL_CONCURRENCY = 1  # one client: what the proxy adds to a request's latency


def chat_script(headers: dict[str, str]) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = '{CHAT_BODY}'"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    return wrk_script("\n".join(lines) + "\n")


def ttft(url: str, n: int, token: str | None) -> dict[str, Any]:
    argv = [PY, str(HERE / "ttft.py"), url, str(n)] + ([token] if token else [])
    data = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    t = sorted(data["ttft_ms"])
    return {
        "n": len(t),
        "ttft_p50_ms": statistics.median(t),
        "ttft_p99_ms": t[int(len(t) * 0.99) - 1],
        "total_p50_ms": statistics.median(data["total_ms"]),
        "errors": data["errors"],
    }


def litellm_available() -> tuple[bool, str]:
    if os.environ.get("BENCH_SKIP_LITELLM"):
        return False, "skipped by BENCH_SKIP_LITELLM"
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        uv = shutil.which("uv") or next(
            (str(p) for p in Path.home().glob(".cache/azora/uv-*/bin/uv")), None
        )
        if uv is None:
            return False, "uv not found to install LiteLLM"
        r1 = subprocess.run([uv, "venv", str(LITELLM_VENV)], capture_output=True, text=True)
        r2 = subprocess.run(
            [uv, "pip", "install", "--python", str(LITELLM_VENV),
             f"litellm[proxy]=={LITELLM_VERSION}"],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if r1.returncode or r2.returncode or not exe.exists():
            return False, f"LiteLLM could not be installed: {(r2.stderr or r1.stderr)[-500:]}"
    return True, str(exe)


def put_route(orch_base: str, backend_url: str) -> None:
    route = {
        "model": "bench",
        "strategy": "least-request",
        "backends": [
            {"name": "b1", "url": backend_url, "weight": 3, "price": PRICE},
            {"name": "b2", "url": backend_url, "weight": 1, "price": PRICE},
        ],
        "retry": {"attempts": 3, "budgetPercent": 20},
        "health": {"activeCheck": {"path": "/models", "interval": "10s"}},
        "rateLimits": {
            "requestsPerMinute": 100_000_000,
            "tokensPerMinute": 10**12,
            "perClient": {"requestsPerMinute": 100_000_000, "tokensPerMinute": 10**12},
        },
    }
    request = urllib.request.Request(
        orch_base + "/admin/v1/routes/bench/bench",
        method="PUT",
        data=json.dumps({"generation": 1, "uid": "bench", "spec": route}).encode(),
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status < 300, r.read()


def create_key(orch_base: str) -> str:
    """A virtual key whose limits and budget are never reached but always checked."""
    body = {
        "team": "bench",
        "owner": "bench",
        "requestsPerMinute": 10_000_000,
        "tokensPerMinute": 2_000_000_000,
        "budget": {"amount": 10**15, "unit": "USD", "period": "720h"},
    }
    request = urllib.request.Request(
        orch_base + "/admin/v1/keys",
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return str(json.loads(r.read())["key"])


def start_litellm(
    procs: Processes, backend_url: str, detail: dict[str, Any]
) -> tuple[str, int] | None:
    ok, litellm = litellm_available()
    detail.update({"version": LITELLM_VERSION, "available": ok, "detail": litellm})
    if not ok:
        return None
    cfg = procs.logs / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/bench\n"
        f"      api_base: {backend_url}\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
    )
    port = free_port()
    try:
        proc = procs.start(
            "litellm",
            [litellm, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
             "--num_workers", "1"],
            {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
            ready=f"http://127.0.0.1:{port}/health/liveliness",
            timeout=180,
        )  # fmt: skip
    except (RuntimeError, TimeoutError) as exc:
        detail.update({"available": False, "detail": f"started but never answered: {exc}"[:500]})
        return None
    return f"http://127.0.0.1:{port}/v1", proc.pid


def main() -> int:
    bench = Bench(parser(__doc__).parse_args())
    settings = bench.settings
    levels = (NATURAL_CONCURRENCY, *settings.concurrencies)
    litellm_detail: dict[str, Any] = {}
    with bench:
        procs = bench.procs
        dsn = bench.database("azora_bench_orchestrator")
        backend_port = free_port()
        backend_url = f"http://127.0.0.1:{backend_port}/v1"
        backend = procs.start(
            "backend",
            [PY, str(HERE / "backend.py"), str(backend_port)],
            ready=backend_url + "/models",
        )
        floor_port = free_port()
        floor = procs.start("floor", [PY, str(HERE / "floor.py"), str(floor_port), backend_url])
        env = {
            "ORCHESTRATOR_DATABASE_URL": dsn,
            "ORCHESTRATOR_ADMIN_TOKEN": ADMIN,
            "ORCHESTRATOR_API_TOKENS": json.dumps({TOKEN: ["ai:invoke"]}),
            "ORCHESTRATOR_LOG_LEVEL": "WARNING",
        }
        # Migrated once, here: the two gateways below share the database.
        subprocess.run(
            [PY, "-m", "azora_orchestrator.cli", "migrate"],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
        orch = procs.serve(
            "orchestrator", "azora_orchestrator", env, migrate=False, ready="/healthz"
        )
        orch_base = orch.url
        put_route(orch_base, backend_url)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        procs.wait_ready("orchestrator", orch.proc, orch_base + "/v1/models", auth, 60)
        key = create_key(orch_base)
        gov = procs.serve(
            "orchestrator-governed",
            "azora_orchestrator",
            {**env, "ORCHESTRATOR_REPLICA_NAME": "bench-governed"},
            migrate=False,
            ready="/healthz",
        )
        gov_base = gov.url
        key_auth = {"Authorization": f"Bearer {key}"}
        procs.wait_ready("orchestrator-governed", gov.proc, gov_base + "/v1/models", key_auth, 60)
        endpoints: list[tuple[str, str, int, dict[str, str]]] = [
            ("direct", backend_url, backend.pid, {}),
            ("floor", f"http://127.0.0.1:{floor_port}/v1", floor.pid, {}),
            ("orchestrator", orch_base + "/v1", orch.pid, auth),
            ("orchestrator-governed", gov_base + "/v1", gov.pid, key_auth),
        ]
        procs.wait_port("floor", floor, floor_port)
        litellm = start_litellm(procs, backend_url, litellm_detail)
        if litellm is not None:
            endpoints.append(
                ("litellm", litellm[0], litellm[1], {"Authorization": f"Bearer {LITELLM_KEY}"})
            )
        targets = []
        for name, base, pid, headers in endpoints:
            script = chat_script({"Content-Type": "application/json", **headers})

            def load(
                c: int, seconds: float, url: str = base + "/chat/completions", script: str = script
            ) -> LoadResult:
                return wrk(url, script, concurrency=c, seconds=seconds, timeout="10s")

            label = "backend" if name == "direct" else "proxy"
            targets.append(Target(name, load, {label: pid}, concurrencies=levels))
        comparisons = [
            Comparison("gateway vs the floor (bare aiohttp proxy)", "orchestrator", "floor"),
            Comparison(
                "governed gateway (keys + budgets + usage) vs the floor",
                "orchestrator-governed",
                "floor",
            ),
        ]
        if litellm is not None:
            comparisons.append(Comparison("gateway vs LiteLLM", "orchestrator", "litellm"))
            comparisons.append(
                Comparison(
                    "governed gateway vs LiteLLM (keyless: its virtual keys need Prisma's "
                    "engine, not downloadable here)",
                    "orchestrator-governed",
                    "litellm",
                )
            )
        doc = bench.run(
            "orchestrator",
            "ai-orchestrator benchmark",
            targets,
            comparisons,
            own_pids=[backend.pid, *(pid for _, _, pid, _ in endpoints)],
            extra={"litellm": litellm_detail},
        )
        doc["stream_ttft_c1"] = {}
        for name, base, _, headers in endpoints:
            n = 100 if name == "litellm" else 300
            token = headers.get("Authorization", "").removeprefix("Bearer ") or None
            doc["stream_ttft_c1"][name] = ttft(base + "/chat/completions", n, token)
    bench.finish(doc, notes=notes(doc))
    return 0


def notes(doc: dict[str, Any]) -> list[str]:
    s = doc["summary"]
    out = ["## Gateway against the floor", "",
           "| c | CPU/request gateway / floor | p99 gateway / floor (goal <= 2x) |",
           "|---:|---:|---:|"]  # fmt: skip
    for target in ("orchestrator", "orchestrator-governed"):
        if target not in s or "floor" not in s:
            continue
        for c in sorted(set(s[target]) & set(s["floor"])):
            o, f = s[target][c], s["floor"][c]
            cpu_o = o["cpu_us_per_unit"]["proxy"]["median"]
            cpu_f = f["cpu_us_per_unit"]["proxy"]["median"]
            p99_o, p99_f = o["p99_ms"]["median"], f["p99_ms"]["median"]
            out.append(
                f"| {target} c={c} | {cpu_o:,.1f} / {cpu_f:,.1f} µs = "
                f"{cpu_o / max(cpu_f, 1e-9):.2f}x "
                f"| {p99_o:.2f} / {p99_f:.2f} ms = {p99_o / max(p99_f, 1e-9):.2f}x |"
            )
    lit = doc["litellm"]
    if not lit.get("available"):
        out += ["", f"LiteLLM {lit.get('version')}: not measured ({lit.get('detail')})."]
    t = doc.get("stream_ttft_c1", {})
    if t:
        out += ["", "## Streaming, c=1 (ttft.py, a Python client; once, after the rounds)", "",
                "| target | TTFT p50 ms | TTFT p99 ms | total p50 ms | errors |",
                "|---|---:|---:|---:|---:|"]  # fmt: skip
        out += [
            f"| {name} | {e['ttft_p50_ms']:.3f} | {e['ttft_p99_ms']:.3f} | "
            f"{e['total_p50_ms']:.3f} | {e['errors']} |"
            for name, e in t.items()
        ]
    return out


if __name__ == "__main__":
    sys.exit(main())
