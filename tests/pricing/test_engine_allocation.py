"""Largest-remainder allocation never loses or invents a cent; line traces always add up."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azora_pricing.engine import allocate
from tests.pricing.helpers import product, quote, rule, snapshot

weights = st.lists(
    st.decimals(min_value=0, max_value=10**7, places=4, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=20,
)


@settings(max_examples=60, deadline=None)
@given(total=st.integers(min_value=0, max_value=10**9), weights=weights)
def test_allocation_sums_exactly_and_stays_within_one_unit(
    total: int, weights: list[Decimal]
) -> None:
    shares = allocate(total, weights)
    assert sum(shares) == total
    assert all(share >= 0 for share in shares)
    weight_sum = sum(weights, Decimal(0))
    if weight_sum:
        for share, weight in zip(shares, weights, strict=True):
            assert abs(Decimal(share) - Decimal(total) * weight / weight_sum) < 1


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [
        (100, ["1", "1", "1"], [34, 33, 33]),
        (5, ["0", "0"], [3, 2]),
        (1, ["2", "1"], [1, 0]),
        (10, ["849.15", "1.5"], [10, 0]),
        (0, ["5", "7"], [0, 0]),
        (7, ["1", "2", "4"], [1, 2, 4]),
    ],
)
def test_allocation_table(total: int, weights: list[str], expected: list[int]) -> None:
    assert allocate(total, [Decimal(w) for w in weights]) == expected


@settings(max_examples=40, deadline=None)
@given(
    prices=st.lists(st.integers(min_value=1, max_value=100_000), min_size=1, max_size=6),
    qty=st.integers(min_value=1, max_value=50),
    percent=st.decimals(min_value=Decimal("0.01"), max_value=100, places=2),
    off=st.integers(min_value=1, max_value=200_000),
    multiplier=st.decimals(min_value=Decimal("0.5"), max_value=3, places=3),
)
def test_quote_lines_always_sum_to_the_total(
    prices: list[int], qty: int, percent: Decimal, off: int, multiplier: Decimal
) -> None:
    rules = [
        rule("a", {"priority": 1, "action": {"multiplier": str(multiplier)}}),
        rule("b", {"priority": 2, "action": {"percentOff": str(percent)}}),
        rule("c", {"priority": 3, "action": {"amountOff": {"amount": off, "currency": "EUR"}}}),
    ]
    products = [product(f"p{i}", price) for i, price in enumerate(prices)]
    result = quote(snapshot(products, rules), [(p.sku, qty) for p in products])
    assert result.total == sum(line.total for line in result.lines)
    assert result.total == result.subtotal - result.discount_total + result.surcharge_total
    for line in result.lines:
        assert line.base + sum(a.amount for a in line.adjustments) == line.total
        assert line.total >= 0
        assert abs(line.exact - line.total) <= Decimal("0.5")
