"""One real ``azora-model-backend`` process on a free 127.0.0.1 port for the whole session."""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from azora_devenv.procs import ManagedProcess, free_port

INSTANCE = "test-a"


@dataclass(frozen=True)
class Backend:
    url: str
    process: ManagedProcess

    @property
    def v1(self) -> str:
        return self.url + "/v1"


@pytest.fixture(scope="session")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    port = free_port()
    log_dir: Path = tmp_path_factory.mktemp("model-backend")
    process = ManagedProcess(
        f"model-backend:{port}",
        [
            Path(sys.executable).parent / "azora-model-backend",
            "serve",
            "--port",
            str(port),
            "--instance-name",
            INSTANCE,
        ],
        log_path=log_dir / "model-backend.log",
        env={**os.environ, "MODEL_BACKEND_MAX_REQUEST_BYTES": "65536"},
    )
    process.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # both models load before the port opens
    try:
        while True:
            process.check_alive()
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"model backend not ready:\n{process.log_tail()}")
            time.sleep(0.2)
        yield Backend(url, process)
    finally:
        process.stop()


@pytest.fixture
def client(backend: Backend) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=backend.url, timeout=120) as c:
        yield c
