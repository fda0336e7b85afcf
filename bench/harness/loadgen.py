"""The two C load generators: wrk for HTTP targets, pgbench for SQL references.

Both report the same ``LoadResult``: requests, the run's length, latency percentiles and the
generator's own CPU time (from ``wait4`` on the child, so it is charged to the client and never
to the process under test or to the machine's "foreign" load).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class LoadResult:
    generator: str  # "wrk" or "pgbench"
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: int  # socket errors, unexpected statuses, failed transactions
    client_seconds: float
    statuses: dict[int, int] = field(default_factory=dict)  # wrk with count_statuses only

    @property
    def per_second(self) -> float:
        return self.requests / max(self.seconds, 1e-9)


# --- wrk ------------------------------------------------------------------------------------

# Appended to every scenario script. A scenario defines ``request()`` (or sets a static
# wrk.method/body/headers) and may define ``thread_init(args)``; it reads the global ``thread_id``
# (0, 1, ...) to vary requests per thread. done() prints one JSON line with wrk's own latency
# histogram (microseconds).
_WRK_EPILOGUE = r"""
local harness_threads = {}
function setup(thread)
  thread:set("thread_id", #harness_threads)
  table.insert(harness_threads, thread)
end
function init(args)
  math.randomseed(os.time() * 1000 + thread_id * 7919)
  if thread_init then thread_init(args) end
end
%(response)s
function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(harness_threads) do
    local counted = thread:get("harness_statuses")
    if counted then
      for status, n in pairs(counted) do merged[status] = (merged[status] or 0) + n end
    end
  end
  local parts = {}
  for status, n in pairs(merged) do
    table.insert(parts, string.format('"%%d": %%d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %%d, "duration_us": %%d, "errors_status": %%d, '
    .. '"errors_socket": %%d, "statuses": {%%s}, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, '
    .. '"p999_us": %%d, "max_us": %%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    table.concat(parts, ", "), latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""

_WRK_COUNT_STATUSES = """
harness_statuses = {}
function response(status, headers, body)
  harness_statuses[status] = (harness_statuses[status] or 0) + 1
end
"""


def wrk_script(scenario: str, *, count_statuses: bool = False) -> str:
    """A scenario's Lua plus the harness epilogue (status counting costs the client a Lua
    call per response: only for scenarios whose non-2xx answers are expected outcomes)."""
    return scenario + _WRK_EPILOGUE % {"response": _WRK_COUNT_STATUSES if count_statuses else ""}


def parse_wrk_output(stdout: str) -> dict[str, object]:
    """The JSON line the epilogue's done() printed."""
    for line in stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            parsed: dict[str, object] = json.loads(line.removeprefix("WRK_RESULT "))
            return parsed
    raise ValueError(f"no WRK_RESULT line in wrk's output:\n{stdout[-2000:]}")


def wrk_result(raw: dict[str, object], client_seconds: float, ok: Iterable[int] = ()) -> LoadResult:
    """``ok``: non-2xx statuses that are expected outcomes (e.g. 409 for a full cohort)."""
    statuses = {int(k): int(v) for k, v in raw["statuses"].items()}  # type: ignore[attr-defined]
    allowed = set(ok)
    expected_non_2xx = sum(n for s, n in statuses.items() if s in allowed and not 200 <= s < 400)
    errors = int(raw["errors_socket"]) + int(raw["errors_status"]) - expected_non_2xx  # type: ignore[call-overload]
    us = {k: int(raw[k]) for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us")}  # type: ignore[call-overload]
    return LoadResult(
        generator="wrk",
        requests=int(raw["requests"]),  # type: ignore[call-overload]
        seconds=int(raw["duration_us"]) / 1e6,  # type: ignore[call-overload]
        p50_ms=us["p50_us"] / 1000,
        p90_ms=us["p90_us"] / 1000,
        p99_ms=us["p99_us"] / 1000,
        p999_ms=us["p999_us"] / 1000,
        max_ms=us["max_us"] / 1000,
        errors=errors,
        client_seconds=client_seconds,
        statuses=statuses,
    )


def _run_child(argv: Sequence[str], cwd: str | None = None) -> tuple[int, str, float]:
    """Run a load generator; its exit code, output and CPU seconds (wait4 rusage)."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out, usage.ru_utime + usage.ru_stime


def wrk(
    url: str,
    script: str,
    *,
    concurrency: int,
    seconds: float,
    threads: int | None = None,
    timeout: str = "30s",
    ok_statuses: Iterable[int] = (),
    args: Sequence[str] = (),
) -> LoadResult:
    """One wrk run. ``script`` comes from ``wrk_script``; ``url`` is the full request URL."""
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk is not installed: `bash hack/system-deps.sh --bench`")
    # Two threads at most: the machine has two cores and the process under test needs them.
    threads = threads or min(2, concurrency)
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        lua = Path(tmp) / "load.lua"
        lua.write_text(script)
        argv = [exe, f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s"]
        argv += ["--timeout", timeout, "-s", str(lua), url]
        if args:
            argv += ["--", *args]
        code, out, cpu = _run_child(argv)
    if code != 0:
        raise RuntimeError(f"wrk exited {code}:\n{out[-3000:]}")
    return wrk_result(parse_wrk_output(out), cpu, ok_statuses)


# --- pgbench --------------------------------------------------------------------------------


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of sorted values by the nearest-rank method."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def parse_pgbench_log(lines: Iterable[str]) -> tuple[list[int], int]:
    """Per-transaction log lines (``pgbench -l``: client_id transaction_no time script_no
    time_epoch time_us ...): latencies in microseconds, and the failed/skipped count."""
    latencies, failed = [], 0
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        if fields[2].isdigit():
            latencies.append(int(fields[2]))
        else:  # "failed" or "skipped" (pgbench 15)
            failed += 1
    return latencies, failed


def parse_pgbench_summary(stdout: str) -> dict[str, float]:
    """Processed and failed transaction counts and tps (without connection time)."""
    processed = re.search(r"number of transactions actually processed: (\d+)", stdout)
    failed = re.search(r"number of failed transactions: (\d+)", stdout)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", stdout)
    if processed is None or tps is None:
        raise ValueError(f"unexpected pgbench output:\n{stdout[-2000:]}")
    return {
        "processed": int(processed.group(1)),
        "failed": int(failed.group(1)) if failed else 0,
        "tps": float(tps.group(1)),
    }


def pgbench_result(summary: dict[str, float], latencies_us: list[int], client: float) -> LoadResult:
    ordered = sorted(latencies_us)
    processed = int(summary["processed"])

    def ms(q: float) -> float:
        return nearest_rank(ordered, q) / 1000

    return LoadResult(
        generator="pgbench",
        requests=processed,
        seconds=processed / summary["tps"] if summary["tps"] else 0.0,
        p50_ms=ms(50),
        p90_ms=ms(90),
        p99_ms=ms(99),
        p999_ms=ms(99.9),
        max_ms=(ordered[-1] / 1000) if ordered else 0.0,
        errors=int(summary["failed"]),
        client_seconds=client,
    )


def find_pgbench() -> Path:
    from azora_devenv.postgres import find_pg_bindir

    return find_pg_bindir() / "pgbench"


def pgbench(
    dsn: str, script: str, *, concurrency: int, seconds: float, threads: int | None = None
) -> LoadResult:
    """One pgbench run of a custom script (prepared statements, no vacuum); latencies from
    its per-transaction log, so the percentiles are exact rather than pgbench's averages."""
    threads = threads or min(2, concurrency)
    with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as tmp:
        path = Path(tmp) / "script.sql"
        path.write_text(script)
        argv = [str(find_pgbench()), "-n", "-M", "prepared", "-c", str(concurrency)]
        argv += ["-j", str(threads), "-T", str(max(1, round(seconds))), "-f", str(path)]
        argv += ["-l", "--log-prefix", str(Path(tmp) / "log"), dsn]
        code, out, cpu = _run_child(argv, cwd=tmp)
        if code != 0:
            raise RuntimeError(f"pgbench exited {code}:\n{out[-3000:]}")
        latencies: list[int] = []
        failed = 0
        for log in Path(tmp).glob("log.*"):
            with log.open() as f:
                got, bad = parse_pgbench_log(f)
            latencies += got
            failed += bad
    summary = parse_pgbench_summary(out)
    summary["failed"] = max(summary["failed"], failed)
    return pgbench_result(summary, latencies, cpu)
