"""Compiled pricing rules: immutable, validated, cheap to match.

A rule comes from a ``PricingRule`` spec (see :mod:`azora_pricing.engine.spec`); compiling it
resolves time zones, parses times and decimals once, so evaluation does no parsing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from itertools import pairwise
from zoneinfo import ZoneInfo


class Stacking(StrEnum):
    STACK = "stack"
    EXCLUSIVE = "exclusive"
    STOP_AFTER = "stopAfter"


class ActionKind(StrEnum):
    PERCENT_OFF = "percentOff"
    AMOUNT_OFF = "amountOff"
    FIXED_PRICE = "fixedPrice"
    MULTIPLIER = "multiplier"
    DEMAND_CURVE = "demandCurve"


# Discounts compete in best-deal mode; multipliers and demand curves set the price and always
# apply (a customer would otherwise "choose" to skip a surcharge).
DISCOUNT_KINDS = frozenset({ActionKind.PERCENT_OFF, ActionKind.AMOUNT_OFF, ActionKind.FIXED_PRICE})

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Window:
    days: frozenset[int]  # 0 = Monday, like datetime.weekday()
    start: int  # minutes after local midnight
    end: int  # exclusive; <= start means the window runs past midnight into the next day

    def contains(self, weekday: int, minute: int) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        # Overnight: the window belongs to the day it starts on.
        return (weekday in self.days and minute >= self.start) or (
            (weekday - 1) % 7 in self.days and minute < self.end
        )


@dataclass(frozen=True, slots=True)
class Schedule:
    valid_from: datetime | None
    valid_until: datetime | None  # exclusive
    time_zone: ZoneInfo
    windows: tuple[Window, ...]

    def active(self, at: datetime) -> bool:
        if self.valid_from is not None and at < self.valid_from:
            return False
        if self.valid_until is not None and at >= self.valid_until:
            return False
        if not self.windows:
            return True
        # Windows are wall-clock times in the named zone: converting the instant (not adding a
        # fixed offset) keeps "09:00-17:00 Europe/Berlin" right on both sides of a DST change.
        local = at.astimezone(self.time_zone)
        weekday = local.weekday()
        minute = local.hour * 60 + local.minute
        return any(w.contains(weekday, minute) for w in self.windows)


@dataclass(frozen=True, slots=True)
class DemandCurve:
    points: tuple[tuple[Decimal, Decimal], ...]  # (fill, multiplier), fill strictly increasing
    floor: Decimal | None
    ceiling: Decimal | None

    def multiplier(self, fill: Decimal) -> Decimal:
        points = self.points
        if fill <= points[0][0]:
            value = points[0][1]
        elif fill >= points[-1][0]:
            value = points[-1][1]
        else:
            value = points[-1][1]
            for (f0, m0), (f1, m1) in pairwise(points):
                if fill <= f1:
                    value = m0 + (m1 - m0) * (fill - f0) / (f1 - f0)
                    break
        if self.floor is not None and value < self.floor:
            value = self.floor
        if self.ceiling is not None and value > self.ceiling:
            value = self.ceiling
        return value


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    percent: Decimal = Decimal(0)
    amount: int = 0  # amountOff / fixedPrice, minor units of ``Rule.currency``
    multiplier: Decimal = Decimal(1)
    curve: DemandCurve | None = None
    kind_name: str = ""  # kind.value, precomputed for the trace

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind_name", self.kind.value)


@dataclass(frozen=True, slots=True)
class Promotion:
    code: str  # normalised to lower case
    max_redemptions: int | None
    per_customer_limit: int | None
    first_purchase_only: bool
    min_amount: int | None


@dataclass(frozen=True, slots=True)
class Rule:
    namespace: str
    name: str
    revision: int
    generation: int
    description: str
    shadow: bool
    priority: int
    stacking: Stacking
    action: Action
    products: frozenset[str] | None = None
    labels: frozenset[str] | None = None
    segments: frozenset[str] | None = None
    cohorts: frozenset[str] | None = None
    currencies: frozenset[str] | None = None
    min_quantity: int | None = None
    max_quantity: int | None = None
    min_amount: int | None = None
    max_amount: int | None = None
    schedule: Schedule | None = None
    currency: str | None = None  # the currency of every money field, if any
    max_discount: int | None = None
    price_floor: int | None = None  # per unit
    promotion: Promotion | None = None
    order: int = 0  # position in (priority, namespace, name) order; set by the index
    # False when being a candidate of the index (sku or label hit, or wildcard) already proves
    # the target matches: the per-line criteria check is skipped.
    needs_match: bool = True
    key: str = ""  # "namespace/name", filled in by __post_init__ (used on every trace line)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.namespace}/{self.name}")

    def sort_key(self) -> tuple[int, str, str]:
        return (self.priority, self.namespace, self.name)

    def active_at(self, at: datetime) -> bool:
        return self.schedule is None or self.schedule.active(at)
