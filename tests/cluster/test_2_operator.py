"""The operator in-cluster, with the chart's ServiceAccount and ClusterRole (watching the release
namespace and `default`): `kubectl apply -f examples/` -> every resource Ready, and the services
hold the configuration."""

from __future__ import annotations

from typing import Any

import httpx

from tests.cluster.conftest import NAMESPACE, RELEASE, Cluster, Release

EXAMPLES = {
    # plural: (namespace, name)
    "pricingrules": ("default", "early-bird-k8s"),
    "aimodelroutes": ("default", "tutor"),
    "enrollmentcohorts": ("default", "k8s-fundamentals-2027-spring"),
}


def ready(cluster: Cluster, plural: str, namespace: str, name: str, kind: str = "Ready") -> bool:
    obj: dict[str, Any] = cluster.custom.get_namespaced_custom_object(
        "azora.io", "v1alpha1", namespace, plural, name
    )
    conditions = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
    condition = conditions.get(kind, {})
    return bool(
        condition.get("status") == "True"
        and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
    )


def example_converged(cluster: Cluster, plural: str, namespace: str, name: str) -> bool:
    """Ready; for the example AIModelRoute, Synced (live in the orchestrator): its backends are
    `make up`'s model processes on 127.0.0.1, which no pod reaches, so the orchestrator rightly
    ejects them and reports Ready=False/NoHealthyBackends. A route to a backend pod in the
    cluster is Ready: test_3_traffic."""
    if plural == "aimodelroutes":
        return ready(cluster, plural, namespace, name, "Synced")
    return ready(cluster, plural, namespace, name)


def test_operator_runs_with_the_charts_service_account(cluster: Cluster, release: Release) -> None:
    pods = cluster.core.list_namespaced_pod(
        NAMESPACE, label_selector="app.kubernetes.io/component=operator"
    ).items
    assert len(pods) == 1
    assert pods[0].spec.service_account_name == f"{RELEASE}-operator"
    binding = next(
        b
        for b in cluster.api_rbac().list_cluster_role_binding().items
        if b.metadata.name == f"{RELEASE}-operator"
    )
    assert binding.role_ref.name == f"{RELEASE}-operator"
    assert binding.subjects[0].name == f"{RELEASE}-operator"


def test_examples_become_ready(cluster: Cluster, examples_applied: None) -> None:
    for plural, (ns, name) in EXAMPLES.items():
        assert example_converged(cluster, plural, ns, name), plural


def test_services_hold_the_configuration(release: Release, examples_applied: None) -> None:
    admin = {"Authorization": f"Bearer {release.tokens['admin-token']}"}
    with httpx.Client(headers=admin, timeout=10) as http:
        rules = http.get(f"{release.urls['pricing']}/admin/v1/pricing-rules")
        assert rules.status_code == 200, rules.text
        assert "early-bird-k8s" in rules.text
        cohorts = http.get(f"{release.urls['enrollment']}/admin/v1/cohorts")
        assert cohorts.status_code == 200, cohorts.text
        assert "k8s-fundamentals-2027-spring" in cohorts.text
        routes = http.get(f"{release.urls['orchestrator']}/admin/v1/routes")
        assert routes.status_code == 200, routes.text
        assert "azora-tutor" in routes.text
