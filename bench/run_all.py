"""`make bench`: run every benchmark in bench/<area>/run.py in turn (not part of `make test`).

The ledger, pricing, enrollment and orchestrator areas use the shared method (bench/harness:
wrk and pgbench, interleaved rounds, c=16 and c=64, p50/p99, CPU per request, durable
PostgreSQL, noisy rounds redone); each writes bench/results/<area>-<date>.{json,md}. The
operator area measures apply-to-live latency with its own scenario.

`make bench AREAS="ledger pricing"` (or BENCH_AREAS) runs a subset; `make bench SMOKE=1` (or
BENCH_SMOKE=1) runs each shared-method area once for 3 s and writes to /tmp/azora-bench-smoke,
marked SMOKE: a check that everything runs, not a result.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SHARED_METHOD = {"ledger", "pricing", "enrollment", "orchestrator"}


def main() -> int:
    wanted = os.environ.get("BENCH_AREAS", "").split()
    smoke = os.environ.get("BENCH_SMOKE", "") not in ("", "0")
    areas = sorted(p.parent.name for p in BENCH.glob("*/run.py"))
    failed = []
    for area in areas:
        if wanted and area not in wanted:
            continue
        if smoke and area not in SHARED_METHOD:
            print(f"== bench/{area}: skipped (no smoke mode)", flush=True)
            continue
        argv = [sys.executable, str(BENCH / area / "run.py")]
        if smoke:
            argv.append("--smoke")
        started = time.monotonic()
        print(f"== bench/{area}", flush=True)
        rc = subprocess.call(argv, cwd=BENCH.parent)
        print(f"== bench/{area}: exit {rc} in {time.monotonic() - started:.0f}s", flush=True)
        if rc != 0:
            failed.append(area)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
