"""Status and Events (``azora_operator.status``): conditions from live insight, the complete
status a writer puts into the patch, and Events on transitions only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from azora_operator.conditions import Condition
from azora_operator.kinds import AI_MODEL_ROUTE, ENROLLMENT_COHORT, PRICING_RULE
from azora_operator.status import (
    event_on_change,
    live_conditions,
    resource_state,
    seconds_since,
    write_status,
)
from tests.operator.events import kopf_events

META = {"namespace": "ns", "name": "x", "generation": 3, "uid": "u"}


def _body(status: dict[str, Any]) -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": "azora.io/v1alpha1",
            "kind": "PricingRule",
            "metadata": META,
            "status": status,
        }
    )


def test_live_insight_refines_ready_and_degraded() -> None:
    healthy = {"healthy": 2, "total": 2, "backends": [{"name": "a", "healthy": True}]}
    ready, degraded = live_conditions(AI_MODEL_ROUTE, healthy, "live")
    assert (ready.status, ready.reason, ready.message) == (True, "Applied", "live")
    assert (degraded.status, degraded.reason) == (False, "AsExpected")

    none_left = {"healthy": 0, "total": 1, "backends": [{"name": "a", "healthy": False}]}
    ready, degraded = live_conditions(AI_MODEL_ROUTE, none_left, "live")
    assert (ready.status, ready.reason) == (False, "NoHealthyBackends")
    assert (degraded.status, degraded.reason) == (True, "BackendsEjected")

    used_up = {"redemptions": {"used": 5, "limit": 5, "remaining": 0}}
    assert live_conditions(PRICING_RULE, used_up, "live")[1].reason == "RedemptionsExhausted"
    # No insight (the service did not answer after the PUT): Applied, nothing known to be wrong.
    ready, degraded = live_conditions(ENROLLMENT_COHORT, None, "live")
    assert (ready.status, degraded.status) == (True, False)


def test_write_status_puts_the_complete_status_into_the_patch() -> None:
    patch = kopf.Patch()
    old = [
        {
            "type": "Synced",
            "status": "True",
            "reason": "Applied",
            "message": "m",
            "lastTransitionTime": "2030-01-01T00:00:00Z",
            "observedGeneration": 2,
        }
    ]
    written = write_status(
        PRICING_RULE,
        META,
        {"conditions": old},
        patch,
        [Condition("Ready", False, "ServiceUnavailable", "down")],
        generation=3,
        extra={"active": True},
    )
    # A merge patch replaces lists whole: the untouched Synced entry is written too.
    assert [c["type"] for c in patch["status"]["conditions"]] == ["Ready", "Synced"]
    assert patch["status"]["conditions"] == written
    assert patch["status"]["observedGeneration"] == 3
    assert patch["status"]["active"] is True
    assert seconds_since(patch["status"]["lastSyncTime"]) < 60
    assert resource_state(written) == "NotReady"


def test_resource_state_orders_not_ready_before_degraded() -> None:
    def conds(ready: str, degraded: str) -> list[dict[str, Any]]:
        return [{"type": "Ready", "status": ready}, {"type": "Degraded", "status": degraded}]

    assert resource_state(conds("True", "False")) == "Ready"
    assert resource_state(conds("True", "True")) == "Degraded"
    assert resource_state(conds("False", "True")) == "NotReady"
    assert resource_state([]) == "NotReady"


async def test_events_are_posted_on_transitions_only() -> None:
    ready = [{"type": "Ready", "status": "True", "reason": "Applied"}]
    same = {"conditions": ready, "observedGeneration": 3}
    with kopf_events() as posted:
        event_on_change(_body(same), same, Condition("Ready", True, "Applied", "m"), generation=3)
    assert posted == []
    with kopf_events() as posted:
        down = Condition("Ready", False, "ServiceUnavailable", "down")
        event_on_change(_body(same), same, down, generation=3)
        newer = Condition("Ready", True, "Applied", "m")
        event_on_change(_body(same), same, newer, generation=4)
    assert posted == [("Warning", "ServiceUnavailable"), ("Normal", "Applied")]


def test_seconds_since_reads_api_server_timestamps() -> None:
    then = (datetime.now(UTC) - timedelta(seconds=90)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert 89 <= seconds_since(then) < 120
    assert seconds_since(None) == 0.0
    assert seconds_since("not a time", missing=float("inf")) == float("inf")
