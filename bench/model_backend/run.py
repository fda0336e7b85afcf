"""bench/model_backend: latency and memory of the local model backend (services/model-backend).

Starts ``azora-model-backend`` as a real process on a free 127.0.0.1 port and measures, one
request at a time (the honest single-user number; the work is CPU-bound numpy):

- start-up: process start -> /healthz answers (both models loaded);
- one embedding (1 sentence) and a batch of 32 sentences: request latency p50/p95;
- chat (greedy, a fixed question, max_tokens 32): request latency p50/p95, and from the
  stream: time to first token p50 and time per output token;
- memory: VmRSS after load and VmHWM (peak) after the runs, from /proc.

Writes bench/results/model_backend-<date>.{json,md}. Bounded: a few dozen requests, loopback
only. ``OPENBLAS_NUM_THREADS`` is passed through (unset = the server's default, 1).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from azora_devenv.procs import ManagedProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
SENTENCES = [
    f"Sentence number {i} talks about {topic}."
    for i, topic in enumerate(
        [
            "the weather",
            "a football match",
            "cooking pasta",
            "quantum physics",
            "a trip to Paris",
            "learning Python",
            "the stock market",
            "a sleepy cat",
        ]
        * 4
    )
]
QUESTION = [{"role": "user", "content": "Explain in two sentences why the sky is blue."}]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "p95_ms": round(pct(values, 0.95) * 1000, 1),
        "min_ms": round(min(values) * 1000, 1),
    }


def proc_status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024  # MiB
    return out


def machine() -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "1 (the server's default)"),
    }


def main() -> int:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    info = machine()
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"azora-bench-model-backend-{port}"
    log_dir.mkdir(parents=True, exist_ok=True)
    proc = ManagedProcess(
        "model-backend",
        [Path(sys.executable).parent / "azora-model-backend", "serve", "--port", str(port)],
        log_path=log_dir / "server.log",
        env={**os.environ, "MODEL_BACKEND_INSTANCE_NAME": "bench"},
    )
    started = time.monotonic()
    proc.start()
    try:
        while True:
            proc.check_alive()
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2):
                    break
            except OSError:
                time.sleep(0.1)
            if time.monotonic() - started > 300:
                raise TimeoutError(proc.log_tail())
        startup_s = time.monotonic() - started
        pid = proc.pid
        assert pid is not None
        mem_loaded = proc_status(pid)
        results: dict[str, Any] = {"startup_s": round(startup_s, 2)}
        with httpx.Client(base_url=url, timeout=300) as client:

            def timed(path: str, body: dict[str, Any]) -> float:
                t0 = time.perf_counter()
                resp = client.post(path, json=body)
                resp.raise_for_status()
                return time.perf_counter() - t0

            emb = {"model": "all-MiniLM-L6-v2"}
            timed("/v1/embeddings", {**emb, "input": SENTENCES})  # warm-up
            results["embedding_1_sentence"] = summary_ms(
                [timed("/v1/embeddings", {**emb, "input": SENTENCES[i]}) for i in range(30)]
            )
            results["embedding_batch_32"] = summary_ms(
                [timed("/v1/embeddings", {**emb, "input": SENTENCES}) for _ in range(10)]
            )
            chat = {"model": "SmolLM2-135M-Instruct", "messages": QUESTION, "max_tokens": 32}
            timed("/v1/chat/completions", {**chat, "max_tokens": 4})  # warm-up
            results["chat_32_tokens"] = summary_ms(
                [timed("/v1/chat/completions", chat) for _ in range(8)]
            )
            ttfts: list[float] = []
            per_token: list[float] = []
            for _ in range(8):
                t0 = time.perf_counter()
                first = last = 0.0
                tokens = 0
                with client.stream(
                    "POST",
                    "/v1/chat/completions",
                    json={**chat, "stream": True, "stream_options": {"include_usage": True}},
                ) as resp:
                    for line in resp.iter_lines():
                        if not line.startswith("data: {"):
                            continue
                        chunk = json.loads(line[6:])
                        if chunk.get("usage"):
                            tokens = chunk["usage"]["completion_tokens"]
                        elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                            now = time.perf_counter() - t0
                            first = first or now
                            last = now
                ttfts.append(first)
                if tokens > 1:
                    per_token.append((last - first) / (tokens - 1))
            results["chat_stream_ttft"] = summary_ms(ttfts)
            results["chat_time_per_output_token"] = summary_ms(per_token)
        mem_after = proc_status(pid)
        results["memory_mib"] = {
            "rss_after_load": mem_loaded.get("VmRSS"),
            "rss_after_runs": mem_after.get("VmRSS"),
            "peak_hwm": mem_after.get("VmHWM"),
        }
    finally:
        proc.stop()
    now = datetime.now(UTC)
    report = {"area": "model_backend", "when": now.isoformat(timespec="seconds"), "machine": info}
    report.update(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"model_backend-{now:%Y-%m-%d}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# model_backend: latency and memory (bench/model_backend/run.py)",
        "",
        f"{report['when']}; {info['cpu']}, {info['cores']} cores shared with other work "
        f"(load average at start {info['load_average_at_start']}); OpenBLAS threads: "
        f"{info['openblas_threads']}. One request at a time.",
        "",
        "| measure | n | p50 | p95 | min |",
        "|---|---|---|---|---|",
    ]
    for key in (
        "embedding_1_sentence",
        "embedding_batch_32",
        "chat_32_tokens",
        "chat_stream_ttft",
        "chat_time_per_output_token",
    ):
        r = results[key]
        lines.append(
            f"| {key} | {r['n']} | {r['p50_ms']} ms | {r['p95_ms']} ms | {r['min_ms']} ms |"
        )
    m = results["memory_mib"]
    lines += [
        "",
        f"Start-up (both models loaded): {results['startup_s']} s. Memory: RSS "
        f"{m['rss_after_load']} MiB after load, {m['rss_after_runs']} MiB after the runs, "
        f"peak {m['peak_hwm']} MiB.",
        "",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
