"""One line per service from ``make fuzz``'s JSON: ``python -m tests.fuzz.summary FILE...``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def line(summary: dict[str, Any]) -> str:
    responses = summary["checks"].get("not_a_server_error", [0, 0])[1]
    failures = {k: v for k, v in summary["failures"].items() if v}
    failed = ", ".join(f"{k} {v}" for k, v in sorted(failures.items())) or "none"
    return (
        f"{summary['service']}: {summary['operations']} operations, {responses} responses "
        f"checked, 5xx {failures.get('not_a_server_error', 0)}, failures: {failed} "
        f"({summary['seconds']} s, schemathesis exit {summary['returncode']})"
    )


def main(paths: list[str]) -> None:
    for path in paths:
        file = Path(path)
        if not file.exists():
            sys.stdout.write(f"{file.stem}: no result (run did not finish)\n")
            continue
        sys.stdout.write(line(json.loads(file.read_text())) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
