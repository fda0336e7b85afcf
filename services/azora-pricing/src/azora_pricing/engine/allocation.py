"""Largest-remainder allocation: split an integer amount by weights without losing a cent."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal


def allocate(total: int, weights: Sequence[Decimal]) -> list[int]:
    """Split ``total`` (>= 0 minor units) in proportion to ``weights`` (>= 0).

    Every share is the floor of its exact quota, then the units still missing go one each to
    the shares with the largest fractional remainders (ties to the earlier index, so the result
    is deterministic). The shares always sum to ``total`` and each is within one unit of its
    exact quota. All-zero weights split evenly.
    """
    if total < 0:
        raise ValueError("total must be >= 0")
    if not weights:
        if total:
            raise ValueError("cannot allocate a non-zero total to no weights")
        return []
    if any(w < 0 for w in weights):
        raise ValueError("weights must be >= 0")
    weight_sum = sum(weights, Decimal(0))
    if weight_sum == 0:
        weights = [Decimal(1)] * len(weights)
        weight_sum = Decimal(len(weights))
    shares: list[int] = []
    remainders: list[tuple[Decimal, int]] = []
    for index, weight in enumerate(weights):
        # Exact rational quota total*w/W; divmod on the scaled numerator avoids Decimal
        # division rounding (the context precision could otherwise shave a unit off).
        numerator = total * weight
        floor = int(numerator // weight_sum)
        shares.append(floor)
        remainders.append((numerator - floor * weight_sum, index))
    missing = total - sum(shares)
    remainders.sort(key=lambda item: (-item[0], item[1]))
    for _, index in remainders[:missing]:
        shares[index] += 1
    return shares
