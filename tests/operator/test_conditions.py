"""Conditions (``azora_operator.conditions``): one entry per type, transition times."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from azora_operator.conditions import Condition, merge_conditions


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
