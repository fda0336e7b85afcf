"""Create/update/resume against the real services: Ready, printer columns, generations,
semantic rejections, Secrets (resolved, rotated, never leaked)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
import yaml

from azora_devenv import LocalControlPlane
from tests.operator.kube import (
    EXAMPLES,
    OperatorProcess,
    admin_request,
    apply,
    condition,
    get_obj,
    kubectl_ok,
    printer_columns,
    unique,
    wait_condition,
    wait_for,
)
from tests.operator.objects import cohort, route, rule, secret
from tests.support.pg import PostgresServer
from tests.support.services import ServiceProcess

pytestmark = pytest.mark.e2e

ADMIN = {"PricingRule": "pricing-rules", "AIModelRoute": "routes", "EnrollmentCohort": "cohorts"}
SERVICE = {
    "PricingRule": "pricing",
    "AIModelRoute": "orchestrator",
    "EnrollmentCohort": "enrollment",
}


def stored(
    services: dict[str, ServiceProcess], kind: str, ns: str, name: str
) -> dict[str, Any] | None:
    status, body = admin_request(services[SERVICE[kind]].url, "GET", f"/admin/v1/{ADMIN[kind]}")
    assert status == 200, body
    assert body is not None
    for item in body["items"]:
        if item["namespace"] == ns and item["name"] == name:
            return dict(item)
    return None


@pytest.fixture
def ns(kube: LocalControlPlane) -> str:
    name = unique("op")
    kubectl_ok(kube, "create", "namespace", name)
    return name


def test_examples_become_live_with_printer_columns(
    kube: LocalControlPlane, services: dict[str, ServiceProcess], operator: OperatorProcess
) -> None:
    kubectl_ok(kube, "apply", "-f", str(EXAMPLES))
    expected = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["apiVersion"].startswith("azora.io/"):
                expected[doc["kind"]] = (doc["metadata"]["namespace"], doc["metadata"]["name"])
    assert set(expected) == set(ADMIN)
    for kind, (ns, name) in expected.items():
        obj = wait_condition(kube, kind, ns, name, status="True")
        item = stored(services, kind, ns, name)
        assert item is not None
        assert item["generation"] == obj["metadata"]["generation"]
        assert item["uid"] == obj["metadata"]["uid"]
        assert obj["status"]["appliedRevision"] == item["revision"]
        assert {c["type"] for c in obj["status"]["conditions"]} == {"Ready", "Synced", "Degraded"}
        for cond in obj["status"]["conditions"]:
            assert cond["observedGeneration"] == obj["metadata"]["generation"]
            assert cond["lastTransitionTime"].endswith("Z")

    ns, name = expected["EnrollmentCohort"]
    cols = printer_columns(kube, "enrollmentcohorts", ns, name)
    assert cols["READY"] == "True"
    assert cols["ENROLLED"] == "0/50"
    assert cols["WAITLIST"] == "0"
    ns, name = expected["AIModelRoute"]
    cols = printer_columns(kube, "aimodelroutes", ns, name)
    assert (cols["READY"], cols["BACKENDS"], cols["STRATEGY"]) == ("True", "3/3", "least-request")
    route_obj = get_obj(kube, "AIModelRoute", ns, name)
    assert route_obj is not None
    assert [b["name"] for b in route_obj["status"]["backends"]] == ["vllm-a", "vllm-b", "hosted"]
    ns, name = expected["PricingRule"]
    cols = printer_columns(kube, "pricingrules", ns, name)
    assert (cols["READY"], cols["ACTIVE"], cols["REDEMPTIONS"]) == ("True", "true", "0/100")


def test_update_applies_the_new_generation(
    kube: LocalControlPlane, services: dict[str, ServiceProcess], operator: OperatorProcess, ns: str
) -> None:
    obj = cohort(ns, capacity=10)
    apply(kube, obj)
    name = obj["metadata"]["name"]
    first = wait_condition(kube, "EnrollmentCohort", ns, name, status="True")
    assert first["status"]["seats"] == "0/10"

    obj["spec"]["capacity"] = 30
    apply(kube, obj)
    second = wait_condition(kube, "EnrollmentCohort", ns, name, status="True", generation=2)
    assert second["status"]["seats"] == "0/30"
    assert second["status"]["appliedRevision"] > first["status"]["appliedRevision"]
    item = stored(services, "EnrollmentCohort", ns, name)
    assert item is not None
    assert (item["generation"], item["spec"]["capacity"]) == (2, 30)
    ready = condition(second, "Ready")
    assert ready is not None
    # Ready stayed True across the update: its transition time did not move.
    assert ready["lastTransitionTime"] == condition(first, "Ready")["lastTransitionTime"]  # type: ignore[index]


def test_a_stale_generation_never_overwrites_a_newer_one(
    kube: LocalControlPlane, services: dict[str, ServiceProcess], operator: OperatorProcess, ns: str
) -> None:
    obj = rule(ns)
    apply(kube, obj)
    name = obj["metadata"]["name"]
    live = wait_condition(kube, "PricingRule", ns, name, status="True")
    uid = live["metadata"]["uid"]
    # Someone newer (another operator replica acting on a later event) already stored gen 50.
    newer_spec = {**live["spec"], "action": {"percentOff": "50"}}
    status, body = admin_request(
        services["pricing"].url,
        "PUT",
        f"/admin/v1/pricing-rules/{ns}/{name}",
        {"generation": 50, "uid": uid, "spec": newer_spec},
    )
    assert status == 200, body
    # Our operator now applies generation 2, which is older than what the service holds.
    obj["spec"]["action"] = {"percentOff": "20"}
    apply(kube, obj)

    def settled() -> dict[str, Any] | None:
        got = get_obj(kube, "PricingRule", ns, name)
        return (
            got
            if got and got["metadata"]["generation"] == 2 and "stale" in operator.log()
            else None
        )

    wait_for(settled, what="operator saw the stale generation")
    item = stored(services, "PricingRule", ns, name)
    assert item is not None
    assert item["generation"] == 50
    assert item["spec"]["action"] == {"percentOff": "50"}


def test_a_spec_the_service_rejects_is_reported_not_retried(
    kube: LocalControlPlane, services: dict[str, ServiceProcess], operator: OperatorProcess, ns: str
) -> None:
    first = route(ns)
    apply(kube, first)
    wait_condition(kube, "AIModelRoute", ns, first["metadata"]["name"], status="True")
    # Valid for the schema, but the model is already served by another route.
    clash = route(ns, model=first["spec"]["model"])
    apply(kube, clash)
    name = clash["metadata"]["name"]
    obj = wait_condition(kube, "AIModelRoute", ns, name, status="False", reason="ModelConflict")
    ready = condition(obj, "Ready")
    assert ready is not None
    assert first["metadata"]["name"] in ready["message"]
    assert condition(obj, "Synced")["reason"] == "ModelConflict"  # type: ignore[index]
    assert stored(services, "AIModelRoute", ns, name) is None

    def reasons() -> list[str]:
        events = kubectl_ok(
            kube,
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            f"involvedObject.name={name}",
            "-o",
            "json",
        )
        return [e["reason"] for e in json.loads(events)["items"]]

    wait_for(lambda: "ModelConflict" in reasons(), what="a ModelConflict Event")

    clash["spec"]["model"] = unique("model")  # the fix: a new generation is applied
    apply(kube, clash)
    wait_condition(kube, "AIModelRoute", ns, name, status="True", generation=2)
    # Meanwhile (several retry and timer periods) the rejection was reported once, not retried.
    assert reasons().count("ModelConflict") == 1
    assert wait_for(lambda: "Applied" in reasons(), what="an Applied Event")


async def _stored_api_keys(pg: PostgresServer, ns: str, name: str) -> list[str | None]:
    conn = await asyncpg.connect(pg.url("azora_op_orchestrator"))
    try:
        raw = await conn.fetchval(
            "SELECT spec FROM routes WHERE namespace = $1 AND name = $2", ns, name
        )
    finally:
        await conn.close()
    spec = json.loads(raw) if isinstance(raw, str) else raw
    return [b.get("apiKey") for b in spec["backends"]]


async def test_secret_is_resolved_rotated_and_never_leaked(
    kube: LocalControlPlane,
    services: dict[str, ServiceProcess],
    operator: OperatorProcess,
    pg: PostgresServer,
    ns: str,
) -> None:
    key1, key2 = "sk-" + unique("first-key"), "sk-" + unique("second-key")
    obj = route(ns)
    obj["spec"]["backends"][1]["apiKeySecretRef"] = {"name": "llm", "key": "token"}
    name = obj["metadata"]["name"]
    apply(kube, obj)
    # The Secret does not exist yet: reported, and picked up once it appears.
    await asyncio.to_thread(
        wait_condition, kube, "AIModelRoute", ns, name, status="False", reason="SecretNotFound"
    )
    apply(kube, secret(ns, "llm", token=key1))
    await asyncio.to_thread(wait_condition, kube, "AIModelRoute", ns, name, status="True")
    assert await _stored_api_keys(pg, ns, name) == [None, key1]

    apply(kube, secret(ns, "llm", token=key2))  # rotation re-sends the route

    async def rotated() -> bool:
        for _ in range(300):
            if await _stored_api_keys(pg, ns, name) == [None, key2]:
                return True
            await asyncio.sleep(0.1)
        return False

    assert await rotated()
    everything = "\n".join(
        [
            kubectl_ok(kube, "get", "aimodelroute", name, "-n", ns, "-o", "yaml"),
            kubectl_ok(kube, "get", "events", "-n", ns, "-o", "yaml"),
            operator.log(),
        ]
    )
    assert key1 not in everything
    assert key2 not in everything


def test_metrics_count_reconciles_and_resources(operator: OperatorProcess) -> None:
    text = operator.metrics()
    assert 'azora_operator_reconciles_total{kind="EnrollmentCohort",result="applied"}' in text
    assert "azora_operator_reconcile_duration_seconds_bucket" in text
    assert 'azora_operator_resources{condition="Ready",kind="PricingRule"}' in text
