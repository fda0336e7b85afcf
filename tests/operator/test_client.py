"""The admin client (``azora_operator.client``): problem documents → reason and detail."""

from __future__ import annotations

from azora_operator.client import _reason_from_problem


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
