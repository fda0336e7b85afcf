"""A detached supervisor and the command that starts it (``make up``, ``make kube-up``).

The command launches the supervisor in its own session, so it outlives the command, and waits
for it; the supervisor starts what it owns, then reports through files in the state dir:
``supervisor.ready`` once everything runs, ``supervisor.failed`` (why) if start-up failed.
``supervisor.pid`` lets a later ``down`` or ``status`` find it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal


class DetachedSupervisor:
    def __init__(self, state: Path) -> None:
        self.pid_file = state / "supervisor.pid"
        self.ready_file = state / "supervisor.ready"
        self.failed_file = state / "supervisor.failed"
        self.stopping = False  # in the supervisor: SIGTERM or SIGINT arrived

    def pid(self) -> int | None:
        """The running supervisor's pid, if one runs."""
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None
        return pid

    # -- in the command --------------------------------------------------------------------

    def launch(self, argv: Sequence[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
        """Start the supervisor in a new session, its output appended to ``log``."""
        for f in (self.ready_file, self.failed_file):
            f.unlink(missing_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                cwd=cwd,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc

    def wait_ready(
        self, proc: subprocess.Popen[bytes], timeout: float
    ) -> Literal["ready", "failed", "timeout"]:
        """``failed``: the supervisor reported a failure (:meth:`failure`) or exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                return "ready"
            if self.failed_file.exists() or proc.poll() is not None:
                return "failed"
            time.sleep(0.25)
        return "timeout"

    def failure(self) -> str | None:
        """Why start-up failed, as the supervisor reported it (None: it exited without)."""
        return self.failed_file.read_text() if self.failed_file.exists() else None

    def stop(self, grace: float) -> int | None:
        """SIGTERM to the supervisor; after ``grace`` seconds SIGKILL to its session. Its pid,
        or None if none ran."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            else:
                os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return pid

    # -- in the supervisor -----------------------------------------------------------------

    def serve(
        self,
        start: Callable[[], None],
        stop: Callable[[], None],
        *,
        log: logging.Logger,
        watch: Callable[[], None] = lambda: None,
        interval: float = 1.0,
    ) -> int:
        """``start``, report ready, ``watch`` every ``interval`` seconds until SIGTERM or SIGINT,
        then ``stop`` (also after a failed start, which is reported and exits 1)."""

        def on_signal(signum: int, _frame: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            start()
            self.ready_file.write_text(str(time.time()))
            while not self.stopping:
                watch()
                time.sleep(interval)
        except Exception as exc:
            log.exception("start-up failed")
            self.failed_file.write_text(f"{type(exc).__name__}: {exc}")
            return 1
        finally:
            stop()
        return 0
