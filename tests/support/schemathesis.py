"""Run schemathesis against a live service: no 5xx, responses match the documented schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.services import venv_script


def run_schemathesis(
    base_url: str,
    token: str,
    *,
    max_examples: int = 25,
    endpoint: str | None = None,
    exclude_paths: str | None = None,
    include_paths: str | None = None,
    timeout: float = 240.0,
) -> subprocess.CompletedProcess[str]:
    argv = [
        str(venv_script("schemathesis")),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--header",
        f"Authorization: Bearer {token}",
        f"--hypothesis-max-examples={max_examples}",
        "--hypothesis-deadline=None",
        "--hypothesis-derandomize",
        "--hypothesis-suppress-health-check=all",
        "--workers=1",
        "--no-color",
        # FastAPI publishes OpenAPI 3.1, which schemathesis 3.x supports behind this flag.
        "--experimental=openapi-3.1",
    ]
    if endpoint:
        argv += ["--endpoint", endpoint]
    if include_paths:
        argv += ["--include-path-regex", include_paths]
    if exclude_paths:
        argv += ["--exclude-path-regex", exclude_paths]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, cwd=Path.cwd(), check=False
    )
    if "No checks were performed" in result.stdout:
        # A run that tested nothing must not pass.
        return subprocess.CompletedProcess(argv, 1, result.stdout, result.stderr)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-20000:] + result.stderr[-5000:])
    return result
