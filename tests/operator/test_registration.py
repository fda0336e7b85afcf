"""Wiring (``azora_operator.registration``): which handlers and timers each kind gets, and
the operator as a whole: a restart mid-way converges, metrics are served."""

from __future__ import annotations

import pytest
from kopf._core.intents.handlers import TimerHandler

from azora_devenv import LocalControlPlane
from azora_operator.kinds import KINDS
from azora_operator.registration import SETTLE_SECONDS, build_registry
from azora_operator.settings import OperatorSettings
from tests.operator.kube import (
    OperatorProcess,
    apply,
    event_reasons,
    get_obj,
    kubectl_ok,
    stored,
    wait_condition,
    wait_for,
)
from tests.operator.objects import cohort, route, rule
from tests.support.services import ServiceProcess


def test_every_kind_gets_change_handlers_and_one_resync_timer() -> None:
    settings = OperatorSettings(resync_interval=7, resync_initial_delay=2, backoff_max=9)
    registry, _ = build_registry(settings)
    for kind in KINDS:
        changing = [
            h for h in registry._changing.get_all_handlers() if h.selector.any_name == kind.plural
        ]
        assert sorted({h.id for h in changing}) == ["apply", "apply/spec", "remove"]
        assert {h.backoff for h in changing} == {9}
        timers = [
            h for h in registry._spawning.get_all_handlers() if h.selector.any_name == kind.plural
        ]
        assert len(timers) == 1
        timer = timers[0]
        assert isinstance(timer, TimerHandler)
        assert (timer.id, timer.interval, timer.initial_delay) == ("resync", 7, 2)
        assert (timer.idle, timer.backoff) == (SETTLE_SECONDS, 7)
    # The only index left is the Secret → routes one (no per-kind copies of every object).
    assert [h.id for h in registry._indexing.get_all_handlers()] == ["route_secrets"]


# Before the restart below: a restarted operator starts its counters from zero.
@pytest.mark.e2e
def test_metrics_count_reconciles_and_resources(
    kube: LocalControlPlane, operator: OperatorProcess, ns: str
) -> None:
    # Its own resources, so the counters have something to count whatever ran before.
    made = (rule(ns), cohort(ns))
    apply(kube, list(made))
    for obj in made:
        wait_condition(kube, obj["kind"], ns, obj["metadata"]["name"], status="True")
    text = operator.metrics()
    assert 'azora_operator_reconciles_total{kind="EnrollmentCohort",result="applied"}' in text
    assert "azora_operator_reconcile_duration_seconds_bucket" in text
    assert 'azora_operator_resources{condition="Ready",kind="PricingRule"}' in text


@pytest.mark.e2e
def test_operator_restarted_midway_converges_without_duplicate_effects(
    kube: LocalControlPlane,
    services: dict[str, ServiceProcess],
    operator: OperatorProcess,
    ns: str,
) -> None:
    kept, changed, doomed = rule(ns), route(ns), cohort(ns)
    apply(kube, [kept, changed, doomed])
    before = {
        o["kind"]: wait_condition(kube, o["kind"], ns, o["metadata"]["name"], status="True")
        for o in (kept, changed, doomed)
    }
    operator.kill()  # SIGKILL: no graceful shutdown, like a crashed pod
    try:
        changed["spec"]["strategy"] = "latency"
        apply(kube, changed)
        kubectl_ok(
            kube, "delete", "enrollmentcohort", doomed["metadata"]["name"], "-n", ns, "--wait=false"
        )
        # While the operator is down nothing happens: the finalizer holds the cohort.
        assert get_obj(kube, "EnrollmentCohort", ns, doomed["metadata"]["name"]) is not None
    finally:
        operator.start()

    after = wait_condition(
        kube, "AIModelRoute", ns, changed["metadata"]["name"], status="True", generation=2
    )
    assert after["status"]["appliedRevision"] > before["AIModelRoute"]["status"]["appliedRevision"]
    wait_for(
        lambda: get_obj(kube, "EnrollmentCohort", ns, doomed["metadata"]["name"]) is None,
        what="deleted cohort released",
    )
    assert stored(services, "EnrollmentCohort", ns, doomed["metadata"]["name"]) is None
    # The untouched rule was resumed: re-sent with the same generation, the service kept the
    # same revision (no new effect), and the operator reported nothing new.
    item = stored(services, "PricingRule", ns, kept["metadata"]["name"])
    assert item is not None
    assert item["revision"] == before["PricingRule"]["status"]["appliedRevision"]
    resumed = get_obj(kube, "PricingRule", ns, kept["metadata"]["name"])
    assert resumed is not None
    assert resumed["status"]["appliedRevision"] == item["revision"]
    assert event_reasons(kube, ns, kept["metadata"]["name"]).count("Applied") == 1
