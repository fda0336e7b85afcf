"""`make bench`: run every benchmark in bench/<area>/run.py in turn (not part of `make test`).

Each writes bench/results/<area>-<date>.{json,md}. `make bench AREAS="ledger pricing"` (or the
BENCH_AREAS environment variable) runs a subset.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> int:
    wanted = os.environ.get("BENCH_AREAS", "").split()
    areas = sorted(p.parent.name for p in BENCH.glob("*/run.py"))
    failed = []
    for area in areas:
        if wanted and area not in wanted:
            continue
        started = time.monotonic()
        print(f"== bench/{area}", flush=True)
        rc = subprocess.call([sys.executable, str(BENCH / area / "run.py")], cwd=BENCH.parent)
        print(f"== bench/{area}: exit {rc} in {time.monotonic() - started:.0f}s", flush=True)
        if rc != 0:
            failed.append(area)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
