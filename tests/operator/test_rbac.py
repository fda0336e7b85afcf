"""The operator runs as a ServiceAccount bound only to operator/deploy/clusterrole.yaml (see
conftest), not as an admin; it still works, and every permission of that role is used (read
from the API server's audit log of the operator's own requests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from azora_devenv import LocalControlPlane
from tests.operator.kube import (
    CLUSTERROLE,
    OPERATOR_NS,
    OPERATOR_SA,
    OPERATOR_USER,
    OperatorProcess,
    apply,
    get_obj,
    kubectl_ok,
    unique,
    wait_condition,
    wait_for,
)
from tests.operator.objects import cohort, route, rule, secret

pytestmark = pytest.mark.e2e


def _granted() -> set[tuple[str, str, str]]:
    role = yaml.safe_load(CLUSTERROLE.read_text())
    return {
        (group, resource, verb)
        for r in role["rules"]
        for group in r["apiGroups"]
        for resource in r["resources"]
        for verb in r["verbs"]
    }


def _used(audit_log: Path) -> tuple[set[tuple[str, str, str]], list[str]]:
    used: set[tuple[str, str, str]] = set()
    denied: list[str] = []
    for line in audit_log.read_text().splitlines():
        entry = json.loads(line)
        if entry["user"]["username"] != OPERATOR_USER:
            continue
        ref = entry.get("objectRef")
        if ref is None:
            continue  # discovery (/api, /apis): allowed to every authenticated user
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        response = entry.get("responseStatus", {})
        # Without a controller-manager a deleted namespace stays Terminating forever; writes
        # into it are refused with 403 whatever the role says: that is not an RBAC denial.
        if response.get("code") == 403 and "being terminated" not in response.get("message", ""):
            denied.append(f"{entry['verb']} {resource}")
        used.add((ref.get("apiGroup", ""), resource, entry["verb"]))
    return used, denied


def test_the_operator_is_not_an_admin(kube: LocalControlPlane) -> None:
    who = f"--as={OPERATOR_USER}"
    for verb, resource in (
        ("create", "pods"),
        ("delete", "pricingrules.azora.io"),
        ("create", "pricingrules.azora.io"),
        ("update", "secrets"),
        ("create", "clusterrolebindings"),
    ):
        result = kube.kubectl("auth", "can-i", verb, resource, who, "-A")
        assert result.stdout.strip() == "no", (verb, resource)
    assert kubectl_ok(kube, "get", "sa", OPERATOR_SA, "-n", OPERATOR_NS)


def test_the_shipped_role_is_exactly_what_the_operator_uses(
    kube: LocalControlPlane, operator: OperatorProcess, audit_log: Path
) -> None:
    ns = unique("rbac")
    kubectl_ok(kube, "create", "namespace", ns)
    rt = route(ns)
    rt["spec"]["backends"][0]["apiKeySecretRef"] = {"name": "key", "key": "k"}
    policy = {
        "apiVersion": "azora.io/v1alpha1",
        "kind": "PricingPolicy",
        "metadata": {"name": unique("policy"), "namespace": ns},
        "spec": {"rounding": {"SEK": "half-even"}},
    }
    objs = [secret(ns, "key", k="v1"), rule(ns), rt, cohort(ns), policy]
    apply(kube, objs)
    for obj in objs[1:]:
        wait_condition(kube, obj["kind"], ns, obj["metadata"]["name"], status="True")
    apply(kube, secret(ns, "key", k="v2"))
    c = objs[3]
    kubectl_ok(kube, "delete", "enrollmentcohort", c["metadata"]["name"], "-n", ns, "--wait=false")
    wait_for(lambda: get_obj(kube, "EnrollmentCohort", ns, c["metadata"]["name"]) is None)

    granted = _granted()
    seen: list[tuple[set[tuple[str, str, str]], list[str]]] = []

    def all_used() -> bool:
        seen.append(_used(audit_log))
        return granted <= seen[-1][0]

    wait_for(all_used, what="every granted permission used", interval=0.5)
    used, denied = seen[-1]
    assert denied == []
    assert "Forbidden" not in operator.log()
    assert used - granted == set()  # nothing used beyond the role (it would have been denied)
    assert granted - used == set()  # nothing granted that is not used
