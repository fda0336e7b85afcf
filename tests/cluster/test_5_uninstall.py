"""`helm uninstall` on the real node (last: the release is gone afterwards)."""

from __future__ import annotations

from tests.cluster.conftest import NAMESPACE, RELEASE, Cluster, Release, eventually


def test_uninstall_leaves_no_workload_and_keeps_the_crds(
    cluster: Cluster, release: Release
) -> None:
    # docs/deploy.md: delete the custom resources first, while the operator can still remove
    # its finalizers; then uninstall.
    for plural in ("pricingrules", "aimodelroutes", "enrollmentcohorts"):
        cluster.kubectl("delete", plural, "--all", "-A", "--wait=true", timeout=120)
    cluster.kubectl("-n", NAMESPACE, "delete", "deployment,service", "echo-llm", "--wait=true")
    cluster.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "2m", timeout=180)

    def release_pods() -> list[str]:
        return [
            p.metadata.name
            for p in cluster.core.list_namespaced_pod(
                NAMESPACE, label_selector=f"app.kubernetes.io/instance={RELEASE}"
            ).items
            if p.status.phase not in ("Succeeded", "Failed")
        ]

    assert cluster.apps.list_namespaced_deployment(NAMESPACE).items == []
    assert cluster.apps.list_namespaced_replica_set(NAMESPACE).items == []
    # Helm hooks are not part of the release: the dev PostgreSQL (a pre-install hook), and the
    # hook Secrets stay, as documented; docs/deploy.md's clean-up removes them by label.
    statefulsets = [
        s.metadata.name for s in cluster.apps.list_namespaced_stateful_set(NAMESPACE).items
    ]
    assert statefulsets in ([], [f"{RELEASE}-postgresql"])
    cluster.kubectl(
        "-n", NAMESPACE, "delete", "secret,statefulset,service,configmap,job",
        "-l", f"app.kubernetes.io/instance={RELEASE}", "--wait=true", timeout=180,
    )  # fmt: skip
    eventually(lambda: release_pods() == [], "no pod of the release left", 120)
    crds = {c.metadata.name for c in cluster.api_ext().list_custom_resource_definition().items}
    assert {"pricingrules.azora.io", "aimodelroutes.azora.io", "enrollmentcohorts.azora.io"} <= crds
