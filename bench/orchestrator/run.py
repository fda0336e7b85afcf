"""Benchmark: the orchestrator against a bare proxy floor and LiteLLM, same backend, same run.

Targets (each a separate process on 127.0.0.1, one worker): the fake backend directly; the floor
(floor.py: raw ASGI + aiohttp, nothing else); the orchestrator with all features on (auth,
least-request routing over two backends, rate limits per route and client, metrics, active
health checks); LiteLLM proxy installed into its own venv (never a project dependency).

Load: wrk (its own process) for non-streaming requests at concurrency 1, 16 and 64; ttft.py (its
own process) for streaming time to first chunk at concurrency 1. CPU per proxied request is the
proxy process tree's CPU time delta over the requests it served in that run.

``uv run python bench/orchestrator/run.py`` (env: AZORA_BENCH_DATABASE_URL, a libpq URL to a
PostgreSQL where a database may be created; otherwise a private one is started;
BENCH_SECONDS per run, default 5; BENCH_SKIP_LITELLM=1 to leave LiteLLM out).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
TOKEN = "bench-api-token-0123456789abcdef"
ADMIN = "bench-admin-token-0123456789abcd"
# LiteLLM refuses to start without a strong master key; with it, it authenticates like we do.
LITELLM_KEY = "sk-bench-master-7f3c9a1e5b2d4c6a8e0f"
LITELLM_VENV = Path("/tmp/litellm-venv")
LITELLM_VERSION = "1.108.7"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHAT_BODY = '{"model":"bench","messages":[{"role":"user","content":"hello"}],"max_tokens":16}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 90.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0, headers=headers).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    stats: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        p = int(entry.name)
        children.setdefault(int(fields[1]), []).append(p)
        stats[p] = (int(fields[11]), int(fields[12]))
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        utime, stime = stats.get(p, (0, 0))
        total += utime + stime
        todo.extend(children.get(p, []))
    return total / CLK_TCK


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = Path(tempfile.mkdtemp(prefix="orch-bench-"))

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        self.procs.append(proc)
        return proc.pid

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def wrk(url: str, concurrency: int, headers: dict[str, str]) -> dict[str, Any]:
    lua = Path(tempfile.mkstemp(suffix=".lua")[1])
    lines = ['wrk.method = "POST"', f"wrk.body = '{CHAT_BODY}'"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    lua.write_text("\n".join(lines) + "\n")
    threads = 1 if concurrency == 1 else 2
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{SECONDS}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(lua),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lua.unlink()

    def ms(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": ms(pct["50"]),
        "p99_ms": ms(pct["99"]),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


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


@contextlib.contextmanager
def database() -> Iterator[str]:
    url = os.environ.get("AZORA_BENCH_DATABASE_URL") or os.environ.get("AZORA_TEST_DATABASE_URL")
    server = None
    if not url:
        from azora_devenv.postgres import LocalPostgres

        server = LocalPostgres(Path(tempfile.mkdtemp(prefix="orch-bench-pg-")) / "data", fast=True)
        server.start()
        url = server.url("postgres")
    url = url.replace("postgresql+asyncpg://", "postgresql://")

    async def recreate() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute('DROP DATABASE IF EXISTS "azora_bench_orchestrator" WITH (FORCE)')
            await conn.execute('CREATE DATABASE "azora_bench_orchestrator"')
        finally:
            await conn.close()

    asyncio.run(recreate())
    try:
        parts = urlsplit(url)
        yield urlunsplit((parts.scheme, parts.netloc, "/azora_bench_orchestrator", parts.query, ""))
    finally:
        if server is not None:
            server.stop()


def litellm_available() -> tuple[bool, str]:
    if os.environ.get("BENCH_SKIP_LITELLM"):
        return False, "skipped by BENCH_SKIP_LITELLM"
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        uv = shutil.which("uv")
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


def main() -> int:
    if shutil.which("wrk") is None:
        sys.stderr.write("wrk is required (apt-get install -y wrk)\n")
        return 2
    procs = Procs()
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "note": "shared by other workloads during the run"},
        "seconds_per_run": SECONDS,
        "targets": {},
    }
    try:
        with database() as dsn:
            backend_port = free_port()
            procs.start("backend", [PY, str(HERE / "backend.py"), str(backend_port)])
            backend_url = f"http://127.0.0.1:{backend_port}/v1"
            wait_http(backend_url + "/models")

            floor_port = free_port()
            floor_pid = procs.start(
                "floor", [PY, str(HERE / "floor.py"), str(floor_port), backend_url]
            )

            orch_port = free_port()
            env = {
                "ORCHESTRATOR_DATABASE_URL": dsn,
                "ORCHESTRATOR_ADMIN_TOKEN": ADMIN,
                "ORCHESTRATOR_API_TOKENS": json.dumps({TOKEN: ["ai:invoke"]}),
                "ORCHESTRATOR_LOG_LEVEL": "WARNING",
            }
            orch = [PY, "-m", "azora_orchestrator.cli"]
            subprocess.run(
                [*orch, "migrate"], env={**os.environ, **env}, check=True, capture_output=True
            )
            orch_pid = procs.start(
                "orchestrator", [*orch, "serve", "--port", str(orch_port)], env=env
            )
            orch_base = f"http://127.0.0.1:{orch_port}"
            wait_http(orch_base + "/healthz")
            route = {
                "model": "bench",
                "strategy": "least-request",
                "backends": [
                    {"name": "b1", "url": backend_url, "weight": 3},
                    {"name": "b2", "url": backend_url, "weight": 1},
                ],
                "retry": {"attempts": 3, "budgetPercent": 20},
                "health": {"activeCheck": {"path": "/models", "interval": "10s"}},
                "rateLimits": {
                    "requestsPerMinute": 100_000_000,
                    "tokensPerMinute": 10**12,
                    "perClient": {"requestsPerMinute": 100_000_000, "tokensPerMinute": 10**12},
                },
            }
            r = httpx.put(
                orch_base + "/admin/v1/routes/bench/bench",
                json={"generation": 1, "uid": "bench", "spec": route},
                headers={"Authorization": f"Bearer {ADMIN}"},
            )
            r.raise_for_status()
            auth = {"Authorization": f"Bearer {TOKEN}"}
            wait_http(orch_base + "/v1/models", headers=auth)
            time.sleep(0.5)

            targets: list[tuple[str, str, int | None, dict[str, str]]] = [
                ("direct", backend_url, None, {}),
                ("floor", f"http://127.0.0.1:{floor_port}/v1", floor_pid, {}),
                ("orchestrator", orch_base + "/v1", orch_pid, auth),
            ]
            ok, litellm = litellm_available()
            results["litellm"] = {"version": LITELLM_VERSION, "available": ok, "detail": litellm}
            if ok:
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
                lport = free_port()
                lpid = procs.start(
                    "litellm",
                    [litellm, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(lport),
                     "--num_workers", "1"],
                    env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
                )  # fmt: skip
                try:
                    wait_http(f"http://127.0.0.1:{lport}/health/liveliness", timeout=180)
                    targets.append(
                        (
                            "litellm",
                            f"http://127.0.0.1:{lport}/v1",
                            lpid,
                            {"Authorization": f"Bearer {LITELLM_KEY}"},
                        )
                    )
                except RuntimeError:
                    results["litellm"]["available"] = False
                    results["litellm"]["detail"] = "started but never answered"

            for name, base, pid, headers in targets:
                entry: dict[str, Any] = {}
                hdrs = {"Content-Type": "application/json", **headers}
                # Warm-up (connections, JIT-free but caches and pools).
                wrk_small = wrk(base + "/chat/completions", 4, hdrs)
                del wrk_small
                for c in (1, 16, 64):
                    cpu0 = tree_cpu(pid) if pid else 0.0
                    run = wrk(base + "/chat/completions", c, hdrs)
                    if pid:
                        run["cpu_ms_per_request"] = (
                            (tree_cpu(pid) - cpu0) * 1000 / max(1, run["requests"])
                        )
                    entry[f"c{c}"] = run
                    print(name, c, run, flush=True)
                n = 100 if name == "litellm" else 300
                token = headers.get("Authorization", "").removeprefix("Bearer ") or None
                entry["stream_c1"] = ttft(base + "/chat/completions", n, token)
                print(name, "stream", entry["stream_c1"], flush=True)
                results["targets"][name] = entry
    finally:
        procs.stop()

    direct = results["targets"]["direct"]
    for name, entry in results["targets"].items():
        if name == "direct":
            continue
        entry["added_p50_c1_ms"] = entry["c1"]["p50_ms"] - direct["c1"]["p50_ms"]
        entry["added_p99_c1_ms"] = entry["c1"]["p99_ms"] - direct["c1"]["p99_ms"]
        entry["added_ttft_p50_ms"] = (
            entry["stream_c1"]["ttft_p50_ms"] - direct["stream_c1"]["ttft_p50_ms"]
        )
    write(results)
    return 0


def write(results: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    day = results["date"][:10]
    (RESULTS / f"orchestrator-{day}.json").write_text(json.dumps(results, indent=2) + "\n")
    t = results["targets"]
    lines = [
        f"# ai-orchestrator benchmark, {results['date']}",
        "",
        f"One worker per proxy; {results['machine']['cpus']} CPUs shared by the backend, the "
        f"load generator (wrk / ttft.py, separate processes) and other workloads; "
        f"{results['seconds_per_run']} s per run. Added latency = proxy minus direct (p50; "
        "p99 is shown absolute: on a shared machine its difference is noise). CPU/req = the "
        "proxy's process CPU time over the requests of that run.",
        "",
        "| target | CPU/req c=16 | CPU/req c=64 | added p50 c=1 | p50 / p99 c=1 | req/s c=1 "
        "| req/s c=16 | req/s c=64 | added TTFT p50 (stream) | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in t.items():
        errors = sum(e[f"c{c}"]["non_2xx"] for c in (1, 16, 64)) + e["stream_c1"]["errors"]
        p50_p99 = f"{e['c1']['p50_ms']:.3f} / {e['c1']['p99_ms']:.3f} ms"
        if name == "direct":
            lines.append(
                f"| direct | - | - | - | {p50_p99} | {e['c1']['rps']:.0f} | "
                f"{e['c16']['rps']:.0f} | {e['c64']['rps']:.0f} | "
                f"(TTFT {e['stream_c1']['ttft_p50_ms']:.3f} ms) | {errors} |"
            )
            continue
        lines.append(
            f"| {name} | {e['c16']['cpu_ms_per_request']:.3f} ms | "
            f"{e['c64']['cpu_ms_per_request']:.3f} ms | {e['added_p50_c1_ms']:.3f} ms | "
            f"{p50_p99} | {e['c1']['rps']:.0f} | {e['c16']['rps']:.0f} | "
            f"{e['c64']['rps']:.0f} | {e['added_ttft_p50_ms']:.3f} ms | {errors} |"
        )
    lit = results.get("litellm", {})
    if not lit.get("available"):
        lines += ["", f"LiteLLM {lit.get('version')}: not measured ({lit.get('detail')})."]
    elif "litellm" in t and "orchestrator" in t:
        for c in (16, 64):
            ratio = t["orchestrator"][f"c{c}"]["rps"] / max(1.0, t["litellm"][f"c{c}"]["rps"])
            lines.append("")
            lines.append(f"Orchestrator / LiteLLM throughput at c={c}: {ratio:.1f}x")
    if "floor" in t and "orchestrator" in t:
        ratio = (
            t["orchestrator"]["c16"]["cpu_ms_per_request"] / t["floor"]["c16"]["cpu_ms_per_request"]
        )
        lines += ["", f"Orchestrator CPU per request at c=16 vs the floor: {ratio:.2f}x"]
    (RESULTS / f"orchestrator-{day}.md").write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        # Re-render the table from a results file without running anything.
        write(json.loads(Path(sys.argv[2]).read_text()))
        sys.exit(0)
    sys.exit(main())
