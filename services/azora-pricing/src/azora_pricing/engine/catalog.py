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

    def base(self, quantity: int) -> BaseBreakdown:
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        if self.kind is ModelKind.PER_UNIT:
            amount = self.unit_amount * quantity
            parts = [f"{quantity} x {self.unit_amount}"]
        elif self.kind is ModelKind.GRADUATED:
            amount, parts = self._graduated(quantity)
        elif self.kind is ModelKind.VOLUME:
            amount, parts = self._volume(quantity)
        else:
            packages = -(-quantity // self.package_size)
            if self.package_rounding is PackageRounding.DOWN:
                packages = quantity // self.package_size
            amount = packages * self.package_amount
            parts = [
                f"{packages} package(s) of {self.package_size} ({self.package_rounding.value})"
                f" x {self.package_amount}"
            ]
        if self.flat_fee:
            amount += self.flat_fee
            parts.append(f"flat fee {self.flat_fee}")
        return BaseBreakdown(amount, f"{self.kind.value}: " + " + ".join(parts))

    def _graduated(self, quantity: int) -> tuple[int, list[str]]:
        # Each tier prices only the units that fall inside it; a tier's flat amount is charged
        # once when any unit reaches it (Stripe/Lago "graduated").
        amount = 0
        parts: list[str] = []
        lower = 0
        for tier in self.tiers:
            upper = quantity if tier.up_to is None else min(quantity, tier.up_to)
            units = upper - lower
            if units <= 0:
                break
            amount += units * tier.unit_amount + tier.flat_amount
            part = f"{units} x {tier.unit_amount}"
            if tier.flat_amount:
                part += f" + flat {tier.flat_amount}"
            parts.append(part)
            lower = upper
            if upper == quantity:
                break
        return amount, parts

    def _volume(self, quantity: int) -> tuple[int, list[str]]:
        # Every unit is priced at the one tier that contains the total quantity.
        for tier in self.tiers:
            if tier.up_to is None or quantity <= tier.up_to:
                part = f"{quantity} x {tier.unit_amount} (tier up to {tier.up_to or 'inf'})"
                if tier.flat_amount:
                    part += f" + flat {tier.flat_amount}"
                return quantity * tier.unit_amount + tier.flat_amount, [part]
        raise ValueError("no tier holds this quantity")  # validation forbids a bounded last tier


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
