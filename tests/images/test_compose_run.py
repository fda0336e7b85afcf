"""The whole-platform compose file (examples/compose/docker-compose.yml), run for real with
rootful podman and podman-compose: PostgreSQL, the four migrations and the four services start
from the images hack/images.sh builds (podman reads buildah's image store), each service answers
/readyz, an enrollment on a priced cohort goes enrollment -> pricing -> ledger by service name
and ends `enrolled` with its charge in the ledger, and `down -v` leaves no container, pod,
network or volume of the project behind.

What this sandbox needs (no Docker daemon, no systemd, cgroup v1 with a cgroup2 mount, no
CAP_SYS_RESOURCE), all in a containers.conf written for the test (see `podman_env`):
- runc, not crun: crun 1.8 refuses this hybrid cgroup layout ("cgroups in hybrid mode not
  supported, drop all controllers from cgroupv2").
- ulimits no higher than the current hard limits: podman asks for nofile=1048576 for root and
  the runtime cannot raise a hard limit without CAP_SYS_RESOURCE ("error setting rlimit type
  7: operation not permitted"; nproc likewise, type 6).
- cgroupfs and file events: there is no systemd.
- The vfs storage driver at buildah's graph root, so the images built by hack/images.sh are
  podman's images (no copy, no registry).

Podman 4.3 (Debian 12) cannot follow the file's `depends_on` conditions by itself: health
checks run from systemd timers (none here), podman-compose ignores `service_healthy` below podman
4.6, and podman 4.3's start of a container whose dependency has its own dependency fails
("depends on container ... not found in input list"). So the test brings the services up with
`podman-compose up --no-deps` one dependency level at a time, in the order the file's
`depends_on` gives, and checks each condition itself: `service_healthy` by running the file's
own health check (`podman healthcheck run`), `service_completed_successfully` by
`podman wait` (exit 0).
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from azora_devenv.procs import free_port
from tests.support.require import missing_dependency

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "examples" / "compose" / "docker-compose.yml"
SERVICES = ["enrollment", "ledger", "pricing", "orchestrator"]
BUILD = ["enrollment", "ledger", "pricing", "orchestrator", "postgresql"]
ADMIN_TOKEN = "compose-test-admin-token-0123456789"
CLIENT_TOKEN = "compose-test-client-token-0123456789"
SERVICE_TOKEN = "compose-test-service-token-0123456789"


def _podman_compose() -> str | None:
    beside = Path(sys.executable).parent / "podman-compose"
    return str(beside) if beside.is_file() else shutil.which("podman-compose")


def _require() -> str:
    missing = [t for t in ("podman", "runc", "buildah", "debootstrap") if not shutil.which(t)]
    compose = _podman_compose()
    if compose is None:
        missing.append("podman-compose (the dev dependency group)")
    if missing:
        missing_dependency(f"missing {missing} (hack/system-deps.sh, uv sync)")
    if os.geteuid() != 0:
        missing_dependency("rootful podman: run as root (rootless podman is not set up here)")
    assert compose is not None
    return compose


def _buildah_store() -> tuple[str, str]:
    """Where hack/images.sh keeps its images (AZORA_BUILDAH_ROOT, else buildah's default)."""
    if os.environ.get("AZORA_BUILDAH_ROOT"):
        base = Path(os.environ["AZORA_BUILDAH_ROOT"])
        return str(base / "root"), str(base / "run")
    info = json.loads(
        subprocess.run(
            ["buildah", "--storage-driver", "vfs", "info"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return info["store"]["GraphRoot"], info["store"]["RunRoot"]


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    _require()
    conf = tmp_path_factory.mktemp("podman-conf")
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    (conf / "containers.conf").write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        "[network]\n"
        'network_backend = "netavark"\n'
    )
    graph_root, run_root = _buildah_store()
    (conf / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{graph_root}"\nrunroot = "{run_root}"\n'
    )
    return {
        **os.environ,
        "CONTAINERS_CONF": str(conf / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
    }


@pytest.fixture(scope="module")
def images() -> str:
    """The images the compose file names, built (or found up to date) by hack/images.sh."""
    _require()
    tag = "dev"
    result = subprocess.run(
        ["bash", str(ROOT / "hack" / "images.sh"), "build", *BUILD],
        capture_output=True,
        text=True,
        env={**os.environ, "AZORA_IMAGE_TAG": tag},
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return tag


class ComposeProject:
    """One podman-compose project of the whole-platform file, on free ports of 127.0.0.1."""

    def __init__(self, compose: str, env: dict[str, str], tag: str) -> None:
        self.name = f"azora-test-{uuid.uuid4().hex[:8]}"
        self.compose = compose
        self.ports = {svc: free_port() for svc in SERVICES}
        self.env = {
            **env,
            "AZORA_IMAGE_TAG": tag,
            "AZORA_POSTGRES_IMAGE": f"localhost/azora/postgresql:{tag}",
            "AZORA_ADMIN_TOKEN": ADMIN_TOKEN,
            "AZORA_CLIENT_TOKEN": CLIENT_TOKEN,
            "AZORA_SERVICE_TOKEN": SERVICE_TOKEN,
            **{f"AZORA_{svc.upper()}_PORT": str(port) for svc, port in self.ports.items()},
        }
        self.spec: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())

    def run(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.compose, "-p", self.name, "-f", str(COMPOSE_FILE), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"podman-compose {args} failed:\n{result.stderr[-4000:]}")
        return result

    def podman(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"podman {args} failed:\n{result.stderr[-4000:]}")
        return result

    def container(self, service: str) -> str:
        (name,) = self.podman(
            "ps", "-a", "--format", "{{.Names}}",
            "--filter", f"label=com.docker.compose.project={self.name}",
            "--filter", f"label=com.docker.compose.service={service}",
        ).stdout.split()  # fmt: skip
        return name

    def levels(self) -> list[list[str]]:
        """The services in start order: each level depends only on earlier ones."""
        services = self.spec["services"]
        done: set[str] = set()
        levels = []
        while len(done) < len(services):
            level = sorted(
                name
                for name, svc in services.items()
                if name not in done and set(svc.get("depends_on", {})) <= done
            )
            assert level, "dependency cycle in the compose file"
            levels.append(level)
            done |= set(level)
        return levels

    def wait_condition(self, service: str, condition: str, timeout: float = 180) -> None:
        name = self.container(service)
        if condition == "service_completed_successfully":
            code = self.podman("wait", name, timeout=timeout).stdout.strip()
            logs = self.podman("logs", name, check=False).stderr[-3000:]
            assert code == "0", f"{service} exited {code}:\n{logs}"
        elif condition == "service_healthy":
            deadline = time.monotonic() + timeout
            while self.podman("healthcheck", "run", name, check=False).returncode != 0:
                assert time.monotonic() < deadline, f"{service} never became healthy"
                time.sleep(1)
        else:
            assert condition == "service_started", condition

    def up(self) -> None:
        """`up`, one dependency level at a time (see the module docstring for why)."""
        services = self.spec["services"]
        for level in self.levels():
            for service in level:
                for dep, how in services[service].get("depends_on", {}).items():
                    self.wait_condition(dep, how["condition"])
            self.run("up", "-d", "--no-deps", "--no-build", *level)

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=io.podman.compose.project={self.name}"
        found = {
            "containers": self.podman(
                "ps", "-a", "--format", "{{.Names}}", "--filter", label
            ).stdout.split(),
            "pods": self.podman(
                "pod", "ps", "--format", "{{.Name}}", "--filter", label
            ).stdout.split(),
            "networks": [
                n
                for n in self.podman("network", "ls", "--format", "{{.Name}}").stdout.split()
                if n.startswith(self.name)
            ],
            "volumes": [
                v
                for v in self.podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
                if v.startswith(self.name)
            ],
        }
        return {kind: names for kind, names in found.items() if names}

    def remove_everything(self) -> None:
        """Last resort after a failed `down`: remove what is left, by name."""
        left = self.leftovers()
        for name in left.get("containers", []):
            self.podman("rm", "-f", "-t", "0", name, check=False)
        for name in left.get("pods", []):
            self.podman("pod", "rm", "-f", name, check=False)
        for name in left.get("networks", []):
            self.podman("network", "rm", "-f", name, check=False)
        for name in left.get("volumes", []):
            self.podman("volume", "rm", "-f", name, check=False)


def _netavark_chains() -> set[tuple[str, str]]:
    """(table, chain) of every NETAVARK chain in the host's iptables."""
    chains = set()
    for table in ("filter", "nat", "mangle"):
        saved = subprocess.run(
            ["iptables-save", "-t", table], capture_output=True, text=True, check=False
        ).stdout
        chains |= {
            (table, line[1:].split()[0])
            for line in saved.splitlines()
            if line.startswith(":NETAVARK")
        }
    return chains


def _remove_chains(chains: set[tuple[str, str]]) -> None:
    """Remove the firewall chains netavark made for this run (it keeps its global ones after
    the last network is gone): first every rule that jumps to one, then the chains."""
    for table in {t for t, _ in chains}:
        mine = {c for t, c in chains if t == table}
        saved = subprocess.run(
            ["iptables-save", "-t", table], capture_output=True, text=True, check=False
        ).stdout
        for line in saved.splitlines():
            parts = shlex.split(line)  # comments are quoted: '--comment "netavark ... rules"'
            if line.startswith("-A ") and "-j" in parts and parts[parts.index("-j") + 1] in mine:
                subprocess.run(["iptables", "-t", table, "-D", *parts[1:]], check=False)
        for chain in mine:
            subprocess.run(["iptables", "-t", table, "-F", chain], check=False)
        for chain in mine:
            subprocess.run(["iptables", "-t", table, "-X", chain], check=False)


@pytest.fixture
def platform(podman_env: dict[str, str], images: str) -> Iterator[ComposeProject]:
    project = ComposeProject(_require(), podman_env, images)
    chains_before = _netavark_chains()
    try:
        project.up()
        yield project
    finally:
        down = project.run("down", "-v", "-t", "10", check=False)
        left = project.leftovers()
        if left:
            project.remove_everything()
        # Only the chains this run made: a netavark already in use on the machine keeps its own.
        _remove_chains(_netavark_chains() - chains_before)
        assert not left, f"`down -v` left {left} behind:\n{down.stderr[-3000:]}"
        assert not _netavark_chains() - chains_before, "netavark firewall chains left behind"


def _wait_ready(url: str, project: ComposeProject, service: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=3)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    logs = project.podman("logs", project.container(service), check=False).stderr[-3000:]
    migrate = project.podman("logs", project.container(f"migrate-{service}"), check=False)
    raise AssertionError(
        f"{url} not ready ({last}):\n{logs}\nmigrate-{service}:\n{migrate.stderr[-2000:]}"
    )


def test_whole_platform_compose_runs_with_podman(platform: ComposeProject) -> None:
    urls = {svc: f"http://127.0.0.1:{port}" for svc, port in platform.ports.items()}
    for svc, url in urls.items():
        _wait_ready(f"{url}/readyz", platform, svc)

    client = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(timeout=10) as http:
        price = {"EUR": {"model": "perUnit", "unitAmount": 12_000}}
        product = http.put(
            f"{urls['pricing']}/v1/products/course-101",
            json={"name": "Course 101", "prices": price},
            headers=client,
        )
        assert product.status_code in (200, 201), product.text
        cohort = http.put(
            f"{urls['enrollment']}/admin/v1/cohorts/compose/paid",
            json={
                "generation": 1,
                "uid": "compose-uid-1",
                "spec": {
                    "course": "course-101",
                    "title": "Intro",
                    "capacity": 10,
                    "pricing": {"product": "course-101", "currency": "EUR"},
                },
            },
            headers=admin,
        )
        assert cohort.status_code == 200, cohort.text
        created = http.post(
            f"{urls['enrollment']}/v1/enrollments",
            json={"cohort": "compose/paid", "student": {"id": "s1"}},
            headers={**client, "Idempotency-Key": "compose-test-1"},
        )
        assert created.status_code == 201, created.text
        enrollment_id = created.json()["id"]

        # The charge goes enrollment -> pricing (quote) -> ledger through the outbox.
        deadline = time.monotonic() + 60
        state = created.json()["state"]
        while state != "enrolled":
            assert time.monotonic() < deadline, f"enrollment stuck in {state}"
            time.sleep(0.3)
            state = http.get(
                f"{urls['enrollment']}/v1/enrollments/{enrollment_id}", headers=client
            ).json()["state"]
        charges = http.get(
            f"{urls['ledger']}/v1/transactions",
            params={"reference": f"enrollment:{enrollment_id}"},
            headers=client,
        )
        assert charges.status_code == 200, charges.text
        assert len(charges.json()["items"]) == 1

        models = http.get(f"{urls['orchestrator']}/v1/models", headers=client)
        assert models.status_code == 200, models.text
        assert models.json()["object"] == "list"
