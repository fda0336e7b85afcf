"""Session fixtures for the operator tests: a real kube-apiserver (with an audit log of the
operator's own requests), the three services as processes on a real PostgreSQL, and the
operator as a process running under a ServiceAccount bound only to the shipped ClusterRole."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from azora_devenv import CONTROL_PLANE_TOOLS, LocalControlPlane
from tests.operator.kube import (
    CLUSTERROLE,
    CRDS,
    OPERATOR_NS,
    OPERATOR_SA,
    OPERATOR_USER,
    OperatorProcess,
    kubectl_ok,
    sa_kubeconfig,
    unique,
)
from tests.support.pg import PostgresServer
from tests.support.require import require_tools
from tests.support.services import API_TOKEN, ServiceProcess

# Short, so the "service gone for good" test sees the finalizer released by the timeout.
DELETE_TIMEOUT = "8"

AUDIT_POLICY = f"""apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    users: ["{OPERATOR_USER}"]
  - level: None
"""


@pytest.fixture(scope="session")
def work_root() -> Iterator[Path]:
    # Not pytest's tmp_path: concurrent pytest sessions on the machine rotate
    # /tmp/pytest-of-<user> and can remove a running session's directories.
    root = Path(tempfile.mkdtemp(prefix="azora-operator-tests-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def kube(work_root: Path) -> Iterator[LocalControlPlane]:
    require_tools(*CONTROL_PLANE_TOOLS)
    work = work_root / "kube"
    work.mkdir()
    policy = work / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    audit_log = work / "audit.log"
    cp = LocalControlPlane(
        work,
        extra_apiserver_args=[
            f"--audit-policy-file={policy}",
            f"--audit-log-path={audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
        ],
    )
    with cp:
        kubectl_ok(cp, "apply", "-f", str(CRDS))
        kubectl_ok(cp, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        kubectl_ok(cp, "create", "namespace", OPERATOR_NS)
        kubectl_ok(cp, "create", "serviceaccount", OPERATOR_SA, "-n", OPERATOR_NS)
        kubectl_ok(cp, "apply", "-f", str(CLUSTERROLE))
        kubectl_ok(
            cp,
            "create",
            "clusterrolebinding",
            "azora-operator",
            "--clusterrole=azora-operator",
            f"--serviceaccount={OPERATOR_NS}:{OPERATOR_SA}",
        )
        yield cp


@pytest.fixture(scope="session")
def audit_log(kube: LocalControlPlane) -> Path:
    return kube.work_dir / "audit.log"


@pytest.fixture(scope="session")
def services(pg: PostgresServer, work_root: Path) -> Iterator[dict[str, ServiceProcess]]:
    work = work_root / "services"
    work.mkdir()
    procs: dict[str, ServiceProcess] = {}
    try:
        for name in ("pricing", "orchestrator"):
            url = pg.recreate_database(f"azora_op_{name}")
            procs[name] = ServiceProcess(name, url, work).start()
        url = pg.recreate_database("azora_op_enrollment")
        procs["enrollment"] = ServiceProcess(
            "enrollment",
            url,
            work,
            env={
                "ENROLLMENT_PRICING_URL": procs["pricing"].url,
                "ENROLLMENT_SERVICE_TOKEN": API_TOKEN,
            },
        ).start()
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


@pytest.fixture(scope="session")
def operator_kubeconfig(kube: LocalControlPlane, work_root: Path) -> Path:
    return sa_kubeconfig(kube, work_root / "operator-kubeconfig")


@pytest.fixture(scope="session")
def service_urls(services: dict[str, ServiceProcess]) -> dict[str, str]:
    return {name: proc.url for name, proc in services.items()}


@pytest.fixture(scope="session")
def operator(
    operator_kubeconfig: Path,
    service_urls: dict[str, str],
    work_root: Path,
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(
        operator_kubeconfig, service_urls, work_root, delete_timeout=DELETE_TIMEOUT
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def ns(kube: LocalControlPlane) -> str:
    """A fresh namespace for one test's resources."""
    name = unique("op")
    kubectl_ok(kube, "create", "namespace", name)
    return name
