"""schemathesis (3.x CLI) over a live service with inferred links, and its counts parsed.

``deep``: every check, positive and negative data, the stateful phase over the links,
``examples`` per operation (``make fuzz``: 300). ``light`` (``make test``): the checks the
suite's other schemathesis runs use, a few examples, links still followed.

Bounded: each request has ``REQUEST_TIMEOUT_MS`` and each example ``DEADLINE_MS`` (a hung
handler is a failure, not a stalled run); the shrink phase is skipped, since it only minimises
a failure already found and, with every check on and no fail-fast, can take longer than the
search itself. What is generated and checked is unchanged.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.fuzz.links import with_links
from tests.support.services import venv_script

_CHECK_LINE = re.compile(r"^\s+(\w+)\s+(\d+)\s*/\s*(\d+)\s+passed\s+(PASSED|FAILED)", re.M)
# Per request and per example (a stateful step or a unit example): generous for a loaded
# 2-core machine (the slowest normal request seen there is well under 1 s).
REQUEST_TIMEOUT_MS = 10_000
DEADLINE_MS = 30_000
_COLLECTED = re.compile(r"^Collected API operations: (\d+)", re.M)


@dataclass
class FuzzResult:
    service: str
    returncode: int
    stdout: str
    links: int
    operations: int = 0
    # check -> (passed, total)
    checks: dict[str, tuple[int, int]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def server_errors(self) -> int:
        passed, total = self.checks.get("not_a_server_error", (0, 0))
        return total - passed

    def failures(self) -> dict[str, int]:
        return {name: total - passed for name, (passed, total) in self.checks.items()}


def fetch_openapi(base_url: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{base_url}/openapi.json", timeout=30) as resp:
        doc: dict[str, object] = json.loads(resp.read())
    return doc


def run_fuzz(
    service: str,
    base_url: str,
    token: str,
    *,
    deep: bool,
    examples: int,
    timeout: float,
    exclude_paths: str | None = None,
) -> FuzzResult:
    doc, links = with_links(fetch_openapi(base_url))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as tmp:
        json.dump(doc, tmp)
        schema_path = tmp.name
    checks = "all" if deep else "not_a_server_error,response_schema_conformance"
    argv = [
        str(venv_script("schemathesis")),
        "run",
        schema_path,
        "--base-url",
        base_url,
        "--checks",
        checks,
        "--stateful=links",
        "--header",
        f"Authorization: Bearer {token}",
        f"--hypothesis-max-examples={examples}",
        f"--request-timeout={REQUEST_TIMEOUT_MS}",
        f"--hypothesis-deadline={DEADLINE_MS}",
        "--hypothesis-phases=explicit,generate",
        "--hypothesis-derandomize",
        "--hypothesis-suppress-health-check=all",
        "--workers=1",
        "--no-color",
        "--experimental=openapi-3.1",
        # Keep testing an operation after its first failure: the counts are the point.
        "--experimental-no-failfast",
    ]
    if deep:
        argv += ["--data-generation-method=all"]
    if exclude_paths:
        argv += ["--exclude-path-regex", exclude_paths]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=Path.cwd(),
            # Only valid HTTP is sent (see tests/fuzz/hooks.py).
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks"},
        )
    finally:
        Path(schema_path).unlink(missing_ok=True)
    result = FuzzResult(service, proc.returncode, proc.stdout, links)
    result.seconds = time.monotonic() - started
    collected = _COLLECTED.search(proc.stdout)
    result.operations = int(collected.group(1)) if collected else 0
    for name, passed, total, _ in _CHECK_LINE.findall(proc.stdout):
        result.checks[name] = (int(passed), int(total))
    if proc.returncode != 0 or not result.checks:
        sys.stderr.write(proc.stdout[-20000:] + proc.stderr[-5000:])
    return result
