"""The processes a benchmark starts (services, references, fake backends): on 127.0.0.1, a
free port each, a log file each, ready when an HTTP probe answers, stopped in reverse order."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Service:
    """An Azora service under test: its base URL and its process."""

    url: str
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid


class Processes:
    """``with Processes() as procs: pid = procs.start("ledger", argv, env, ready=url)``."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs = Path(tempfile.mkdtemp(prefix="azora-bench-logs-"))

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        ready: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 90.0,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` (environment = ours + ``env``); wait for ``ready`` to answer < 500."""
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        log.close()
        self.procs.append((name, proc))
        if ready is not None:
            self.wait_ready(name, proc, ready, headers or {}, timeout)
        return proc

    def serve(
        self,
        name: str,
        package: str,
        env: Mapping[str, str],
        *,
        workers: int = 1,
        migrate: bool = True,
        ready: str = "/readyz",
    ) -> Service:
        """``<package>.cli serve`` (every service's shared CLI) on a free port, ready when
        ``ready`` answers; ``migrate``: it applies its migrations first."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-c", f"from {package}.cli import main; main()", "serve",
                *(["--migrate"] if migrate else []), "--port", str(port),
                "--workers", str(workers)]  # fmt: skip
        return Service(url, self.start(name, argv, env, ready=url + ready))

    def wait_ready(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        url: str,
        headers: Mapping[str, str],
        timeout: float,
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}:\n{self.log_tail(name)}")
            request = urllib.request.Request(url, headers=dict(headers))
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status < 500:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready at {url}:\n{self.log_tail(name)}")

    def wait_port(
        self, name: str, proc: subprocess.Popen[bytes], port: int, timeout: float = 60.0
    ) -> None:
        """For a process with no endpoint to probe (it answers only the requests it proxies)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}:\n{self.log_tail(name)}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{name} not listening on {port}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, size: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return (self.logs / f"{name}.log").read_text(errors="replace")[-size:]
        return ""

    def stop(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        """Stop one process, or all of them (last started first)."""
        chosen = [(n, p) for n, p in self.procs if proc is None or p is proc]
        for _, p in reversed(chosen):
            p.terminate()
        for _, p in chosen:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = [(n, p) for n, p in self.procs if (n, p) not in chosen]

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
