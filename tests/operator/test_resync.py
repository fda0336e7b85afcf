"""Drift repair and live insight (``azora_operator.resync``): what the timer decides, when it
writes, and the real thing against the services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest

from azora_devenv import LocalControlPlane
from azora_operator.client import ServiceUnavailable
from azora_operator.kinds import AI_MODEL_ROUTE, PRICING_RULE
from azora_operator.resync import resync, status_differs
from tests.operator.events import kopf_events
from tests.operator.kube import (
    OperatorProcess,
    admin_request,
    apply,
    apply_and_wait,
    event_reasons,
    get_obj,
    stored,
    wait_condition,
    wait_for,
)
from tests.operator.objects import cohort, rule
from tests.support.services import ServiceProcess


class _Service:
    """An admin client that answers ``insight`` with a fixed answer (or is unreachable)."""

    def __init__(self, insight: dict[str, Any] | Exception | None) -> None:
        self.answer = insight
        self.asked = 0

    async def insight(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.asked += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class _Reconciler:
    """What :func:`resync` uses of the Reconciler: its client, and apply (recorded)."""

    def __init__(self, service: _Service) -> None:
        self.service = service
        self.applied: list[bool] = []
        self.replaced: list[int | None] = []

    def client(self, kind: object) -> _Service:
        return self.service

    async def apply(
        self, kind: object, *, drift: bool, replaced_revision: int | None = None, **_: Any
    ) -> None:
        self.applied.append(drift)
        self.replaced.append(replaced_revision)

    async def missing_fallbacks(self, kind: object, spec: object) -> list[str]:
        return []


def _synced_rule(
    generation: int = 2,
    observed: int = 2,
    synced: str = "True",
    reason: str = "Applied",
    applied_revision: int = 7,
) -> kopf.Body:
    conditions = [
        {"type": "Ready", "status": synced, "reason": reason},
        {"type": "Synced", "status": synced, "reason": reason},
    ]
    return kopf.Body(
        {
            "apiVersion": "azora.io/v1alpha1",
            "kind": "PricingRule",
            "metadata": {"namespace": "ns", "name": "r", "uid": "u", "generation": generation},
            "spec": {},
            "status": {
                "conditions": conditions,
                "observedGeneration": observed,
                "appliedRevision": applied_revision,
            },
        }
    )


async def _resync(body: kopf.Body, service: _Service) -> tuple[_Reconciler, kopf.Patch, list[Any]]:
    reconciler, patch = _Reconciler(service), kopf.Patch()
    with kopf_events() as posted:
        await resync(reconciler, PRICING_RULE, body=body, patch=patch)  # type: ignore[arg-type]
    return reconciler, patch, posted


async def test_resync_leaves_to_the_change_handlers_what_is_theirs() -> None:
    never_applied = _synced_rule()
    del never_applied["status"]["conditions"]
    in_flight = _synced_rule(generation=3, observed=2)  # the update's apply has not reported
    for body in (never_applied, in_flight):
        service = _Service(None)
        reconciler, patch, posted = await _resync(body, service)
        assert (service.asked, reconciler.applied, dict(patch), posted) == (0, [], {}, [])


async def test_resync_offers_a_refused_spec_again() -> None:
    # A refusal may name something outside the spec that appears later (UnknownProduct): the
    # same generation is offered again, without asking the service for its status first, and
    # not as drift.
    rejected = _synced_rule(synced="False", reason="UnknownProduct")
    service = _Service(None)
    reconciler, _, posted = await _resync(rejected, service)
    assert (service.asked, reconciler.applied, posted) == (0, [False], [])


async def test_resync_repairs_drift_and_copies_live_figures() -> None:
    # Lost by the service (a database restore): applied again, as drift.
    reconciler, _, _ = await _resync(_synced_rule(), _Service(None))
    assert reconciler.applied == [True]
    # Behind: the same. A ServiceUnavailable apply is retried, but it was no drift.
    reconciler, _, _ = await _resync(_synced_rule(), _Service({"generation": 1}))
    assert reconciler.applied == [True]
    unavailable = _synced_rule(synced="False", reason="ServiceUnavailable")
    reconciler, _, _ = await _resync(unavailable, _Service(None))
    assert reconciler.applied == [False]
    # Ahead (our view lags behind an update): nothing.
    reconciler, patch, _ = await _resync(_synced_rule(), _Service({"generation": 3}))
    assert (reconciler.applied, dict(patch)) == ([], {})
    # The same generation: live figures and conditions, no Event when nothing changed.
    live = {"generation": 2, "revision": 7, "active": True, "redemptions": None}
    reconciler, patch, posted = await _resync(_synced_rule(), _Service(live))
    assert reconciler.applied == []
    assert (patch["status"]["appliedRevision"], patch["status"]["active"]) == (7, True)
    assert patch["status"]["conditions"][0]["message"] == (
        "generation 2 is live in azora-pricing as revision 7"
    )
    assert posted == []


async def test_resync_resends_a_config_rewritten_at_the_same_generation() -> None:
    # The service holds our generation at another revision than our last apply got: someone
    # wrote it since. The same PUT again; the service tells a replay from a changed content.
    live = {"generation": 2, "revision": 9, "active": True, "redemptions": None}
    reconciler, patch, _ = await _resync(_synced_rule(applied_revision=7), _Service(live))
    assert (reconciler.applied, reconciler.replaced) == ([True], [9])
    assert dict(patch) == {}


async def test_resync_reports_an_unreachable_service_once() -> None:
    _, patch, posted = await _resync(_synced_rule(), _Service(ServiceUnavailable("GET: timed out")))
    ready = patch["status"]["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "ServiceUnavailable")
    assert posted == [("Warning", "ServiceUnavailable")]
    already = _synced_rule(synced="False", reason="ServiceUnavailable")
    _, patch, posted = await _resync(already, _Service(ServiceUnavailable("GET: timed out")))
    assert (dict(patch), posted) == ({}, [])


def test_resync_writes_status_only_when_a_reader_would_see_a_change() -> None:
    now = datetime.now(UTC)
    fresh = (now - timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    stale = (now - timedelta(seconds=400)).strftime("%Y-%m-%dT%H:%M:%SZ")
    insight = {
        "backends": [{"name": "a", "healthy": True, "ejected_until": None, "effective_weight": 2.0}]
    }
    figures = AI_MODEL_ROUTE.insight_status(insight)
    # As the API server stores it: nulls inside list items pruned, 2.0 read back as 2.
    current = {
        "lastSyncTime": fresh,
        **figures,
        "backends": [{**figures["backends"][0], "effectiveWeight": 2}],
    }
    written = {"lastSyncTime": "2030-01-01T00:00:00Z", **figures}
    assert not status_differs(current, written, heartbeat=300)
    # A merge-patch null equals an absent field.
    assert not status_differs(current, {"redemptions": None}, heartbeat=300)
    # A changed figure is written, and so is the heartbeat once it is due.
    assert status_differs(current, {**written, "healthyBackends": 0}, heartbeat=300)
    assert status_differs({**current, "lastSyncTime": stale}, written, heartbeat=300)
    assert status_differs({k: v for k, v in current.items() if k != "lastSyncTime"}, written, 300)


@pytest.mark.e2e
def test_drift_is_repaired_by_the_timer(
    kube: LocalControlPlane, services: dict[str, ServiceProcess], operator: OperatorProcess, ns: str
) -> None:
    name, _ = apply_and_wait(kube, rule(ns))
    # Behind the operator's back (e.g. a database restored from an old backup):
    status, _ = admin_request(
        services["pricing"].url, "DELETE", f"/admin/v1/pricing-rules/{ns}/{name}"
    )
    assert status == 204
    assert stored(services, "PricingRule", ns, name) is None
    item = wait_for(lambda: stored(services, "PricingRule", ns, name), what="rule restored")
    assert item["generation"] == 1
    assert item["spec"]["action"] == {"percentOff": "10"}
    wait_for(lambda: "DriftRepaired" in event_reasons(kube, ns, name), what="DriftRepaired Event")


@pytest.mark.e2e
def test_a_spec_changed_behind_the_operators_back_at_the_same_generation_is_repaired(
    kube: LocalControlPlane, services: dict[str, ServiceProcess], operator: OperatorProcess, ns: str
) -> None:
    name, live = apply_and_wait(kube, rule(ns))
    meta = live["metadata"]
    # Same uid, same generation, another spec: the generation alone cannot tell.
    status, body = admin_request(
        services["pricing"].url,
        "PUT",
        f"/admin/v1/pricing-rules/{ns}/{name}",
        {
            "generation": meta["generation"],
            "uid": meta["uid"],
            "spec": {**live["spec"], "action": {"percentOff": "90"}},
        },
    )
    assert status == 200, body
    wait_for(
        lambda: (
            (stored(services, "PricingRule", ns, name) or {})["spec"]["action"]
            == {"percentOff": "10"}
        ),
        what="our spec back",
    )
    wait_for(lambda: "DriftRepaired" in event_reasons(kube, ns, name), what="DriftRepaired Event")
    item = stored(services, "PricingRule", ns, name)
    assert item is not None

    def recorded() -> dict[str, Any] | None:
        got = get_obj(kube, "PricingRule", ns, name)
        return got if got and got["status"].get("appliedRevision") == item["revision"] else None

    got = wait_for(recorded, what="status records the repaired revision")
    assert got["status"]["conditions"][0]["status"] == "True"
    # Steady again: no further re-apply (a replay would keep the revision anyway).
    assert stored(services, "PricingRule", ns, name) == item


def _resynced(operator: OperatorProcess, kind: str) -> float:
    prefix = f'azora_operator_reconciles_total{{kind="{kind}",result="resynced"}} '
    for line in operator.metrics().splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


@pytest.mark.e2e
def test_resync_leaves_an_unchanged_status_alone(
    kube: LocalControlPlane, services: dict[str, ServiceProcess], operator: OperatorProcess, ns: str
) -> None:
    name, ready = apply_and_wait(kube, rule(ns))
    version = ready["metadata"]["resourceVersion"]
    # Every resync pass counts each Ready rule once, so growth beyond twice the number of
    # rules means at least one whole pass ran after this point.
    rules = kube.request("GET", "/apis/azora.io/v1alpha1/pricingrules").json()["items"]
    start = _resynced(operator, "PricingRule")
    wait_for(
        lambda: _resynced(operator, "PricingRule") > start + 2 * len(rules),
        what="two resync passes",
    )
    # It compared the rule with the service but wrote nothing: no PATCH, no watch event.
    after = get_obj(kube, "PricingRule", ns, name)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == version
    assert after["status"]["lastSyncTime"] == ready["status"]["lastSyncTime"]


@pytest.mark.e2e
def test_service_down_is_reported_and_recovers_by_itself(
    kube: LocalControlPlane, services: dict[str, ServiceProcess], operator: OperatorProcess, ns: str
) -> None:
    existing = cohort(ns)
    apply_and_wait(kube, existing)
    svc = services["enrollment"]
    svc.stop()
    try:
        fresh = cohort(ns)
        apply(kube, fresh)
        for obj in (existing, fresh):
            got = wait_condition(
                kube,
                "EnrollmentCohort",
                ns,
                obj["metadata"]["name"],
                status="False",
                reason="ServiceUnavailable",
            )
            assert "enrollment-service is unreachable" in got["status"]["conditions"][0]["message"]
    finally:
        svc.start()
    for obj in (existing, fresh):
        wait_condition(kube, "EnrollmentCohort", ns, obj["metadata"]["name"], status="True")
    assert stored(services, "EnrollmentCohort", ns, fresh["metadata"]["name"]) is not None
