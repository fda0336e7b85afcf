"""Run an Azora service as a real process (uvicorn), for e2e and cross-service tests."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azora_devenv.procs import ManagedProcess, free_port

ADMIN_TOKEN = "test-admin-token-0123456789"
API_TOKEN = "test-api-token-0123456789abc"


@dataclass(frozen=True)
class ServiceSpec:
    script: str
    env_prefix: str


SERVICES = {
    "enrollment": ServiceSpec("azora-enrollment", "ENROLLMENT_"),
    "ledger": ServiceSpec("azora-ledger", "LEDGER_"),
    "pricing": ServiceSpec("azora-pricing", "PRICING_"),
    "orchestrator": ServiceSpec("azora-orchestrator", "ORCHESTRATOR_"),
}


def venv_script(name: str) -> Path:
    return Path(sys.executable).parent / name


class ServiceProcess:
    """``azora-<svc> serve --migrate`` on a free 127.0.0.1 port; keeps its port across restarts."""

    def __init__(
        self,
        service: str,
        database_url: str,
        work_dir: Path,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.service = service
        self.spec = SERVICES[service]
        self.port = port or free_port()
        p = self.spec.env_prefix
        full_env = {
            **os.environ,
            f"{p}DATABASE_URL": database_url,
            f"{p}ADMIN_TOKEN": ADMIN_TOKEN,
            f"{p}API_TOKENS": json.dumps({API_TOKEN: ["*"]}),
            f"{p}LOG_JSON": "true",
            **(env or {}),
        }
        self.process = ManagedProcess(
            f"{service}:{self.port}",
            [venv_script(self.spec.script), "serve", "--migrate", "--port", str(self.port)],
            log_path=work_dir / f"{service}-{self.port}.log",
            env=full_env,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServiceProcess:
        self.process.start()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.process.check_alive()
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.service} not ready in {timeout}s:\n{self.process.log_tail()}")

    def stop(self) -> None:
        self.process.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
