"""Malformed rule specs are refused with a CamelCase reason and the offending field."""

from __future__ import annotations

from typing import Any

import pytest

from azora_pricing.engine import SpecError, compile_rule

PCT = {"percentOff": "10"}


@pytest.mark.parametrize(
    ("spec", "reason", "field"),
    [
        ({"action": {"percentOff": "150"}}, "InvalidPercent", "action.percentOff"),
        ({"action": {"percentOff": 0}}, "InvalidPercent", "action.percentOff"),
        ({"action": {"percentOff": "-5"}}, "InvalidPercent", "action.percentOff"),
        ({"action": {}}, "InvalidAction", "action"),
        ({"action": {"percentOff": "5", "multiplier": "2"}}, "InvalidAction", "action"),
        ({"action": {"multiplier": "0"}}, "InvalidMultiplier", "action.multiplier"),
        (
            {"action": {"amountOff": {"amount": 0, "currency": "EUR"}}},
            "InvalidAmount",
            "action.amountOff.amount",
        ),
        (
            {"action": {"amountOff": {"amount": 5, "currency": "XYZ"}}},
            "UnknownCurrency",
            "action.amountOff.currency",
        ),
        (
            {
                "action": {"amountOff": {"amount": 5, "currency": "EUR"}},
                "caps": {"priceFloor": {"amount": 5, "currency": "USD"}},
            },
            "MixedCurrencies",
            "caps.priceFloor.currency",
        ),
        (
            {
                "action": {
                    "demandCurve": {
                        "points": [
                            {"fill": "0.5", "multiplier": "1"},
                            {"fill": "0.5", "multiplier": "2"},
                        ]
                    }
                }
            },
            "InvalidDemandCurve",
            "action.demandCurve.points[1].fill",
        ),
        (
            {
                "action": {
                    "demandCurve": {
                        "points": [{"fill": "0.5", "multiplier": "1"}],
                        "floor": "2",
                        "ceiling": "1",
                    }
                }
            },
            "InvalidDemandCurve",
            "action.demandCurve.ceiling",
        ),
        (
            {"action": PCT, "schedule": {"timeZone": "Mars/Olympus"}},
            "InvalidSchedule",
            "schedule.timeZone",
        ),
        (
            {
                "action": PCT,
                "schedule": {
                    "validFrom": "2026-02-01T00:00:00Z",
                    "validUntil": "2026-01-01T00:00:00Z",
                },
            },
            "InvalidSchedule",
            "schedule.validUntil",
        ),
        (
            {"action": PCT, "schedule": {"validFrom": "2026-02-01T00:00:00"}},
            "InvalidSchedule",
            "schedule.validFrom",
        ),
        (
            {
                "action": PCT,
                "schedule": {"windows": [{"days": ["mon"], "start": "25:00", "end": "26:00"}]},
            },
            "InvalidSchedule",
            "schedule.windows[0].start",
        ),
        (
            {
                "action": PCT,
                "schedule": {"windows": [{"days": ["funday"], "start": "09:00", "end": "10:00"}]},
            },
            "InvalidSchedule",
            "schedule.windows[0].days[0]",
        ),
        (
            {"action": PCT, "target": {"minQuantity": 5, "maxQuantity": 2}},
            "InvalidTarget",
            "target.maxQuantity",
        ),
        (
            {"action": PCT, "target": {"cohorts": ["nocohort"]}},
            "InvalidTarget",
            "target.cohorts[0]",
        ),
        ({"action": PCT, "promotion": {"code": "has space"}}, "InvalidPromotion", "promotion.code"),
        (
            {"action": PCT, "promotion": {"code": "X", "perCustomerLimit": 0}},
            "InvalidPromotion",
            "promotion.perCustomerLimit",
        ),
        ({"action": PCT, "stacking": "sometimes"}, "InvalidSpec", "stacking"),
        ({"action": PCT, "colour": "red"}, "InvalidSpec", "colour"),
        ({}, "InvalidSpec", "action"),
    ],
)
def test_invalid_specs(spec: dict[str, Any], reason: str, field: str) -> None:
    with pytest.raises(SpecError) as err:
        compile_rule("default", "r", spec)
    assert (err.value.reason, err.value.field) == (reason, field)


def test_numbers_and_strings_are_both_accepted_for_decimals() -> None:
    assert (
        compile_rule("d", "r", {"action": {"percentOff": 12.5}}).action.percent
        == compile_rule("d", "r", {"action": {"percentOff": "12.5"}}).action.percent
    )


def test_empty_target_lists_mean_no_restriction() -> None:
    compiled = compile_rule("d", "r", {"action": PCT, "target": {"products": [], "labels": []}})
    assert compiled.products is None
    assert compiled.labels is None
