"""Kinds (``azora_operator.kinds``): the services' insight → status fields and columns."""

from __future__ import annotations

from azora_operator.kinds import AI_MODEL_ROUTE, ENROLLMENT_COHORT, PRICING_RULE


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
