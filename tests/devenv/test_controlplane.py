"""LocalControlPlane: etcd + kube-apiserver built by ``make tools``, driven with kubectl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import azora_devenv
from azora_devenv import (
    ADMIN_USER,
    CONTROL_PLANE_TOOLS,
    K8S_VERSION,
    LocalControlPlane,
    port_is_open,
)
from tests.support.require import require_tools


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalControlPlane]:
    require_tools(*CONTROL_PLANE_TOOLS)
    with LocalControlPlane(tmp_path_factory.mktemp("kube")) as cp:
        yield cp


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _ok(cp: LocalControlPlane, *args: str, input: str | None = None) -> str:
    result = cp.kubectl(*args, input=input)
    assert result.returncode == 0, f"kubectl {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def test_versions_are_the_pinned_release(control_plane: LocalControlPlane) -> None:
    versions = json.loads(_ok(control_plane, "version", "-o", "json"))
    assert versions["serverVersion"]["gitVersion"] == K8S_VERSION
    assert versions["clientVersion"]["gitVersion"] == K8S_VERSION
    assert versions["serverVersion"]["minor"] == K8S_VERSION.split(".")[1]


def test_kubeconfig_verifies_the_serving_certificate(control_plane: LocalControlPlane) -> None:
    assert control_plane.kubeconfig.is_file()
    assert control_plane.server.startswith("https://127.0.0.1:")
    # No --insecure-skip-tls-verify anywhere: the kubeconfig trusts the apiserver's own CA.
    assert "insecure" not in control_plane.kubeconfig.read_text()
    assert _ok(control_plane, "get", "--raw", "/readyz").strip() == "ok"
    response = control_plane.request("GET", "/version")  # urllib with verification on
    assert response.status == 200
    assert response.json()["gitVersion"] == K8S_VERSION
    whoami = json.loads(_ok(control_plane, "auth", "whoami", "-o", "json"))
    assert whoami["status"]["userInfo"]["username"] == ADMIN_USER
    assert "system:masters" in whoami["status"]["userInfo"]["groups"]


def test_anonymous_and_bad_tokens_are_rejected(control_plane: LocalControlPlane) -> None:
    assert control_plane.request("GET", "/api/v1/namespaces", token="wrong").status == 401


def test_namespace_and_configmap_round_trip(control_plane: LocalControlPlane) -> None:
    ns = _unique("devenv")
    _ok(control_plane, "create", "namespace", ns)
    manifest = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": ns, "labels": {"app": "azora"}},
            "data": {"greeting": "hello", "multi": "line one\nline two\n"},
        }
    )
    _ok(control_plane, "apply", "-f", "-", input=manifest)
    got = json.loads(_ok(control_plane, "get", "configmap", "settings", "-n", ns, "-o", "json"))
    assert got["data"] == {"greeting": "hello", "multi": "line one\nline two\n"}
    assert got["metadata"]["labels"] == {"app": "azora"}
    names = _ok(control_plane, "get", "configmaps", "-n", ns, "-o", "name").split()
    assert "configmap/settings" in names


_RBAC = """\
apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: configmap-reader, namespace: {ns}}}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader-reads-configmaps, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}}
subjects:
- {{kind: ServiceAccount, name: reader, namespace: {ns}}}
"""


def test_service_account_token_is_limited_by_rbac(control_plane: LocalControlPlane) -> None:
    cp = control_plane
    ns = _unique("rbac")
    _ok(cp, "create", "namespace", ns)
    _ok(cp, "apply", "-f", "-", input=_RBAC.format(ns=ns))
    _ok(cp, "create", "configmap", "visible", "-n", ns, "--from-literal=k=v")

    subject = f"system:serviceaccount:{ns}:reader"

    def can_i(*what: str) -> str:
        result = cp.kubectl("auth", "can-i", *what, "-n", ns, f"--as={subject}")
        return result.stdout.strip()

    assert can_i("list", "configmaps") == "yes"
    assert can_i("get", "configmaps") == "yes"
    assert can_i("create", "configmaps") == "no"
    assert can_i("create", "secrets") == "no"
    assert can_i("list", "pods") == "no"

    token = _ok(cp, "create", "token", "reader", "-n", ns, "--duration=10m").strip()
    assert token.count(".") == 2  # a JWT from the TokenRequest API

    # The token through kubectl ...
    whoami = json.loads(_ok(cp, "auth", "whoami", f"--token={token}", "-o", "json"))
    assert whoami["status"]["userInfo"]["username"] == subject
    listed = _ok(cp, "get", "configmaps", "-n", ns, f"--token={token}", "-o", "name")
    assert "configmap/visible" in listed.split()
    denied = cp.kubectl("create", "secret", "generic", "nope", "-n", ns, f"--token={token}")
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()

    # ... and raw HTTP with the same token.
    base = f"/api/v1/namespaces/{ns}"
    assert cp.request("GET", f"{base}/configmaps", token=token).status == 200
    assert cp.request("GET", f"{base}/configmaps/visible", token=token).status == 200
    assert cp.request("GET", f"{base}/pods", token=token).status == 403
    assert cp.request("GET", "/api/v1/namespaces/default/configmaps", token=token).status == 403
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nope"}}
    forbidden = cp.request("POST", f"{base}/secrets", secret, token=token)
    assert forbidden.status == 403
    assert forbidden.json()["reason"] == "Forbidden"


def test_pods_can_be_created_without_default_service_account(
    control_plane: LocalControlPlane,
) -> None:
    """No controller-manager means no ``default`` SA; admission must not require one."""
    ns = _unique("pods")
    _ok(control_plane, "create", "namespace", ns)
    _ok(
        control_plane, "run", "probe", "-n", ns, "--image=example.invalid/none:1", "--restart=Never"
    )
    phase = _ok(control_plane, "get", "pod", "probe", "-n", ns, "-o", "jsonpath={.status.phase}")
    assert phase == "Pending"  # nothing schedules it; it exists, which is the point


def test_stop_start_keeps_cluster_state(tmp_path: Path) -> None:
    require_tools(*CONTROL_PLANE_TOOLS)
    cp = LocalControlPlane(tmp_path / "kube")
    with cp:
        _ok(cp, "create", "namespace", "persisted")
        token = cp.admin_token
        apiserver_port = cp.apiserver_port
        assert apiserver_port is not None
    assert not cp.running
    assert not port_is_open("127.0.0.1", apiserver_port)

    with cp:
        assert cp.admin_token == token  # the token file is reused
        assert _ok(cp, "get", "namespace", "persisted", "-o", "name").strip() == (
            "namespace/persisted"
        )


_OWNER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from azora_devenv import LocalControlPlane
    with LocalControlPlane(Path(sys.argv[1])) as cp:
        print(json.dumps(cp.pids), flush=True)
        time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_no_orphans_when_owner_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the owning process still takes etcd and kube-apiserver down (PDEATHSIG)."""
    require_tools(*CONTROL_PLANE_TOOLS)
    src_root = Path(azora_devenv.__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src_root), *sys.path])}
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(tmp_path / "kube")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert owner.stdout is not None
        pids: dict[str, int] = json.loads(owner.stdout.readline())
        assert set(pids) == {"etcd", "kube-apiserver"}
        assert all(_alive(pid) for pid in pids.values())
        owner.send_signal(signal.SIGKILL)
        owner.wait(30)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = {name: pid for name, pid in pids.items() if _alive(pid)}
        assert not survivors, f"orphaned: {survivors}"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
