"""The engine is pure: importing it pulls in no database, HTTP or web framework code."""

from __future__ import annotations

import subprocess
import sys


def test_engine_imports_no_io_libraries() -> None:
    probe = (
        "import sys, azora_pricing.engine, azora_pricing.engine.trace; "
        "print(sorted(m for m in ('sqlalchemy', 'asyncpg', 'fastapi', 'httpx', 'starlette') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
