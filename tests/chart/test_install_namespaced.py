"""Namespaced mode: `operator.watchNamespaces` installs Roles, not a cluster-wide Secret reader.

The chart is installed (without hooks) into the real API server of tests/chart/conftest.py and
the operator's ServiceAccount is checked with `kubectl auth can-i`: everything it needs in the
watched namespaces, nothing of it elsewhere, and at cluster scope only what Kopf lists and
watches there (namespaces, CRDs)."""

from __future__ import annotations

import pytest

from azora_devenv import LocalControlPlane
from tests.chart.conftest import CHART, helm
from tests.chart.test_install import ALLOWED

pytestmark = pytest.mark.e2e

RELEASE = NAMESPACE = "azora-ns"
OPERATOR = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-operator"
WATCHED = ("team-a", "team-b")


@pytest.fixture(scope="module")
def installed(control_plane: LocalControlPlane) -> str:
    for ns in (NAMESPACE, *WATCHED, "team-elsewhere-ns"):
        control_plane.kubectl("create", "namespace", ns)  # may exist from another module
    helm(
        "install", RELEASE, str(CHART), "-n", NAMESPACE, "--timeout", "120s", "--no-hooks",
        "--set", f"operator.watchNamespaces={{{','.join(WATCHED)}}}",
        env=control_plane.env(), timeout=240,
    )  # fmt: skip
    return NAMESPACE


def _can_i(cp: LocalControlPlane, verb: str, resource: str, sub: str, ns: str | None) -> str:
    args = ["auth", "can-i", verb, resource, "--as", OPERATOR]
    args += ["-n", ns] if ns else ["--all-namespaces"]
    if sub:
        args += ["--subresource", sub]
    return cp.kubectl(*args).stdout.strip()


@pytest.mark.parametrize(("verb", "resource", "sub"), ALLOWED)
def test_everything_it_needs_in_the_watched_namespaces_only(
    control_plane: LocalControlPlane, installed: str, verb: str, resource: str, sub: str
) -> None:
    if resource == "customresourcedefinitions":
        # cluster-scoped: Kopf watches CRDs whatever the namespaces
        assert _can_i(control_plane, verb, resource, sub, None) == "yes"
        return
    for ns in WATCHED:
        assert _can_i(control_plane, verb, resource, sub, ns) == "yes", (verb, resource, ns)
    for ns in (installed, "team-elsewhere-ns"):
        assert _can_i(control_plane, verb, resource, sub, ns) == "no", (verb, resource, ns)
    # and not across the cluster (a cluster-wide list or watch would reveal every Secret)
    assert _can_i(control_plane, verb, resource, sub, None) == "no", (verb, resource)


def test_cluster_scope_is_only_what_kopf_needs(
    control_plane: LocalControlPlane, installed: str
) -> None:
    for verb in ("list", "watch"):
        assert _can_i(control_plane, verb, "namespaces", "", None) == "yes"
    for verb, resource in (("get", "namespaces"), ("create", "namespaces"), ("get", "secrets")):
        assert _can_i(control_plane, verb, resource, "", None) == "no", (verb, resource)
    roles = control_plane.kubectl(
        "get", "role,rolebinding", "-A", "-l", f"app.kubernetes.io/instance={RELEASE}",
        "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.namespace} {end}",
    )  # fmt: skip
    assert sorted(roles.stdout.split()) == sorted(
        f"{kind}/{ns}" for kind in ("Role", "RoleBinding") for ns in WATCHED
    )


def test_uninstall_removes_the_roles(control_plane: LocalControlPlane, installed: str) -> None:
    helm("uninstall", RELEASE, "-n", installed, "--timeout", "60s", env=control_plane.env())
    left = control_plane.kubectl("get", "role", "-n", WATCHED[0], "-o", "name")
    assert left.stdout.split() == []
