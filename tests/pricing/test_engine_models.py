"""Pricing models and rounding: exact amounts, including every tier edge."""

from __future__ import annotations

from decimal import Decimal

import pytest

from azora_pricing.engine import RoundingMode, SpecError, compile_price, round_minor
from azora_pricing.engine.currency import format_money
from azora_pricing.engine.spec import PriceSpec
from tests.pricing.helpers import product, quote, rule, single, snapshot

TIERS = [
    {"upTo": 10, "unitAmount": 1000},
    {"upTo": 20, "unitAmount": 800, "flatAmount": 200},
    {"upTo": None, "unitAmount": 500},
]


def base(price: dict[str, object], qty: int) -> int:
    return compile_price(PriceSpec.model_validate(price), "p").base(qty).amount


@pytest.mark.parametrize(
    ("qty", "expected"),
    [(1, 999), (3, 2997), (1000, 999000)],
)
def test_per_unit(qty: int, expected: int) -> None:
    assert base({"model": "perUnit", "unitAmount": 999}, qty) == expected


def test_flat_fee_is_added_once_per_line() -> None:
    assert base({"model": "perUnit", "unitAmount": 999, "flatFee": 500}, 3) == 3497


@pytest.mark.parametrize(
    ("qty", "expected"),
    [
        (1, 1000),
        (10, 10000),  # last unit of tier 1
        (11, 11000),  # 10*1000 + 1*800 + tier-2 flat 200
        (20, 18200),  # 10*1000 + 10*800 + 200
        (21, 18700),  # + 1*500
        (25, 20700),
    ],
)
def test_graduated_tiers(qty: int, expected: int) -> None:
    assert base({"model": "graduated", "tiers": TIERS}, qty) == expected


@pytest.mark.parametrize(
    ("qty", "expected"),
    [
        (1, 1000),
        (10, 10000),
        (11, 9000),  # all 11 at 800 + flat 200
        (20, 16200),
        (21, 10500),  # all 21 at 500
    ],
)
def test_volume_tiers(qty: int, expected: int) -> None:
    assert base({"model": "volume", "tiers": TIERS}, qty) == expected


@pytest.mark.parametrize(
    ("rounding", "qty", "expected"),
    [
        ("up", 1, 2000),
        ("up", 5, 2000),
        ("up", 6, 4000),
        ("down", 4, 0),
        ("down", 5, 2000),
        ("down", 9, 2000),
        ("down", 10, 4000),
    ],
)
def test_package(rounding: str, qty: int, expected: int) -> None:
    spec = {"model": "package", "packageSize": 5, "packageAmount": 2000}
    assert base({**spec, "packageRounding": rounding}, qty) == expected


@pytest.mark.parametrize(
    ("tiers", "reason", "field"),
    [
        (
            [{"upTo": 10, "unitAmount": 1}, {"upTo": 10, "unitAmount": 1}],
            "OverlappingTiers",
            "p.tiers[1].upTo",
        ),
        (
            [{"upTo": 10, "unitAmount": 1}, {"upTo": 5, "unitAmount": 1}, {"unitAmount": 1}],
            "OverlappingTiers",
            "p.tiers[1].upTo",
        ),
        ([{"unitAmount": 1}, {"upTo": 5, "unitAmount": 1}], "OverlappingTiers", "p.tiers[0].upTo"),
        ([{"upTo": 10, "unitAmount": 1}], "InvalidTiers", "p.tiers[0].upTo"),
        ([], "InvalidTiers", "p.tiers"),
    ],
)
def test_invalid_tiers(tiers: list[dict[str, object]], reason: str, field: str) -> None:
    with pytest.raises(SpecError) as err:
        compile_price(PriceSpec.model_validate({"model": "graduated", "tiers": tiers}), "p")
    assert (err.value.reason, err.value.field) == (reason, field)


@pytest.mark.parametrize(
    ("value", "mode", "expected"),
    [
        ("0.5", RoundingMode.HALF_EVEN, 0),
        ("1.5", RoundingMode.HALF_EVEN, 2),
        ("2.5", RoundingMode.HALF_EVEN, 2),
        ("2.5", RoundingMode.HALF_UP, 3),
        ("2.5", RoundingMode.HALF_DOWN, 2),
        ("2.51", RoundingMode.HALF_DOWN, 3),
        ("2.49", RoundingMode.HALF_UP, 2),
        ("-2.5", RoundingMode.HALF_UP, -3),
        ("-2.5", RoundingMode.HALF_DOWN, -2),
        ("849.15", RoundingMode.HALF_EVEN, 849),
    ],
)
def test_round_minor(value: str, mode: RoundingMode, expected: int) -> None:
    assert round_minor(Decimal(value), mode) == expected


@pytest.mark.parametrize(
    ("unit", "mode", "expected"),
    [
        (5, RoundingMode.HALF_EVEN, 2),  # 2.5 -> 2
        (5, RoundingMode.HALF_UP, 3),
        (5, RoundingMode.HALF_DOWN, 2),
        (7, RoundingMode.HALF_EVEN, 4),  # 3.5 -> 4
        (7, RoundingMode.HALF_UP, 4),
        (7, RoundingMode.HALF_DOWN, 3),
    ],
)
def test_half_cent_line_rounding_per_mode(unit: int, mode: RoundingMode, expected: int) -> None:
    result = single(unit, rule("half", {"action": {"percentOff": "50"}}), rounding=mode)
    line = result.lines[0]
    assert line.exact == Decimal(unit) / 2
    assert (line.total, result.total) == (expected, expected)
    assert line.adjustments[0].amount == expected - unit


def test_rounding_happens_once_per_line_not_per_adjustment() -> None:
    # 333 * 0.5 = 166.5, * 0.5 = 83.25 -> 83. Rounding half-up after each step would give
    # 167 * 0.5 = 83.5 -> 84: the classic off-by-a-cent.
    rules = [
        rule("a", {"priority": 1, "action": {"percentOff": "50"}}),
        rule("b", {"priority": 2, "action": {"percentOff": "50"}}),
    ]
    result = single(333, *rules, rounding=RoundingMode.HALF_UP)
    assert result.lines[0].exact == Decimal("83.25")
    assert result.total == 83
    # The trace's integer steps are differences of the rounded running total: they add up.
    assert [a.amount for a in result.lines[0].adjustments] == [-166, -84]
    assert 333 + sum(a.amount for a in result.lines[0].adjustments) == 83


def test_format_money_uses_minor_units_per_currency() -> None:
    assert format_money(12345, "EUR") == "123.45 EUR"
    assert format_money(500, "JPY") == "500 JPY"
    assert format_money(12345, "KWD") == "12.345 KWD"


def test_quote_over_graduated_product_in_trace() -> None:
    snap = snapshot([product("g", {"model": "graduated", "tiers": TIERS})])
    result = quote(snap, [("g", 11)])
    assert result.lines[0].base == 11000
    assert result.lines[0].base_detail == "graduated: 10 x 1000 + 1 x 800 + flat 200"
