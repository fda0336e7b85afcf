"""Kinds (``azora_operator.kinds``): the services' insight → status fields and columns."""

from __future__ import annotations

from azora_operator.kinds import AI_MODEL_ROUTE, ENROLLMENT_COHORT, PRICING_RULE
from azora_operator.status import live_conditions


def test_insight_becomes_printer_column_figures() -> None:
    cohort = ENROLLMENT_COHORT.insight_status(
        {"enrolled": 48, "capacity": 50, "waitlisted": 3, "pending_payment": 1, "open": True}
    )
    assert (cohort["seats"], cohort["waitlisted"], cohort["open"]) == ("48/50", 3, True)
    assert ENROLLMENT_COHORT.insight_status({"enrolled": 7, "capacity": None})["seats"] == "7/-"

    route = AI_MODEL_ROUTE.insight_status(
        {
            "strategy": "latency",
            "healthy": 1,
            "total": 2,
            "backends": [
                {"name": "a", "healthy": True, "in_flight": 2, "effective_weight": 3},
                {"name": "b", "healthy": False, "ejected_until": "2030-01-01T00:00:00Z"},
            ],
        }
    )
    assert route["backendsSummary"] == "1/2"
    assert route["backends"][1]["ejectedUntil"] == "2030-01-01T00:00:00Z"
    degraded = AI_MODEL_ROUTE.degradation(
        {"healthy": 1, "total": 2, "backends": [{"name": "a", "healthy": True}, {"name": "b"}]}
    )
    assert degraded is not None
    assert degraded.reason == "BackendsEjected"
    assert "b" in degraded.message
    # The orchestrator's insight says why (issue #13): a backend that never answered is
    # "unknown", not ejected, and a route with no healthy backend is not ready.
    insight = {
        "healthy": 0,
        "unknown": 2,
        "ejected": 1,
        "total": 3,
        "ready": False,
        "backends": [
            {"name": "a", "healthy": False, "health": "unknown"},
            {"name": "c", "healthy": False, "health": "unknown"},
            {"name": "b", "healthy": False, "health": "ejected"},
        ],
    }
    assert AI_MODEL_ROUTE.insight_status(insight)["backendsSummary"] == "0/3"
    honest = AI_MODEL_ROUTE.degradation(insight)
    assert honest is not None
    assert honest.message == "0/3 backends healthy; ejected: b; unknown: a, c"
    ready, degraded = live_conditions(AI_MODEL_ROUTE, insight, "live")
    assert (ready.status, ready.reason) == (False, "NoHealthyBackends")
    # Ready says why too: here not "every backend is ejected" (one is; two never answered).
    assert ready.message == "no backend is healthy: 0/3 backends healthy; ejected: b; unknown: a, c"
    assert (degraded.status, degraded.message) == (True, honest.message)

    rule = PRICING_RULE.insight_status(
        {"active": True, "redemptions": {"used": 12, "limit": 100, "remaining": 88}}
    )
    assert (rule["active"], rule["redemptionsSummary"]) == (True, "12/100")
    assert (
        PRICING_RULE.insight_status({"active": False, "redemptions": None})["redemptionsSummary"]
        == "-"
    )
    exhausted = PRICING_RULE.degradation({"redemptions": {"used": 5, "limit": 5, "remaining": 0}})
    assert exhausted is not None
    assert exhausted.reason == "RedemptionsExhausted"
