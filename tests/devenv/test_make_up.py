"""`make up` / `make down` smoke test: everything reports ready, nothing is left running."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from azora_devenv.procs import port_is_open

ROOT = Path(__file__).resolve().parents[2]


def _free_base() -> int:
    for base in range(18100, 40000, 137):
        # base+1..5: the services and the operator; +6, +7: the two model backends.
        if not any(port_is_open("127.0.0.1", base + i) for i in range(1, 8)):
            return base
    raise RuntimeError("no free port range")


def _processes_under(path: Path) -> list[str]:
    out = subprocess.run(
        ["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True, check=True
    )
    return [line for line in out.stdout.splitlines() if str(path) in line and "ps -eo" not in line]


@pytest.mark.e2e
def test_up_status_down(outside_tmp: Path) -> None:
    base = _free_base()
    env = {
        **os.environ,
        "AZORA_LOCAL_DIR": str(outside_tmp / "local"),
        "AZORA_PORT_BASE": str(base),
    }
    local = [sys.executable, str(ROOT / "hack" / "local.py")]
    try:
        up = subprocess.run(
            [*local, "up"], env=env, capture_output=True, text=True, timeout=240, check=False
        )
        assert up.returncode == 0, up.stdout + up.stderr
        for port in range(base + 1, base + 5):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
                assert resp.status == 200
        env_file = (outside_tmp / "local" / "azora.env").read_text()
        for name in ("KUBECONFIG", "AZORA_ADMIN_TOKEN", "AZORA_API_TOKEN", "AZORA_LEDGER_URL"):
            assert f"export {name}=" in env_file
        status = subprocess.run(
            [*local, "status"], env=env, capture_output=True, text=True, timeout=60, check=True
        )
        assert status.stdout.count(" ready") >= 4, status.stdout
        assert _processes_under(outside_tmp)
    finally:
        down = subprocess.run(
            [*local, "down"], env=env, capture_output=True, text=True, timeout=120, check=False
        )
    assert down.returncode == 0, down.stderr
    assert _processes_under(outside_tmp) == []
    for port in range(base + 1, base + 6):
        assert not port_is_open("127.0.0.1", port)
