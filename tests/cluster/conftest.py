"""A real single-node cluster for the whole session, and one Helm release of charts/azora on it.

The cluster is ``hack/kube.py up --cluster-only`` with its own state dir (``.local/kube-test``):
containerd + runc + the bridge CNI, kubelet, kube-proxy, controller-manager, scheduler and
CoreDNS as real processes and pods (``azora_devenv.node``). Pods run the images of
``hack/images.sh`` (built, archived and imported on the first run; cached afterwards). It is
stopped, and everything it made removed, at the end of the session.

AZORA_CLUSTER_KEEP=1 keeps the cluster after the session (and a later session reuses it).

Reads of the cluster use the official ``kubernetes`` client. Under CI=true a missing piece
(root, a tool, a Debian package) fails; elsewhere it skips, saying what is missing.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from azora_devenv.node import restricted_namespace
from tests.support.require import missing_dependency

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "azora"
KUBE_PY = ROOT / "hack" / "kube.py"
STATE = ROOT / ".local" / "kube-test"
USER_STATE = ROOT / ".local" / "kube"
NAMESPACE = "azora"
RELEASE = "azora"
# The operator watches the release namespace and `default` (where examples/ put their objects):
# a namespaced operator, so the chart's namespaces list/watch rule is exercised.
WATCH = "{azora,default}"


def _env() -> dict[str, str]:
    return {**os.environ, "AZORA_KUBE_DIR": str(STATE)}


def _requirements() -> None:
    from azora_devenv.tools import NODE_TOOLS, missing_tools

    if os.geteuid() != 0:
        missing_dependency("the real-cluster tests need root (containerd, runc, bridge, iptables)")
    missing = missing_tools("etcd", "kube-apiserver", "kubectl", *NODE_TOOLS)
    if missing:
        missing_dependency(f"tools not built ({', '.join(missing)}): run `make tools`")
    for tool in ("containerd", "runc", "ctr", "buildah", "debootstrap", "conntrack"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            missing_dependency(f"{tool} missing: run hack/system-deps.sh")
    pid_file = USER_STATE / "supervisor.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), 0)
        except (ValueError, ProcessLookupError):
            pass
        else:
            missing_dependency("a `make kube-up` cluster is running: `make kube-down` first")


@dataclass
class Cluster:
    kubeconfig: Path
    api: k8s.ApiClient = field(repr=False)

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api)

    @property
    def apps(self) -> k8s.AppsV1Api:
        return k8s.AppsV1Api(self.api)

    @property
    def batch(self) -> k8s.BatchV1Api:
        return k8s.BatchV1Api(self.api)

    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api)

    def api_rbac(self) -> k8s.RbacAuthorizationV1Api:
        return k8s.RbacAuthorizationV1Api(self.api)

    def api_ext(self) -> k8s.ApiextensionsV1Api:
        return k8s.ApiextensionsV1Api(self.api)

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def tool(
        self,
        name: str,
        *args: str,
        input: str | None = None,
        timeout: float = 300,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        from azora_devenv.tools import tool_path

        result = subprocess.run(
            [str(tool_path(name)), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check:
            assert result.returncode == 0, f"{name} {' '.join(args)}:\n{result.stderr[-3000:]}"
        return result

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.tool("kubectl", *args, **kw)

    def helm(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.tool("helm", *args, **kw)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    _requirements()
    started = time.monotonic()
    up = subprocess.run(
        [sys.executable, str(KUBE_PY), "up", "--cluster-only"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=3600,  # cold: images are built first
        check=False,
    )
    try:
        assert up.returncode == 0, f"kube up failed:\n{up.stdout[-2000:]}\n{up.stderr[-4000:]}"
        print(f"\n[cluster] up in {time.monotonic() - started:.1f}s", file=sys.stderr)
        kubeconfig = STATE / "cluster" / "control-plane" / "kubeconfig"
        api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        yield Cluster(kubeconfig, api)
    finally:
        if not os.environ.get("AZORA_CLUSTER_KEEP"):
            # (With AZORA_CLUSTER_KEEP=1 the cluster stays for the next session, which reuses
            # it; `AZORA_KUBE_DIR=.local/kube-test hack/kube.py down` removes it.)
            down = subprocess.run(
                [sys.executable, str(KUBE_PY), "down"],
                env=_env(),
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert down.returncode == 0, down.stderr


def image_values() -> Path:
    values = STATE / "images-values.yaml"
    values.write_text(
        subprocess.run(
            ["bash", str(ROOT / "hack" / "images.sh"), "values"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return values


def helm_install_args(*extra: str) -> list[str]:
    return [
        "upgrade", "--install", RELEASE, str(CHART),
        "--namespace", NAMESPACE,
        "-f", str(image_values()),
        "-f", str(CHART / "ci" / "local-cluster-values.yaml"),
        "--set", f"operator.watchNamespaces={WATCH}",
        "--wait", "--timeout", "5m",
        *extra,
    ]  # fmt: skip


@dataclass
class Release:
    tokens: dict[str, str]
    urls: dict[str, str]
    install_seconds: float


def service_urls(cluster: Cluster) -> dict[str, str]:
    """ClusterIP URLs by component: this host is the node, so kube-proxy routes them here too."""
    urls = {}
    for svc in cluster.core.list_namespaced_service(NAMESPACE).items:
        component = (svc.metadata.labels or {}).get("app.kubernetes.io/component")
        if component and component != "postgresql" and svc.spec.cluster_ip not in (None, "None"):
            urls[component] = f"http://{svc.spec.cluster_ip}:{svc.spec.ports[0].port}"
    return urls


@pytest.fixture(scope="session")
def release(cluster: Cluster) -> Release:
    namespace = restricted_namespace(NAMESPACE, warn=True)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(namespace))
    started = time.monotonic()
    cluster.helm(*helm_install_args(), timeout=420)
    elapsed = time.monotonic() - started
    print(f"\n[cluster] helm install --wait in {elapsed:.1f}s", file=sys.stderr)
    secret = cluster.core.read_namespaced_secret(f"{RELEASE}-tokens", NAMESPACE)
    tokens = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
    return Release(tokens=tokens, urls=service_urls(cluster), install_seconds=elapsed)


def eventually(predicate: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # the cluster is converging: keep asking
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def examples_applied(cluster: Cluster, release: Release, priced: None) -> None:
    """`kubectl apply -f examples/` (after the catalog the example cohort is priced from, as
    `make up` seeds it: enrollment-service refuses a cohort whose product pricing does not
    know), then every example resource Ready."""
    from tests.cluster.test_2_operator import EXAMPLES, example_converged

    # The Kubernetes manifests of examples/ (the folder also holds compose files and data).
    manifests = sorted((ROOT / "examples").glob("*.yaml"))
    cluster.kubectl("apply", *(a for m in manifests for a in ("-f", str(m))))
    for plural, (ns, name) in EXAMPLES.items():
        eventually(
            lambda p=plural, n=ns, m=name: example_converged(cluster, p, n, m),
            f"{plural}/{name} Ready",
        )


@pytest.fixture(scope="session")
def priced(release: Release) -> None:
    """The example cohort's product in the pricing catalogue (through pricing's REST API)."""
    import httpx

    from tests.cluster.test_3_traffic import PRICE, bearer

    with httpx.Client(headers=bearer(release.tokens["client-token"]), timeout=10) as http:
        product = http.put(
            f"{release.urls['pricing']}/v1/products/k8s-fundamentals",
            json={
                "name": "Kubernetes Fundamentals",
                "prices": {"EUR": {"model": "perUnit", "unitAmount": PRICE}},
            },
        )
        assert product.status_code in (200, 201), product.text


@pytest.fixture(scope="session")
def echo_backend(cluster: Cluster, release: Release) -> set[str]:
    """A small OpenAI-compatible backend pod + the `cluster-echo` AIModelRoute pointing at it."""
    from tests.cluster.test_3_traffic import deploy_echo_backend

    return deploy_echo_backend(cluster)
