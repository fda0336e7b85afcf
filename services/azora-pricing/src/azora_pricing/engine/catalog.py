"""Products and their pricing models: how a quantity becomes a base amount.

Unit amounts are whole minor units, so every base amount is an exact integer; fractions only
appear later, from percentage and multiplier rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class ModelKind(StrEnum):
    PER_UNIT = "perUnit"
    GRADUATED = "graduated"
    VOLUME = "volume"
    PACKAGE = "package"


class PackageRounding(StrEnum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Tier:
    up_to: int | None  # inclusive upper bound of units in this tier; None = unbounded
    unit_amount: int
    flat_amount: int = 0


@dataclass(frozen=True, slots=True)
class BaseBreakdown:
    """The base amount of a line and the arithmetic that produced it (for the trace)."""

    amount: int
    detail: str


@dataclass(frozen=True, slots=True)
class PriceModel:
    kind: ModelKind
    unit_amount: int = 0
    tiers: tuple[Tier, ...] = ()
    package_size: int = 1
    package_amount: int = 0
    package_rounding: PackageRounding = PackageRounding.UP
    flat_fee: int = 0

    def amount(self, quantity: int) -> int:
        """The base amount of ``quantity`` units (the hot path: no strings)."""
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        kind = self.kind
        if kind is ModelKind.PER_UNIT:
            amount = self.unit_amount * quantity
        elif kind is ModelKind.GRADUATED:
            amount = sum(
                units * t.unit_amount + t.flat_amount for t, units in self._spans(quantity)
            )
        elif kind is ModelKind.VOLUME:
            tier = self._volume_tier(quantity)
            amount = quantity * tier.unit_amount + tier.flat_amount
        else:
            amount = self._packages(quantity) * self.package_amount
        return amount + self.flat_fee

    def describe(self, quantity: int) -> str:
        """The arithmetic behind :meth:`amount`, for the trace."""
        kind = self.kind
        if kind is ModelKind.PER_UNIT:
            parts = [f"{quantity} x {self.unit_amount}"]
        elif kind is ModelKind.GRADUATED:
            parts = [
                f"{units} x {t.unit_amount}" + (f" + flat {t.flat_amount}" if t.flat_amount else "")
                for t, units in self._spans(quantity)
            ]
        elif kind is ModelKind.VOLUME:
            t = self._volume_tier(quantity)
            part = f"{quantity} x {t.unit_amount} (tier up to {t.up_to or 'inf'})"
            parts = [part + (f" + flat {t.flat_amount}" if t.flat_amount else "")]
        else:
            parts = [
                f"{self._packages(quantity)} package(s) of {self.package_size} "
                f"({self.package_rounding.value}) x {self.package_amount}"
            ]
        if self.flat_fee:
            parts.append(f"flat fee {self.flat_fee}")
        return f"{kind.value}: " + " + ".join(parts)

    def base(self, quantity: int) -> BaseBreakdown:
        return BaseBreakdown(self.amount(quantity), self.describe(quantity))

    def _spans(self, quantity: int) -> list[tuple[Tier, int]]:
        # Graduated: each tier prices only the units inside it; a tier's flat amount is charged
        # once when any unit reaches it (Stripe/Lago "graduated").
        spans = []
        lower = 0
        for tier in self.tiers:
            upper = quantity if tier.up_to is None else min(quantity, tier.up_to)
            if upper <= lower:
                break
            spans.append((tier, upper - lower))
            lower = upper
            if upper == quantity:
                break
        return spans

    def _volume_tier(self, quantity: int) -> Tier:
        # Volume: every unit is priced at the one tier that contains the total quantity.
        for tier in self.tiers:
            if tier.up_to is None or quantity <= tier.up_to:
                return tier
        raise ValueError("no tier holds this quantity")  # validation forbids a bounded last tier

    def _packages(self, quantity: int) -> int:
        if self.package_rounding is PackageRounding.DOWN:
            return quantity // self.package_size
        return -(-quantity // self.package_size)


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    labels: frozenset[str]
    prices: Mapping[str, PriceModel]
    revision: int = 0
    active: bool = True


def validate_tiers(tiers: Sequence[Tier]) -> tuple[str, str, str] | None:
    """``(reason, field, detail)`` when tiers are unusable, else ``None``."""
    if not tiers:
        return ("InvalidTiers", "tiers", "at least one tier is required")
    previous = 0
    for index, tier in enumerate(tiers):
        last = index == len(tiers) - 1
        if tier.up_to is None:
            if not last:
                return (
                    "OverlappingTiers",
                    f"tiers[{index}].upTo",
                    "only the last tier may be unbounded (upTo null)",
                )
            continue
        if tier.up_to <= previous:
            return (
                "OverlappingTiers",
                f"tiers[{index}].upTo",
                f"upTo {tier.up_to} must be greater than the previous tier's {previous}",
            )
        previous = tier.up_to
    if tiers[-1].up_to is not None:
        return (
            "InvalidTiers",
            f"tiers[{len(tiers) - 1}].upTo",
            "the last tier must be unbounded (upTo null) so every quantity has a price",
        )
    return None
