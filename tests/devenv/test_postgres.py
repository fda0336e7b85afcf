"""LocalPostgres: a private server started from the installed PostgreSQL binaries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import azora_devenv
from azora_devenv import LocalPostgres, PostgresNotFoundError, find_pg_bindir, port_is_open
from tests.support.require import missing_dependency


@pytest.fixture(autouse=True)
def _require_postgres() -> None:
    try:
        find_pg_bindir()
    except PostgresNotFoundError as exc:
        missing_dependency(f"PostgreSQL binaries not installed: {exc}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); treat it as dead.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _running(pg: LocalPostgres) -> bool:
    return pg.running  # (a call, so mypy does not carry the narrowing across `with`)


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def test_create_database_query_stop_restart_keeps_data(outside_tmp: Path) -> None:
    data_dir = outside_tmp / "pg" / "data"
    pg = LocalPostgres(data_dir, fast=True)
    with pytest.raises(RuntimeError, match="start"):
        pg.url()

    with pg:
        assert _running(pg)
        port = pg.port
        assert port is not None
        assert pg.url("azora_test") == f"postgresql://postgres@127.0.0.1:{port}/azora_test"
        assert pg.create_database("azora_test") is True
        assert pg.create_database("azora_test") is False  # idempotent
        assert pg.database_exists("azora_test")
        assert not pg.database_exists("nope")

        # psql through the DSN, exactly as a caller would use it.
        out = subprocess.run(
            [str(pg.bin("psql")), "-X", "-tA", "-d", pg.url("azora_test"), "-c", "SELECT 1"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == "1"

        pg.psql(
            "CREATE TABLE kept (id int PRIMARY KEY, note text);"
            "INSERT INTO kept VALUES (1, 'survives a restart')",
            "azora_test",
        )
        assert pg.query("SHOW max_connections") == [["300"]]
        assert pg.query("SHOW fsync") == [["off"]]
        postmaster = _postmaster_pid(data_dir)

    assert not _running(pg)
    assert not _pid_alive(postmaster)
    assert not port_is_open("127.0.0.1", port)

    pg.start()  # same instance: same data dir, same port
    try:
        assert pg.port == port
        assert pg.query("SELECT id, note FROM kept", "azora_test") == [["1", "survives a restart"]]
    finally:
        pg.stop()
    pg.stop()  # stopping twice is harmless

    # A fresh instance on the same directory sees the data too (no second initdb).
    with LocalPostgres(data_dir, fast=True) as again:
        assert again.query("SELECT count(*) FROM kept", "azora_test") == [["1"]]


def test_listens_on_loopback_only(outside_tmp: Path) -> None:
    with LocalPostgres(outside_tmp / "data", fast=True) as pg:
        assert pg.query("SHOW listen_addresses") == [["127.0.0.1"]]
        assert pg.query("SELECT current_user") == [["postgres"]]


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from azora_devenv import LocalPostgres
    with LocalPostgres(Path(sys.argv[1]), fast=True):
        print("ready", flush=True)
        time.sleep(600)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_no_orphan_when_owner_dies(outside_tmp: Path, sig: signal.Signals) -> None:
    """SIGTERM unwinds the ``with`` block; even SIGKILL takes postgres down (PDEATHSIG)."""
    data_dir = outside_tmp / "data"
    src_root = Path(azora_devenv.__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src_root), *sys.path])}
    owner = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(data_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "ready"
        postmaster = _postmaster_pid(data_dir)
        assert _pid_alive(postmaster)
        owner.send_signal(sig)
        owner.wait(30)
        deadline = time.monotonic() + 30
        while _pid_alive(postmaster) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _pid_alive(postmaster), f"postgres {postmaster} outlived its owner ({sig!r})"
        if sig == signal.SIGTERM:
            assert owner.returncode == 128 + signal.SIGTERM
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
