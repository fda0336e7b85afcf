"""Process plumbing for the development launchers.

Every long-running helper (postgres, etcd, kube-apiserver) is a :class:`ManagedProcess`: it
runs in its own session (so its whole process group can be signalled), logs to a file, and is
stopped with a graceful signal first and ``SIGKILL`` after a timeout. On Linux the child also
gets a parent-death signal, so a test runner killed with ``SIGKILL`` does not leave orphans.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

logger = logging.getLogger("azora_devenv")

_PR_SET_PDEATHSIG = 1


class ProcessDiedError(RuntimeError):
    """A managed process exited while we were waiting for it to become ready."""


class CommandError(subprocess.CalledProcessError):
    """A short command failed; unlike its base class, ``str()`` includes the output."""

    def __str__(self) -> str:
        cmd = self.cmd if isinstance(self.cmd, str) else " ".join(map(str, self.cmd))
        parts = [f"command failed with exit code {self.returncode}: {cmd}"]
        for label, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            if text:
                parts.append(f"--- {label}:\n{str(text).strip()}")
        return "\n".join(parts)


@dataclass(frozen=True)
class RunAs:
    """An unprivileged account to run a child process as (used when we are root)."""

    name: str
    uid: int
    gid: int


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago (bind to port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    *,
    interval: float = 0.1,
    what: str = "condition",
) -> None:
    """Call ``predicate`` until it returns true; raise :class:`TimeoutError` after ``timeout`` s.

    Exceptions raised by ``predicate`` propagate immediately (use that to abort early, e.g. when
    the process being waited for has died).
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _libc_prctl() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - non-glibc platforms
        return None
    prctl = getattr(libc, "prctl", None)
    return prctl


_PRCTL = _libc_prctl()


def _pdeathsig_preexec(sig: int, parent_pid: int) -> Callable[[], None]:
    """Build a ``preexec_fn`` that makes the kernel send ``sig`` to the child when we die."""

    def preexec() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent_pid:  # parent already gone before prctl took effect
            os._exit(1)

    return preexec


class ManagedProcess:
    """A child process in its own session, logging to a file, stopped without leaving orphans.

    ``stop_signal`` is the graceful signal (``SIGINT`` is PostgreSQL's "fast shutdown");
    with ``signal_group`` it goes to the whole process group, otherwise to the leader only.
    Whatever is left of the group after the leader exits (or after ``stop``'s timeout) is
    ``SIGKILL``-ed. ``death_signal`` (default: ``stop_signal``) is what the kernel sends the
    child if this process dies without stopping it (Linux ``PR_SET_PDEATHSIG``; only set when
    started from the main thread).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        run_as: RunAs | None = None,
        stop_signal: int = signal.SIGTERM,
        signal_group: bool = True,
        death_signal: int | None = None,
    ) -> None:
        self.name = name
        self.argv = [os.fspath(a) for a in argv]
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.run_as = run_as
        self.stop_signal = stop_signal
        self.signal_group = signal_group
        self.death_signal = stop_signal if death_signal is None else death_signal
        self._proc: subprocess.Popen[bytes] | None = None
        self._pgid: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the process (no-op if it is already running)."""
        if self.is_running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            log.write(f"\n=== {stamp} start: {' '.join(self.argv)}\n".encode())
            log.flush()
            preexec = None
            if threading.current_thread() is threading.main_thread():
                # PDEATHSIG fires when the *thread* that forked exits: only safe from main.
                preexec = _pdeathsig_preexec(self.death_signal, os.getpid())
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                user=self.run_as.uid if self.run_as else None,
                group=self.run_as.gid if self.run_as else None,
                extra_groups=[] if self.run_as else None,
                preexec_fn=preexec,
            )
        self._pgid = self._proc.pid  # start_new_session: the child leads its own group
        logger.info("%s started (pid %d, log %s)", self.name, self._proc.pid, self.log_path)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """Stop gracefully, ``SIGKILL`` after ``timeout`` seconds; return the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            logger.info("stopping %s (pid %d)", self.name, proc.pid)
            self._send(self.stop_signal, group=self.signal_group)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
                self._send(signal.SIGKILL, group=True)
                proc.wait(10)
        self._kill_group_leftovers()
        return proc.returncode

    def _send(self, sig: int, *, group: bool) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group and self._pgid is not None:
                os.killpg(self._pgid, sig)
            else:
                self._proc.send_signal(sig)

    def _kill_group_leftovers(self) -> None:
        if self._pgid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pgid, signal.SIGKILL)
        self._pgid = None

    # -- diagnostics -------------------------------------------------------------------------

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log file (for error messages)."""
        try:
            data = self.log_path.read_bytes()[-64 * 1024 :]
        except OSError:
            return ""
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise :class:`ProcessDiedError` (with the log tail) if the process has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            raise ProcessDiedError(
                f"{self.name} exited with code {self._proc.returncode}; "
                f"last log lines ({self.log_path}):\n{self.log_tail()}"
            )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ServerContext:
    """``with server:`` starts it, and stops it on exit, on SIGTERM and at interpreter exit.

    Subclasses provide ``start()``, ``stop()`` and a :class:`CleanupGuard` as ``_guard``.
    """

    _guard: CleanupGuard

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 20.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._guard.arm(handle_sigterm=True)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class CleanupGuard:
    """Run ``cleanup`` at interpreter exit and turn ``SIGTERM`` into ``SystemExit``.

    Python's default ``SIGTERM`` action kills the interpreter without running ``finally``
    blocks or ``atexit`` hooks, which would orphan our children. While the guard is armed
    (and only if nobody else installed a ``SIGTERM`` handler), ``SIGTERM`` raises
    ``SystemExit(143)`` in the main thread so ``with`` blocks unwind normally.
    """

    def __init__(self, cleanup: Callable[[], None]) -> None:
        self._cleanup = cleanup
        self._armed = False
        self._installed_sigterm = False

    def arm(self, *, handle_sigterm: bool) -> None:
        if self._armed:
            return
        atexit.register(self._cleanup)
        self._armed = True
        if handle_sigterm and threading.current_thread() is threading.main_thread():
            current = signal.getsignal(signal.SIGTERM)
            if current in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, _raise_system_exit)
                self._installed_sigterm = True

    def disarm(self) -> None:
        if not self._armed:
            return
        atexit.unregister(self._cleanup)
        self._armed = False
        if self._installed_sigterm and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) is _raise_system_exit:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self._installed_sigterm = False


def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    run_as: RunAs | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 120.0,
    check: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short command, capture text output; on failure raise with its output included."""
    cmd = [os.fspath(a) for a in argv]
    result = subprocess.run(
        cmd,
        input=input,
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        timeout=timeout,
        check=False,
        user=run_as.uid if run_as else None,
        group=run_as.gid if run_as else None,
        extra_groups=[] if run_as else None,
    )
    if check and result.returncode != 0:
        raise CommandError(result.returncode, cmd, output=result.stdout, stderr=result.stderr)
    return result
