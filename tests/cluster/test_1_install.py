"""`helm install --wait` on a real node: every Deployment Available, the migration Jobs run to
completion by the real Job controller, `helm test` passes, Pod Security `restricted` enforced."""

from __future__ import annotations

import json

from tests.cluster.conftest import NAMESPACE, RELEASE, Cluster, Release

SERVICES = ("enrollment", "ledger", "pricing", "orchestrator")


def test_every_deployment_is_available(cluster: Cluster, release: Release) -> None:
    deployments = cluster.apps.list_namespaced_deployment(NAMESPACE).items
    names = {d.metadata.name for d in deployments}
    assert names == {f"{RELEASE}-{s}" for s in (*SERVICES, "operator")}
    for d in deployments:
        conditions = {c.type: c.status for c in d.status.conditions or []}
        assert conditions.get("Available") == "True", (d.metadata.name, conditions)
        assert d.status.ready_replicas == d.spec.replicas, d.metadata.name
        assert d.status.updated_replicas == d.spec.replicas, d.metadata.name


def test_migration_jobs_were_completed_by_the_job_controller(
    cluster: Cluster, release: Release
) -> None:
    jobs = {j.metadata.name: j for j in cluster.batch.list_namespaced_job(NAMESPACE).items}
    for svc in SERVICES:
        job = jobs[f"{RELEASE}-{svc}-migrate"]
        conditions = {c.type: c.status for c in job.status.conditions or []}
        assert conditions.get("Complete") == "True", (svc, conditions)
        assert (job.status.succeeded or 0) >= 1
        # A pod really ran the migration (the real kubelet, the service's image).
        pods = cluster.core.list_namespaced_pod(
            NAMESPACE, label_selector=f"job-name={job.metadata.name}"
        ).items
        assert any(p.status.phase == "Succeeded" for p in pods), svc


def test_helm_test_passes(cluster: Cluster, release: Release) -> None:
    result = cluster.helm("test", RELEASE, "-n", NAMESPACE, "--timeout", "3m", timeout=240)
    assert "Phase:          Succeeded" in result.stdout or "Succeeded" in result.stdout
    assert "Failed" not in result.stdout


def test_namespace_enforces_restricted_and_every_pod_was_admitted(
    cluster: Cluster, release: Release
) -> None:
    ns = cluster.core.read_namespace(NAMESPACE)
    assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = cluster.core.list_namespaced_pod(NAMESPACE).items
    assert len(pods) >= 10  # 2 x 4 services, the operator, the dev PostgreSQL (+ Job pods)
    for pod in pods:
        assert pod.status.phase in ("Running", "Succeeded"), (pod.metadata.name, pod.status.phase)
        if pod.status.phase == "Running":
            statuses = pod.status.container_statuses or []
            assert all(c.ready for c in statuses), pod.metadata.name
    # The enforcement is real: a pod breaking `restricted` is refused by admission.
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "not-restricted", "namespace": NAMESPACE},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "localhost/azora/pause:dev",
                    "securityContext": {"privileged": True},
                }
            ]
        },
    }
    refused = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(privileged), check=False
    )
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted' in refused.stderr
