"""Pure pieces of the operator: conditions, insight → status, problem parsing, CRD docs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from azora_operator.client import _reason_from_problem
from azora_operator.conditions import Condition, merge_conditions
from azora_operator.crddocs import render
from azora_operator.handlers import _status_differs
from azora_operator.kinds import AI_MODEL_ROUTE, ENROLLMENT_COHORT, PRICING_RULE

ROOT = Path(__file__).resolve().parents[2]


def test_transition_time_moves_only_when_status_flips() -> None:
    first = merge_conditions(
        None, [Condition("Ready", True, "Applied", "a")], generation=1, now="2030-01-01T00:00:00Z"
    )
    same = merge_conditions(
        first, [Condition("Ready", True, "Applied", "b")], generation=2, now="2030-01-02T00:00:00Z"
    )
    assert same[0]["lastTransitionTime"] == "2030-01-01T00:00:00Z"
    assert (same[0]["message"], same[0]["observedGeneration"]) == ("b", 2)
    flipped = merge_conditions(
        same,
        [Condition("Ready", False, "ServiceUnavailable", "c")],
        generation=2,
        now="2030-01-03T00:00:00Z",
    )
    assert flipped[0]["lastTransitionTime"] == "2030-01-03T00:00:00Z"
    assert flipped[0]["status"] == "False"


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Ready", "Synced", "Degraded", "Other"]),
            st.sampled_from([True, False, None]),
        ),
        max_size=8,
    )
)
def test_merge_keeps_one_entry_per_type_in_a_stable_order(
    updates: list[tuple[str, bool | None]],
) -> None:
    conditions: list[dict[str, Any]] = []
    for type_, status in updates:
        conditions = merge_conditions(
            conditions, [Condition(type_, status, "R", "m")], generation=1
        )
    types = [str(c["type"]) for c in conditions]
    assert len(types) == len(set(types)) == len({t for t, _ in updates})
    order = {"Ready": 0, "Synced": 1, "Degraded": 2, "Other": 3}
    assert types == sorted(types, key=order.__getitem__)


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


def test_problem_reason_falls_back_to_the_type_slug() -> None:
    assert _reason_from_problem({"reason": "InvalidTiers", "detail": "x"}, 422) == (
        "InvalidTiers",
        "x",
    )
    reason, detail = _reason_from_problem(
        {
            "type": "https://azora.io/problems/validation-error",
            "detail": "bad",
            "errors": [{"field": "spec.x", "reason": "too big"}],
        },
        422,
    )
    assert reason == "ValidationError"
    assert "spec.x: too big" in detail


def test_crd_docs_cover_every_field_and_rule() -> None:
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        page = render(crd)
        assert page.startswith(f"# {crd['spec']['names']['kind']}")
        for version in crd["spec"]["versions"]:
            for col in version["additionalPrinterColumns"]:
                assert f"| {col['name']} |" in page
        assert "Cross-field rules" in page
        committed = ROOT / "docs" / "crds" / f"{crd['spec']['names']['kind'].lower()}.md"
        assert committed.read_text() == page, "run `uv run azora-operator crd-docs`"


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
    assert not _status_differs(current, written, heartbeat=300)
    # A merge-patch null equals an absent field.
    assert not _status_differs(current, {"redemptions": None}, heartbeat=300)
    # A changed figure is written, and so is the heartbeat once it is due.
    assert _status_differs(current, {**written, "healthyBackends": 0}, heartbeat=300)
    assert _status_differs({**current, "lastSyncTime": stale}, written, heartbeat=300)
    assert _status_differs({k: v for k, v in current.items() if k != "lastSyncTime"}, written, 300)
