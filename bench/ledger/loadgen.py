"""C load generators for bench/ledger/run.py: wrk for the HTTP service, pgbench for the SQL
reference. Both sides are driven by a program written in C at the same concurrency, so neither
result includes a Python client's own CPU time and event-loop queueing (on 2 shared cores the
Python client of the first version took as much CPU per single transfer as a third of the
service's). ``--client python`` in run.py keeps the aiohttp/asyncpg drivers for comparison.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_WRK_COMMON = """
wrk.method = "POST"
wrk.path = "%(path)s"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
function init(args)
    -- Each thread has its own Lua state: seed each differently (a table's address).
    math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) + tonumber(args[1]))
end
function done(summary, latency, requests)
    -- Any status other than 2xx/3xx counts in errors.status: run.py fails on it.
    local out = io.open("%(out)s", "w")
    out:write(string.format('{"requests": %%d, "duration_us": %%d, "errors_status": %%d, ' ..
        '"errors_socket": %%d, "p50_us": %%d, "p99_us": %%d}\\n',
        summary.requests, summary.duration, summary.errors.status,
        summary.errors.connect + summary.errors.read + summary.errors.write +
        summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
    out:close()
end
"""

_SINGLE = """
local hot = %(hot)s
function transfer(a, b, amount)
    return string.format('{"account":"bench:acc:%%d","direction":"debit","amount":%%d,' ..
        '"currency":"EUR"},{"account":"bench:acc:%%d","direction":"credit","amount":%%d,' ..
        '"currency":"EUR"}', a, amount, b, amount)
end
function request()
    local a = math.random(0, %(accounts)d - 1)
    local b = (a + math.random(1, %(accounts)d - 1)) %% %(accounts)d
    local postings
    if hot then
        postings = string.format('{"account":"%(hot_code)s","direction":"debit","amount":7,' ..
            '"currency":"EUR"},{"account":"bench:acc:%%d","direction":"credit","amount":7,' ..
            '"currency":"EUR"}', b)
    else
        postings = transfer(a, b, 7)
    end
    return wrk.format(nil, nil, nil, '{"postings":[' .. postings .. ']}')
end
"""

_BATCH = """
local bodies = {}
function make_body()
    local items = {}
    for i = 1, %(size)d do
        local a = math.random(0, %(accounts)d - 1)
        local b = (a + math.random(1, %(accounts)d - 1)) %% %(accounts)d
        items[i] = string.format('{"postings":[{"account":"bench:acc:%%d","direction":"debit",' ..
            '"amount":3,"currency":"EUR"},{"account":"bench:acc:%%d","direction":"credit",' ..
            '"amount":3,"currency":"EUR"}]}', a, b)
    end
    return '{"mode":"atomic","transactions":[' .. table.concat(items, ",") .. ']}'
end
local next_body = 0
function request()
    if #bodies < 16 then
        bodies[#bodies + 1] = make_body()
    end
    next_body = next_body %% #bodies + 1
    return wrk.format(nil, nil, nil, bodies[next_body])
end
"""


def wrk(
    url: str,
    *,
    token: str,
    concurrency: int,
    seconds: float,
    accounts: int,
    hot: str | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """POST transfers (or batches of ``batch_size``) with wrk; transfers/s and latency."""
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk is not installed: run `hack/system-deps.sh --bench` (make bench)")
    with tempfile.TemporaryDirectory(prefix="ledger-wrk-") as tmp:
        out = Path(tmp) / "summary.json"
        params = {
            "path": "/v1/transactions:batch" if batch_size else "/v1/transactions",
            "token": token,
            "out": out,
            "accounts": accounts,
            "hot": "true" if hot else "false",
            "hot_code": hot or "",
            "size": batch_size or 0,
        }
        script = _WRK_COMMON % params + ((_BATCH if batch_size else _SINGLE) % params)
        lua = Path(tmp) / "load.lua"
        lua.write_text(script)
        threads = 1 if concurrency < 8 else 2
        cpu_before = _children_cpu()
        proc = subprocess.run(
            [
                exe,
                f"-t{threads}",
                f"-c{concurrency}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "30s",
                "-s",
                str(lua),
                url,
                "--",
                str(os.getpid()),
            ],
            capture_output=True,
            text=True,
        )
        client_cpu = _children_cpu() - cpu_before
        if proc.returncode != 0:
            raise RuntimeError(f"wrk failed:\n{proc.stdout}\n{proc.stderr}")
        summary = json.loads(out.read_text())
    per_request = batch_size or 1
    done = summary["requests"] * per_request
    elapsed = summary["duration_us"] / 1e6
    if summary["errors_status"] or summary["errors_socket"]:
        raise RuntimeError(f"wrk saw errors: {summary}\n{proc.stdout}")
    return {
        "transfers": done,
        "errors": 0,
        "seconds": round(elapsed, 2),
        "transfers_per_second": round(done / elapsed, 1),
        "p50_ms": round(summary["p50_us"] / 1000, 2),
        "p99_ms": round(summary["p99_us"] / 1000, 2),
        "concurrency": concurrency,
        "client": "wrk",
        "client_cpu_us_per_transfer": round(client_cpu / max(done, 1) * 1e6, 1),
    }


def pgbench(
    pgbench_exe: Path,
    dsn: str,
    *,
    first_id: int,
    last_id: int,
    hot_id: int | None,
    concurrency: int,
    seconds: float,
) -> dict[str, Any]:
    """Call the reference's SQL transfer function with pgbench (prepared statements)."""
    with tempfile.TemporaryDirectory(prefix="ledger-pgbench-") as tmp:
        script = Path(tmp) / "transfer.sql"
        lines = [
            f"\\set a random({first_id}, {last_id})",
            f"\\set d random(1, {last_id - first_id})",
            f"\\set b {first_id} + ((:a - {first_id} + :d) % {last_id - first_id + 1})",
        ]
        if hot_id is not None:
            lines.append(f"SELECT ref.create_transfer({hot_id}, :b, 7);")
        else:
            lines.append("SELECT ref.create_transfer(:a, :b, 7);")
        script.write_text("\n".join(lines) + "\n")
        cpu_before = _children_cpu()
        proc = subprocess.run(
            [
                str(pgbench_exe),
                "-n",
                "-M",
                "prepared",
                "-c",
                str(concurrency),
                "-j",
                "2",
                "-T",
                str(max(1, round(seconds))),
                "-f",
                str(script),
                "-l",
                "--log-prefix",
                str(Path(tmp) / "log"),
                dsn,
            ],
            capture_output=True,
            text=True,
            cwd=tmp,
        )
        client_cpu = _children_cpu() - cpu_before
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench failed:\n{proc.stdout}\n{proc.stderr}")
        latencies: list[int] = []
        for log in Path(tmp).glob("log.*"):
            for line in log.read_text().splitlines():
                fields = line.split()
                latencies.append(int(fields[2]))
    failed = re.search(r"number of failed transactions: (\d+)", proc.stdout)
    if failed and int(failed.group(1)):
        raise RuntimeError(f"pgbench saw failures:\n{proc.stdout}")
    tps = float(re.search(r"tps = ([\d.]+)", proc.stdout).group(1))  # type: ignore[union-attr]
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000, 2)

    return {
        "transfers": len(latencies),
        "errors": 0,
        "seconds": round(seconds, 2),
        "transfers_per_second": round(tps, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": round(statistics.fmean(latencies) / 1000, 2),
        "concurrency": concurrency,
        "client": "pgbench",
        "client_cpu_us_per_transfer": round(client_cpu / max(len(latencies), 1) * 1e6, 1),
    }


__all__ = ["pgbench", "wrk"]
