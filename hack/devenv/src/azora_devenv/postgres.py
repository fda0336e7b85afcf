"""A private PostgreSQL server for development and tests (no Docker, no system service).

``LocalPostgres(data_dir)`` runs ``initdb`` once (when ``data_dir/PG_VERSION`` is absent) and
then the ``postgres`` binary in the foreground as a :class:`ManagedProcess`, listening on
127.0.0.1 only, with trust authentication. Data survives ``stop()``/``start()``.

PostgreSQL refuses to run as root; when we are root, the server runs as the ``postgres``
system account if it exists, else ``nobody``, and the data directory is chowned to it.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

from .procs import (
    CleanupGuard,
    CommandError,
    ManagedProcess,
    RunAs,
    ServerContext,
    free_port,
    run,
    wait_until,
)

logger = logging.getLogger("azora_devenv")

_REQUIRED_BINARIES = ("initdb", "postgres", "psql", "pg_isready")
# The kernel's limit for a unix socket path is 108 bytes; leave room for "/.s.PGSQL.65535".
_MAX_SOCKET_DIR_LEN = 85


class PostgresNotFoundError(FileNotFoundError):
    """No PostgreSQL server binaries were found."""


def _has_server_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _REQUIRED_BINARIES)


def _version_key(path: str) -> tuple[int, ...]:
    match = re.search(r"/postgresql/([0-9.]+)/bin$", path)
    return tuple(int(p) for p in match.group(1).split(".") if p) if match else (0,)


def find_pg_bindir() -> Path:
    """Locate the directory holding ``initdb``, ``postgres``, ``psql`` and ``pg_isready``.

    Order: ``$AZORA_PG_BINDIR``; ``pg_config --bindir``; the highest
    ``/usr/lib/postgresql/*/bin``; the binaries bundled with the ``pgserver`` wheel.
    """
    tried: list[str] = []
    override = os.environ.get("AZORA_PG_BINDIR")
    if override:
        if _has_server_binaries(Path(override)):
            return Path(override)
        raise PostgresNotFoundError(
            f"AZORA_PG_BINDIR={override} does not contain {', '.join(_REQUIRED_BINARIES)}"
        )

    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out and _has_server_binaries(Path(out)):
                return Path(out)
            tried.append(f"pg_config --bindir ({out})")

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for candidate in candidates:
        if _has_server_binaries(Path(candidate)):
            return Path(candidate)
    tried.append("/usr/lib/postgresql/*/bin")

    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "pginstall" / "bin"
        if _has_server_binaries(bundled):
            return bundled
        tried.append(str(bundled))

    raise PostgresNotFoundError(
        "PostgreSQL server binaries (initdb, postgres, psql, pg_isready) not found; tried "
        + ", ".join(tried)
        + ". Install them (Debian: apt-get install postgresql) or set AZORA_PG_BINDIR."
    )


def _unprivileged_account() -> RunAs | None:
    """The account to run PostgreSQL as: ``None`` (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return RunAs(name=name, uid=entry.pw_uid, gid=entry.pw_gid)
    raise RuntimeError("running as root but neither a 'postgres' nor a 'nobody' account exists")


def _allow_traversal(path: Path) -> None:
    """Let other users traverse (not list) every ancestor of ``path`` that we own.

    Needed when root runs PostgreSQL as another account inside e.g. pytest's 0700 temp dirs.
    """
    for ancestor in reversed(path.resolve().parents):
        with contextlib.suppress(OSError):
            st = ancestor.stat()
            if st.st_uid == os.geteuid() and not st.st_mode & stat.S_IXOTH:
                logger.info("granting o+x on %s so PostgreSQL can reach its data", ancestor)
                ancestor.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def quote_ident(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote an SQL string literal (standard_conforming_strings is on by default)."""
    return "'" + value.replace("'", "''") + "'"


class LocalPostgres(ServerContext):
    """A PostgreSQL server owned by this process.

    >>> with LocalPostgres(Path(".local/pg/data"), fast=True) as pg:   # doctest: +SKIP
    ...     pg.create_database("azora_ledger")
    ...     dsn = pg.url("azora_ledger")   # postgresql://postgres@127.0.0.1:PORT/azora_ledger

    ``port=None`` picks a free port at the first ``start()`` and keeps it for restarts.
    ``fast=True`` trades durability for speed (fsync, synchronous_commit and
    full_page_writes off; initdb --no-sync): for tests only.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        fast: bool = False,
        user: str = "postgres",
        max_connections: int = 300,
        startup_timeout: float = 60.0,
        extra_settings: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.fast = fast
        self.user = user
        self.host = "127.0.0.1"
        self.max_connections = max_connections
        self.startup_timeout = startup_timeout
        self.extra_settings = dict(extra_settings or {})
        self.bindir = find_pg_bindir()
        self.run_as = _unprivileged_account()
        self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")
        self.socket_dir = self._choose_socket_dir()
        self._proc: ManagedProcess | None = None
        self._guard = CleanupGuard(self.stop)

    # -- paths & binaries --------------------------------------------------------------------

    def _choose_socket_dir(self) -> Path:
        sibling = self.data_dir.with_name(self.data_dir.name + ".sock")
        if len(str(sibling)) <= _MAX_SOCKET_DIR_LEN:
            return sibling
        return Path(tempfile.mkdtemp(prefix="azora-pg-"))

    def bin(self, name: str) -> Path:
        """Path of a PostgreSQL binary (``psql``, ``pg_dump`` ...) from the same installation."""
        return self.bindir / name

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """initdb if needed, start the server, wait until it accepts connections."""
        if self.running:
            return
        self._guard.arm(handle_sigterm=False)
        self._prepare_dirs()
        if not self.initialized:
            self._initdb()
        if self.port is None:
            self.port = free_port(self.host)
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": str(self.max_connections),
            "logging_collector": "off",
        }
        if self.fast:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        settings.update(self.extra_settings)
        argv: list[str | os.PathLike[str]] = [self.bin("postgres"), "-D", self.data_dir]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        self._proc = ManagedProcess(
            "postgres",
            argv,
            log_path=self.log_path,
            cwd=self.data_dir,
            run_as=self.run_as,
            stop_signal=signal.SIGINT,  # "fast" shutdown: does not wait for clients
            signal_group=False,
        )
        self._proc.start()
        try:
            wait_until(
                self._ready, self.startup_timeout, interval=0.2, what=f"postgres on {self.port}"
            )
        except BaseException:
            self.stop()
            raise
        logger.info("postgres ready at %s (data %s)", self.url(), self.data_dir)

    def _ready(self) -> bool:
        assert self._proc is not None
        self._proc.check_alive()
        probe = subprocess.run(
            [
                self.bin("pg_isready"),
                "-q",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                "postgres",
            ],
            capture_output=True,
            timeout=10,
            check=False,
        )
        return probe.returncode == 0

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT), SIGKILL after ``timeout``. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.stop(timeout)
        self._guard.disarm()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.is_running()

    def _prepare_dirs(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.data_dir.chmod(0o700)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        if self.run_as is not None:
            _allow_traversal(self.data_dir)
            for path in (self.data_dir, self.socket_dir):
                os.chown(path, self.run_as.uid, self.run_as.gid)
            if self.initialized:  # e.g. created by a run as a different account
                for root, dirs, files in os.walk(self.data_dir):
                    for entry in (*dirs, *files):
                        os.lchown(os.path.join(root, entry), self.run_as.uid, self.run_as.gid)

    def _initdb(self) -> None:
        if any(self.data_dir.iterdir()):
            raise RuntimeError(
                f"{self.data_dir} is not empty but has no PG_VERSION; refusing to initdb over it"
            )
        argv: list[str | os.PathLike[str]] = [
            self.bin("initdb"),
            "-D",
            self.data_dir,
            "--username",
            self.user,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-locale",
            "--no-instructions",
        ]
        if self.fast:
            argv.append("--no-sync")
        logger.info("initdb %s", self.data_dir)
        run(argv, run_as=self.run_as, cwd=self.data_dir, timeout=180)

    # -- clients -----------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        """libpq DSN: ``postgresql://<user>@127.0.0.1:<port>/<dbname>``."""
        if self.port is None:
            raise RuntimeError("LocalPostgres has no port yet: call start() first")
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def psql(
        self, sql: str, dbname: str = "postgres", *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``sql`` with psql (unaligned, tuples only, stop on first error)."""
        return run(
            [
                self.bin("psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.url(dbname),
                "-c",
                sql,
            ],
            check=check,
            timeout=120,
        )

    def query(self, sql: str, dbname: str = "postgres") -> list[list[str]]:
        """Rows of a query, as text columns (``|``-separated psql output split up)."""
        out = self.psql(sql, dbname).stdout
        return [line.split("|") for line in out.splitlines() if line]

    def database_exists(self, name: str) -> bool:
        rows = self.query(f"SELECT 1 FROM pg_database WHERE datname = {quote_literal(name)}")
        return bool(rows)

    exists = database_exists

    def create_database(self, name: str, *, owner: str | None = None) -> bool:
        """Create ``name`` unless it exists; True when it was created now."""
        if self.database_exists(name):
            return False
        sql = f"CREATE DATABASE {quote_ident(name)}"
        if owner:
            sql += f" OWNER {quote_ident(owner)}"
        try:
            self.psql(sql)
        except CommandError as exc:  # lost a race with a concurrent creator
            if "already exists" in (exc.stderr or ""):
                return False
            raise
        logger.info("created database %s", name)
        return True

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, disconnecting its clients."""
        self.psql(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalPostgres({str(self.data_dir)!r}, port={self.port}, {state})"
