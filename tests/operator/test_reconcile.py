"""Create/update/resume/delete against the real services (``azora_operator.reconcile``):
Ready, printer columns, generations, semantic rejections, the finalizer, and a service that is
gone for good (force annotation and timeout)."""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import json
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import kopf
import pytest
import yaml

from azora_devenv import LocalControlPlane
from azora_operator.kinds import ENROLLMENT_COHORT
from azora_operator.reconcile import Reconciler, backoff
from azora_operator.settings import OperatorSettings
from tests.operator.events import kopf_events
from tests.operator.kube import (
    ADMIN,
    EXAMPLES,
    OperatorProcess,
    admin_request,
    apply,
    apply_and_wait,
    condition,
    event_reasons,
    get_obj,
    kubectl_ok,
    printer_columns,
    stored,
    unique,
    wait_condition,
    wait_for,
)
from tests.operator.objects import ModelsHandler, cohort, route, rule
from tests.operator.test_client import OVERFLOW, answering, refused_url
from tests.support.services import API_TOKEN, ServiceProcess

FINALIZER = "azora.io/cleanup"


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    settings = OperatorSettings(backoff_base=0.5, backoff_max=3)
    assert [backoff(settings, retry) for retry in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff(settings, 10_000) == 3.0


def _new_cohort() -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": "azora.io/v1alpha1",
            "kind": "EnrollmentCohort",
            "metadata": {"namespace": "ns", "name": "c", "uid": "u", "generation": 1},
            "spec": {"course": "k8s", "title": "K", "capacity": 5, "refundWindow": "9999h"},
            "status": {},
        }
    )


async def _apply_against(url: str, retry: int) -> tuple[kopf.TemporaryError, kopf.Patch, Any]:
    settings = OperatorSettings(enrollment_url=url, backoff_base=1, backoff_max=8)
    reconciler, patch, body = Reconciler(settings), kopf.Patch(), _new_cohort()
    await reconciler.start()
    try:
        with kopf_events() as posted, pytest.raises(kopf.TemporaryError) as err:
            await reconciler.apply(ENROLLMENT_COHORT, body=body, patch=patch, retry=retry)
    finally:
        await reconciler.stop()
    return err.value, patch, posted


async def test_a_5xx_is_reported_as_a_service_error_not_as_unreachable() -> None:
    # The service answers, with a 500 and a problem: its own failure, named as such.
    async with answering(500, OVERFLOW) as url:
        err, patch, posted = await _apply_against(url, retry=2)
    ready, synced = patch["status"]["conditions"][:2]
    assert (ready["status"], ready["reason"], synced["reason"]) == (
        "False",
        "ServiceError",
        "ServiceError",
    )
    assert "enrollment-service failed" in ready["message"]
    assert "HTTP 500: OverflowError: date value out of range" in ready["message"]
    assert posted == [("Warning", "ServiceError")]
    assert err.delay == 4.0  # base·2^retry
    # bounded: retried with the backoff's cap however many times it failed
    async with answering(503, {"detail": "starting"}) as url:
        err, _, _ = await _apply_against(url, retry=40)
    assert err.delay == 8.0
    # A refused connection stays ServiceUnavailable.
    err, patch, _ = await _apply_against(refused_url(), retry=0)
    assert patch["status"]["conditions"][0]["reason"] == "ServiceUnavailable"
    assert "enrollment-service is unreachable" in patch["status"]["conditions"][0]["message"]


def _seed_catalog() -> ModuleType:
    path = EXAMPLES.parent / "hack" / "seed_catalog.py"
    spec = importlib.util.spec_from_file_location("seed_catalog", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("seed_catalog", module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _example_backends() -> Iterator[None]:
    """Real servers on the example routes' backend ports: a route is only Ready once a
    backend has answered (issue #13), so the examples need something there to answer."""
    ports = sorted(
        {
            int(urllib.parse.urlsplit(b["url"]).port or 80)
            for doc in yaml.safe_load_all((EXAMPLES / "aimodelroute.yaml").read_text())
            if doc
            for b in doc["spec"]["backends"]
        }
    )
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", p), ModelsHandler) for p in ports]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


@pytest.mark.e2e
def test_examples_become_live_with_printer_columns(
    kube: LocalControlPlane, services: dict[str, ServiceProcess], operator: OperatorProcess
) -> None:
    with _example_backends():
        _examples_become_live(kube, services)


def _examples_become_live(kube: LocalControlPlane, services: dict[str, ServiceProcess]) -> None:
    # As a user does: the catalog the priced example cohort needs (seeded by `make up` through
    # azora-pricing's REST API), then `kubectl apply -f examples/`.
    catalog = json.loads((EXAMPLES / "catalog" / "catalog.json").read_text())
    with httpx.Client(headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10) as client:
        _seed_catalog().seed_pricing(client, services["pricing"].url, catalog["pricing"])
    kubectl_ok(kube, "apply", "-f", str(EXAMPLES))
    examples = [
        (doc["kind"], doc["metadata"]["namespace"], doc["metadata"]["name"])
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["apiVersion"].startswith("azora.io/")
    ]
    assert {kind for kind, _, _ in examples} == set(ADMIN)
    # One per kind for the printer columns below; the tutor route for AIModelRoute.
    expected = {kind: (ns, name) for kind, ns, name in reversed(examples) if name != "embeddings"}
    for kind, ns, name in examples:
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

    ns, name = expected["PricingPolicy"]
    cols = printer_columns(kube, "pricingpolicies", ns, name)
    assert (cols["READY"], cols["CURRENCIES"]) == ("True", "CHF=half-up")
    ns, name = expected["EnrollmentCohort"]
    cols = printer_columns(kube, "enrollmentcohorts", ns, name)
    assert cols["READY"] == "True"
    assert cols["ENROLLED"] == "0/50"
    assert cols["WAITLIST"] == "0"
    ns, name = expected["AIModelRoute"]
    cols = printer_columns(kube, "aimodelroutes", ns, name)
    assert (cols["READY"], cols["BACKENDS"], cols["STRATEGY"]) == (
        "True",
        "2/2",
        "weighted-round-robin",
    )
    route_obj = get_obj(kube, "AIModelRoute", ns, name)
    assert route_obj is not None
    assert [b["name"] for b in route_obj["status"]["backends"]] == ["model-a", "model-b"]
    ns, name = expected["PricingRule"]
    cols = printer_columns(kube, "pricingrules", ns, name)
    assert (cols["READY"], cols["ACTIVE"], cols["REDEMPTIONS"]) == ("True", "true", "0/100")


@pytest.mark.e2e
def test_update_applies_the_new_generation(
    kube: LocalControlPlane, services: dict[str, ServiceProcess], operator: OperatorProcess, ns: str
) -> None:
    obj = cohort(ns, capacity=10)
    name, first = apply_and_wait(kube, obj)
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


@pytest.mark.e2e
def test_a_stale_generation_never_overwrites_a_newer_one(
    kube: LocalControlPlane, services: dict[str, ServiceProcess], operator: OperatorProcess, ns: str
) -> None:
    obj = rule(ns)
    name, live = apply_and_wait(kube, obj)
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


@pytest.mark.e2e
def test_a_spec_the_service_rejects_is_reported_once(
    kube: LocalControlPlane, services: dict[str, ServiceProcess], operator: OperatorProcess, ns: str
) -> None:
    first = route(ns)
    apply_and_wait(kube, first)
    # Valid for the schema, but the model is already served by another route.
    clash = route(ns, model=first["spec"]["model"])
    name, obj = apply_and_wait(kube, clash, status="False", reason="ModelConflict")
    ready = condition(obj, "Ready")
    assert ready is not None
    assert first["metadata"]["name"] in ready["message"]
    assert condition(obj, "Synced")["reason"] == "ModelConflict"  # type: ignore[index]
    assert stored(services, "AIModelRoute", ns, name) is None

    def reasons() -> list[str]:
        return event_reasons(kube, ns, name)

    wait_for(lambda: "ModelConflict" in reasons(), what="a ModelConflict Event")

    clash["spec"]["model"] = unique("model")  # the fix: a new generation is applied
    apply(kube, clash)
    wait_condition(kube, "AIModelRoute", ns, name, status="True", generation=2)
    # Meanwhile (several timer periods, each offering the refused spec again) the rejection was
    # reported once: an unchanged refusal is no new Event.
    assert reasons().count("ModelConflict") == 1
    assert wait_for(lambda: "Applied" in reasons(), what="an Applied Event")


@pytest.mark.e2e
def test_a_refusal_that_names_a_missing_dependency_heals_when_it_appears(
    kube: LocalControlPlane, services: dict[str, ServiceProcess], operator: OperatorProcess, ns: str
) -> None:
    # A priced cohort whose product azora-pricing does not know yet: refused (UnknownProduct),
    # then Ready without any change to the resource once the product exists, because the
    # resync offers a refused spec again.
    sku = unique("sku")
    obj = cohort(ns, pricing={"product": sku, "currency": "EUR"})
    name, _ = apply_and_wait(kube, obj, status="False", reason="UnknownProduct")
    product = {"name": sku, "prices": {"EUR": {"model": "perUnit", "unitAmount": 1000}}}
    req = urllib.request.Request(
        services["pricing"].url + f"/v1/products/{sku}",
        data=json.dumps(product).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201
    healed = wait_condition(kube, "EnrollmentCohort", ns, name, status="True")
    assert healed["metadata"]["generation"] == 1


@pytest.mark.e2e
def test_delete_removes_the_config_then_releases_the_finalizer(
    kube: LocalControlPlane, services: dict[str, ServiceProcess], operator: OperatorProcess, ns: str
) -> None:
    name, live = apply_and_wait(kube, cohort(ns))
    assert FINALIZER in live["metadata"]["finalizers"]
    assert stored(services, "EnrollmentCohort", ns, name) is not None
    kubectl_ok(kube, "delete", "enrollmentcohort", name, "-n", ns, "--wait=false")
    wait_for(lambda: get_obj(kube, "EnrollmentCohort", ns, name) is None, what="object gone")
    assert stored(services, "EnrollmentCohort", ns, name) is None


@pytest.mark.e2e
def test_a_service_gone_for_good_does_not_block_deletion(
    kube: LocalControlPlane, services: dict[str, ServiceProcess], operator: OperatorProcess, ns: str
) -> None:
    forced, waited = cohort(ns), cohort(ns)
    apply(kube, [forced, waited])
    for obj in (forced, waited):
        wait_condition(kube, "EnrollmentCohort", ns, obj["metadata"]["name"], status="True")
    svc = services["enrollment"]
    svc.stop()
    try:
        for obj in (forced, waited):
            kubectl_ok(
                kube,
                "delete",
                "enrollmentcohort",
                obj["metadata"]["name"],
                "-n",
                ns,
                "--wait=false",
            )
        forced_name, waited_name = forced["metadata"]["name"], waited["metadata"]["name"]
        kubectl_ok(
            kube,
            "annotate",
            "enrollmentcohort",
            forced_name,
            "-n",
            ns,
            "azora.io/force-delete=true",
        )
        wait_for(lambda: get_obj(kube, "EnrollmentCohort", ns, forced_name) is None, what="forced")
        assert "ForceDeleted" in event_reasons(kube, ns, forced_name)
        # The other one is released by the delete timeout (8 s in these tests).
        wait_for(
            lambda: get_obj(kube, "EnrollmentCohort", ns, waited_name) is None,
            timeout=60,
            what="released by the timeout",
        )
        assert "CleanupAbandoned" in event_reasons(kube, ns, waited_name)
        assert "ForceDeleted" not in event_reasons(kube, ns, waited_name)
    finally:
        svc.start()
    # The service kept what it could not be told to remove while it was down; the orphan
    # sweep (prune.py) removes it once it is back and the grace has passed.
    for obj in (forced, waited):
        wait_for(
            lambda o=obj: stored(services, "EnrollmentCohort", ns, o["metadata"]["name"]) is None,
            what="leftover pruned",
        )


@pytest.mark.e2e
def test_a_fallback_no_route_serves_is_a_degraded_route(
    kube: LocalControlPlane, services: dict[str, ServiceProcess], operator: OperatorProcess, ns: str
) -> None:
    missing = unique("model")
    name, _ = apply_and_wait(kube, route(ns, fallbacks=[missing]))

    def degraded(status: str) -> dict[str, Any] | None:
        got = condition(get_obj(kube, "AIModelRoute", ns, name), "Degraded")
        return got if got is not None and got["status"] == status else None

    warned = wait_for(lambda: degraded("True"), what="Degraded=True")
    assert warned["reason"] == "FallbackModelMissing"
    assert missing in warned["message"]
    # Ready stays True: the route itself serves its model.
    assert condition(get_obj(kube, "AIModelRoute", ns, name), "Ready")["status"] == "True"  # type: ignore[index]
    # A route for that model appears: the warning goes at the next resync.
    apply(kube, route(ns, model=missing))
    wait_for(lambda: degraded("False"), what="Degraded=False")
