"""The chart against a bare kube-apiserver (no node): server-side validation of every object,
`helm install` / `upgrade` without hooks (nothing here would run their Jobs), tokens kept across
upgrades, and the operator's RBAC checked with `kubectl auth can-i`.

The hooks themselves (migration Jobs completed by the real Job controller, `helm test`), pods,
probes, Pod Security admission, the operator in-cluster and `helm uninstall` run on a real node
in tests/cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from azora_devenv import LocalControlPlane
from azora_devenv.tools import tool_path
from tests.chart.conftest import CHART, CI_VALUES, helm

pytestmark = pytest.mark.e2e


def _create_namespace(cp: LocalControlPlane, name: str) -> None:
    result = cp.kubectl("create", "namespace", name)
    assert result.returncode == 0, result.stderr


def _crds_installed(cp: LocalControlPlane) -> None:
    result = cp.kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "values",
    [pytest.param((), id="defaults")] + [pytest.param((p,), id=p.stem) for p in CI_VALUES],
)
def test_every_rendered_object_passes_server_side_validation(
    control_plane: LocalControlPlane, values: tuple[Path, ...]
) -> None:
    namespace = f"dry-{values[0].stem if values else 'defaults'}"[:40]
    _create_namespace(control_plane, namespace)
    _crds_installed(control_plane)
    # Watched namespaces get the operator's Roles (namespaced RBAC): they must exist.
    for path in values:
        operator = (yaml.safe_load(path.read_text()) or {}).get("operator") or {}
        for watched in operator.get("watchNamespaces") or ():
            control_plane.kubectl("create", "namespace", watched)  # may exist already
    args = ["template", "azora", str(CHART), "--namespace", namespace]
    for path in values:
        args += ["-f", str(path)]
    manifest = helm(*args).stdout
    # Strict field validation: an unknown or misplaced field is an error, not a warning.
    result = control_plane.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--validate=strict",
        "--field-manager=chart-test",
        "-f",
        "-",
        input=manifest,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == manifest.count("\nkind: ")


def _helm(cp: LocalControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return helm(*args, env=cp.env(), timeout=240)


@pytest.fixture(scope="module")
def installed(control_plane: LocalControlPlane) -> str:
    """`helm install` of the default values into namespace "azora"; returns the namespace."""
    namespace = "azora"
    _create_namespace(control_plane, namespace)
    # --no-hooks: the hook objects (Secrets, dev PostgreSQL, migration Jobs) are not created;
    # they are exercised on the real node (tests/cluster).
    _helm(
        control_plane,
        "install", "azora", str(CHART), "-n", namespace, "--timeout", "120s", "--no-hooks",
        "--set", "monitoring.serviceMonitor.enabled=true",
        "--set", "monitoring.prometheusRule.enabled=true",
        "--set", "monitoring.dashboards.enabled=true",
        "--set", "networkPolicy.enabled=true",
    )  # fmt: skip
    return namespace


def test_install_creates_the_release(control_plane: LocalControlPlane, installed: str) -> None:
    result = control_plane.kubectl(
        "get", "deploy,svc,secret,servicemonitor,prometheusrule,networkpolicy,cm",
        "-n", installed, "-o", "name",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    names = set(result.stdout.split())
    for svc in ("enrollment", "ledger", "pricing", "orchestrator", "operator"):
        assert f"deployment.apps/azora-{svc}" in names
        assert f"service/azora-{svc}" in names
        assert f"servicemonitor.monitoring.coreos.com/azora-{svc}" in names
        assert f"networkpolicy.networking.k8s.io/azora-{svc}" in names
    assert "prometheusrule.monitoring.coreos.com/azora" in names
    assert any(n.startswith("configmap/azora-dashboard-") for n in names)
    crds = control_plane.kubectl("get", "crd", "-o", "name").stdout
    for crd in ("pricingrules", "aimodelroutes", "enrollmentcohorts", "pricingpolicies"):
        assert f"customresourcedefinition.apiextensions.k8s.io/{crd}.azora.io" in crds


def test_upgrade_applies_changed_values(control_plane: LocalControlPlane, installed: str) -> None:
    # Tokens kept across upgrades (Secrets are hooks) and the migration hooks are checked on the
    # real node: tests/cluster/test_4_upgrade.py.
    _helm(
        control_plane,
        "upgrade", "azora", str(CHART), "-n", installed, "--reuse-values", "--no-hooks",
        "--set", "services.ledger.replicaCount=3", "--timeout", "120s",
    )  # fmt: skip
    replicas = control_plane.kubectl(
        "get", "deploy", "azora-ledger", "-n", installed, "-o", "jsonpath={.spec.replicas}"
    ).stdout
    assert replicas == "3"


OPERATOR = "system:serviceaccount:azora:azora-operator"

# Every verb of operator/deploy/clusterrole.yaml, resource by resource.
ALLOWED = (
    [
        (verb, resource, "")
        for resource in ("pricingrules", "aimodelroutes", "enrollmentcohorts", "pricingpolicies")
        for verb in ("list", "watch", "patch")
    ]
    + [
        ("patch", resource, "status")
        for resource in ("pricingrules", "aimodelroutes", "enrollmentcohorts", "pricingpolicies")
    ]
    + [
        ("create", "events", ""),
        ("get", "secrets", ""),
        ("list", "secrets", ""),
        ("watch", "secrets", ""),
        ("list", "customresourcedefinitions", ""),
        ("watch", "customresourcedefinitions", ""),
    ]
)

DENIED = [
    ("create", "pricingrules", ""),
    ("delete", "aimodelroutes", ""),
    ("update", "enrollmentcohorts", ""),
    ("get", "pricingrules", "scale"),
    ("update", "pricingrules", "status"),
    ("create", "secrets", ""),
    ("update", "secrets", ""),
    ("delete", "secrets", ""),
    ("delete", "events", ""),
    ("create", "customresourcedefinitions", ""),
    ("patch", "customresourcedefinitions", ""),
    ("create", "pods", ""),
    ("get", "configmaps", ""),
    ("patch", "deployments", ""),
    ("create", "clusterrolebindings", ""),
    ("escalate", "clusterroles", ""),
    ("impersonate", "serviceaccounts", ""),
    ("create", "serviceaccounts", "token"),
]


def _can_i(cp: LocalControlPlane, verb: str, resource: str, sub: str, ns: str) -> str:
    args = ["auth", "can-i", verb, resource, "--as", OPERATOR, "-n", ns]
    if sub:
        args += ["--subresource", sub]
    return cp.kubectl(*args).stdout.strip()


@pytest.mark.parametrize(("verb", "resource", "sub"), ALLOWED)
def test_operator_can_do_what_it_needs(
    control_plane: LocalControlPlane, installed: str, verb: str, resource: str, sub: str
) -> None:
    # In another namespace too: the operator watches the whole cluster by default.
    for ns in (installed, "team-elsewhere"):
        assert _can_i(control_plane, verb, resource, sub, ns) == "yes", (verb, resource, sub, ns)


@pytest.mark.parametrize(("verb", "resource", "sub"), DENIED)
def test_operator_cannot_do_more(
    control_plane: LocalControlPlane, installed: str, verb: str, resource: str, sub: str
) -> None:
    assert _can_i(control_plane, verb, resource, sub, installed) == "no", (verb, resource, sub)


def test_uninstall_removes_the_release_objects(
    control_plane: LocalControlPlane, installed: str
) -> None:
    # Last in this module (pytest keeps file order). Installed without hooks, so no hook object
    # (dev PostgreSQL, Secrets) is left either; tests/cluster checks that on a real install.
    _helm(control_plane, "uninstall", "azora", "-n", installed, "--timeout", "60s")
    left = control_plane.kubectl("get", "deploy,svc,servicemonitor", "-n", installed, "-o", "name")
    assert left.stdout.split() == []
    assert control_plane.kubectl("get", "clusterrole", "azora-operator").returncode != 0
    assert tool_path("kubectl").exists()
