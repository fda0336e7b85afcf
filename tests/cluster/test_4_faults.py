"""Faults on the real node: a service pod deleted mid-traffic, the operator pod restarted
mid-apply, and `helm upgrade` (new image tag + config) under a request loop with zero failures."""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import (
    NAMESPACE,
    RELEASE,
    STATE,
    Cluster,
    Release,
    eventually,
    helm_install_args,
)
from tests.cluster.test_2_operator import ready
from tests.cluster.test_3_traffic import assert_charged_once, bearer, enroll


@dataclass
class Loop:
    """Requests in a loop on a background thread, one fresh connection each; counts failures."""

    call: Any
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Loop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                self.results.append(self.call(i))
                self.ok += 1
            except Exception as exc:
                self.failed.append(f"{i}: {type(exc).__name__}: {exc}")
            time.sleep(0.02)


def no_keepalive(token: str, timeout: float = 10) -> httpx.Client:
    return httpx.Client(
        headers=bearer(token),
        timeout=timeout,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def deployment_restored(cluster: Cluster, name: str) -> bool:
    d = cluster.apps.read_namespaced_deployment(name, NAMESPACE)
    return bool(d.status.ready_replicas == d.spec.replicas == d.status.updated_replicas)


DRILL_COHORT = {
    "apiVersion": "azora.io/v1alpha1",
    "kind": "EnrollmentCohort",
    "metadata": {"name": "fault-drill", "namespace": NAMESPACE},
    "spec": {
        "course": "k8s-fundamentals",
        "title": "Fault drill (large, priced)",
        "capacity": 100000,
        "pricing": {"product": "k8s-fundamentals", "currency": "EUR"},
    },
}


def replaced(cluster: Cluster, component: str, gone: str) -> bool:
    """The deleted pod is gone and the Deployment has all its replicas ready again."""
    pods = cluster.core.list_namespaced_pod(
        NAMESPACE, label_selector=f"app.kubernetes.io/component={component}"
    ).items
    ready = [
        p
        for p in pods
        if p.metadata.deletion_timestamp is None
        and all(c.ready for c in p.status.container_statuses or [])
        and p.status.container_statuses
    ]
    names = {p.metadata.name for p in pods}
    return (
        gone not in names
        and len(ready) == 2
        and deployment_restored(cluster, f"{RELEASE}-{component}")
    )


def test_deleting_a_service_pod_mid_traffic_loses_and_doubles_no_money(
    cluster: Cluster, release: Release, priced: None
) -> None:
    # A cohort with room for every request (the example's 50 seats would waitlist most).
    cluster.kubectl("apply", "-f", "-", input=json.dumps(DRILL_COHORT))
    eventually(
        lambda: ready(cluster, "enrollmentcohorts", NAMESPACE, "fault-drill"), "drill cohort", 60
    )
    http = no_keepalive(release.tokens["client-token"])
    cohort = f"{NAMESPACE}/fault-drill"

    def one(i: int) -> str:
        return str(enroll(http, release, f"fault-{uuid.uuid4().hex[:10]}", cohort=cohort)["id"])

    with Loop(one) as loop:
        eventually(lambda: loop.ok >= 5, "traffic flowing", 30)
        for component in ("enrollment", "ledger"):
            pod = cluster.core.list_namespaced_pod(
                NAMESPACE, label_selector=f"app.kubernetes.io/component={component}"
            ).items[0]
            cluster.core.delete_namespaced_pod(pod.metadata.name, NAMESPACE)
            eventually(
                lambda c=component, gone=pod.metadata.name: replaced(cluster, c, gone),
                f"{component} restored",
                120,
            )
        before = loop.ok
        eventually(lambda: loop.ok >= before + 5, "traffic after the restore", 30)
    print(
        f"\n[cluster] pod deletion: {loop.ok} enrollments accepted, {len(loop.failed)} failed",
        file=sys.stderr,
    )
    # A graceful pod deletion (preStop, readiness, drain) fails nothing.
    assert loop.failed == []
    accepted: list[str] = loop.results
    with httpx.Client(headers=bearer(release.tokens["client-token"]), timeout=10) as check:

        def all_enrolled() -> bool:
            return all(
                check.get(f"{release.urls['enrollment']}/v1/enrollments/{e}").json()["state"]
                == "enrolled"
                for e in accepted
            )

        eventually(all_enrolled, "every accepted enrollment charged", 120)
        for enrollment_id in accepted:
            assert_charged_once(check, release, enrollment_id)
    http.close()


def test_operator_restarted_mid_apply_converges(cluster: Cluster, release: Release) -> None:
    names = [f"restart-{i}" for i in range(3)]
    rules = [
        {
            "apiVersion": "azora.io/v1alpha1",
            "kind": "PricingRule",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "description": "applied while the operator restarts",
                "mode": "active",
                "priority": 10 + i,
                "target": {"products": ["k8s-fundamentals"], "currencies": ["EUR"]},
                "action": {"percentOff": "1"},
            },
        }
        for i, name in enumerate(names)
    ]
    operator = cluster.core.list_namespaced_pod(
        NAMESPACE, label_selector="app.kubernetes.io/component=operator"
    ).items[0]
    cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(r) for r in rules))
    cluster.core.delete_namespaced_pod(operator.metadata.name, NAMESPACE)
    for name in names:
        eventually(lambda n=name: ready(cluster, "pricingrules", NAMESPACE, n), f"rule {name}", 120)
    admin = bearer(release.tokens["admin-token"])
    listed = httpx.get(f"{release.urls['pricing']}/admin/v1/pricing-rules", headers=admin)
    for name in names:
        assert name in listed.text
    cluster.kubectl("delete", "pricingrules", *names, "-n", NAMESPACE, "--wait=true", timeout=120)


def tag_images(cluster_dir: Path, new_tag: str) -> None:
    """Re-tag the imported images in containerd: a changed image reference for the rollout."""
    import subprocess

    sock = cluster_dir / "containerd" / "containerd.sock"
    listed = subprocess.run(
        ["ctr", "--address", str(sock), "-n", "k8s.io", "images", "ls", "-q"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for ref in listed:
        if ref.startswith("localhost/azora/") and ref.endswith(":dev"):
            new = ref.removesuffix(":dev") + f":{new_tag}"
            if new not in listed:
                subprocess.run(
                    ["ctr", "--address", str(sock), "-n", "k8s.io", "images", "tag", ref, new],
                    capture_output=True,
                    check=True,
                )


@pytest.mark.timeout(600)
def test_helm_upgrade_under_load_fails_no_request(
    cluster: Cluster, release: Release, priced: None, echo_backend: set[str]
) -> None:
    tag_images(STATE / "cluster", "upgrade")
    token = release.tokens["client-token"]
    http = no_keepalive(token)
    urls = release.urls

    def one(i: int) -> int:
        # Every service in turn, each a real API call.
        kind = i % 4
        if kind == 0:
            r = http.get(f"{urls['pricing']}/v1/products/k8s-fundamentals")
        elif kind == 1:
            r = http.get(f"{urls['ledger']}/v1/transactions", params={"limit": 1})
        elif kind == 2:
            r = http.get(f"{urls['enrollment']}/v1/cohorts/default/k8s-fundamentals-2027-spring")
        else:
            r = http.post(
                f"{urls['orchestrator']}/v1/chat/completions",
                json={"model": "cluster-echo", "messages": [{"role": "user", "content": "hi"}]},
            )
        if r.status_code != 200:
            raise AssertionError(f"{r.request.url} -> {r.status_code} {r.text[:200]}")
        return r.status_code

    jobs_before = {
        j.metadata.name: j.metadata.uid for j in cluster.batch.list_namespaced_job(NAMESPACE).items
    }
    started = time.monotonic()
    with Loop(one) as loop:
        eventually(lambda: loop.ok >= 8, "traffic flowing", 30)
        cluster.helm(
            *helm_install_args(
                "--set", "image.tag=upgrade",
                "--set", "services.pricing.env.AZORA_UPGRADE_MARK=2",
                "--set", "services.ledger.env.AZORA_UPGRADE_MARK=2",
            ),
            timeout=420,
        )  # fmt: skip
        for d in cluster.apps.list_namespaced_deployment(NAMESPACE).items:
            name = d.metadata.name
            if name.startswith(RELEASE):
                eventually(lambda n=name: deployment_restored(cluster, n), f"{name} rolled", 120)
        time.sleep(2)
    elapsed = time.monotonic() - started
    http.close()
    print(
        f"\n[cluster] helm upgrade under load: {loop.ok} requests ok, {len(loop.failed)} failed,"
        f" {elapsed:.0f}s",
        file=sys.stderr,
    )
    (STATE / "upgrade-result.json").write_text(
        json.dumps({"ok": loop.ok, "failed": len(loop.failed), "seconds": round(elapsed, 1)})
    )
    assert loop.failed == [], f"{loop.failed[:5]}; gateway's view: {_gateway_view(release)}"

    # The rollout completed: once the old pods have drained (preStop + graceful shutdown),
    # every pod of every Deployment runs the new tag.
    def old_pods() -> list[str]:
        return [
            p.metadata.name
            for p in cluster.core.list_namespaced_pod(NAMESPACE).items
            if p.metadata.name.startswith(RELEASE)
            and any(o.kind == "ReplicaSet" for o in p.metadata.owner_references or [])
            and not p.spec.containers[0].image.endswith(":upgrade")
        ]

    eventually(lambda: old_pods() == [], "the old pods gone", 90)
    # The migration hooks ran again (new Job objects, completed, with the new image).
    jobs = {j.metadata.name: j for j in cluster.batch.list_namespaced_job(NAMESPACE).items}
    for svc in ("enrollment", "ledger", "pricing", "orchestrator"):
        job = jobs[f"{RELEASE}-{svc}-migrate"]
        assert job.metadata.uid != jobs_before.get(job.metadata.name)
        assert (job.status.succeeded or 0) >= 1
        assert job.spec.template.spec.containers[0].image.endswith(":upgrade")
    env = cluster.apps.read_namespaced_deployment(f"{RELEASE}-pricing", NAMESPACE)
    names = {e.name: e.value for e in env.spec.template.spec.containers[0].env or []}
    assert names.get("AZORA_UPGRADE_MARK") == "2"


def _gateway_view(release: Release) -> str:
    """What the gateway says about the echo route (health and ejections per backend, merged
    across replicas): the first thing to read when a chat request failed during a rollout."""
    url = f"{release.urls['orchestrator']}/admin/v1/routes/{NAMESPACE}/cluster-echo/status"
    try:
        with httpx.Client(headers=bearer(release.tokens["admin-token"]), timeout=10) as http:
            r = http.get(url)
        return f"{r.status_code} {r.text[:2000]}"
    except httpx.HTTPError as exc:
        return f"unavailable ({exc!r})"
