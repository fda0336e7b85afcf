"""The wire shapes of ``PricingRule`` specs and product prices, and their compilation.

Shape (types, unknown fields) is checked by pydantic; meaning (percent over 100, overlapping
tiers, an unknown time zone) is checked here, and every failure names a CamelCase ``reason``
and the offending field so the operator can put it in a condition verbatim.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from azora_pricing.engine.catalog import (
    ModelKind,
    PackageRounding,
    PriceModel,
    Tier,
    validate_tiers,
)
from azora_pricing.engine.currency import RoundingMode, is_currency
from azora_pricing.engine.rules import (
    DAYS,
    Action,
    ActionKind,
    DemandCurve,
    Promotion,
    Rule,
    Schedule,
    Stacking,
    Window,
)


class SpecError(Exception):
    """A spec the engine cannot accept: ``reason`` (CamelCase), ``field`` and ``detail``."""

    def __init__(self, reason: str, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.reason = reason
        self.field = field
        self.detail = detail


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1


class MoneySpec(_Spec):
    amount: int = Field(le=MAX_INT64)
    currency: str


class TargetSpec(_Spec):
    products: list[str] | None = None
    labels: list[str] | None = None
    segments: list[str] | None = None
    cohorts: list[str] | None = None
    currencies: list[str] | None = None
    minQuantity: int | None = Field(default=None, le=MAX_INT32)
    maxQuantity: int | None = Field(default=None, le=MAX_INT32)
    minAmount: int | None = Field(default=None, le=MAX_INT64)
    maxAmount: int | None = Field(default=None, le=MAX_INT64)


class WindowSpec(_Spec):
    days: list[str]
    start: str
    end: str


class ScheduleSpec(_Spec):
    validFrom: datetime | None = None
    validUntil: datetime | None = None
    timeZone: str = "UTC"
    windows: list[WindowSpec] = Field(default_factory=list)


class CurvePointSpec(_Spec):
    fill: Decimal
    multiplier: Decimal


class DemandCurveSpec(_Spec):
    points: list[CurvePointSpec]
    floor: Decimal | None = None
    ceiling: Decimal | None = None


class ActionSpec(_Spec):
    percentOff: Decimal | None = None
    amountOff: MoneySpec | None = None
    fixedPrice: MoneySpec | None = None
    multiplier: Decimal | None = None
    demandCurve: DemandCurveSpec | None = None


class CapsSpec(_Spec):
    maxDiscount: MoneySpec | None = None
    priceFloor: MoneySpec | None = None


class PromotionSpec(_Spec):
    code: str
    maxRedemptions: int | None = Field(default=None, le=MAX_INT64)
    perCustomerLimit: int | None = Field(default=None, le=MAX_INT32)
    firstPurchaseOnly: bool = False
    minAmount: MoneySpec | None = None


class RuleSpec(_Spec):
    description: str = ""
    mode: Literal["active", "shadow"] = "active"
    priority: int = Field(default=100, ge=-1_000_000, le=1_000_000)
    stacking: Literal["stack", "exclusive", "stopAfter"] = "stack"
    target: TargetSpec = Field(default_factory=TargetSpec)
    schedule: ScheduleSpec | None = None
    action: ActionSpec
    caps: CapsSpec | None = None
    promotion: PromotionSpec | None = None


def _pydantic_field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "spec"


def parse_rule_spec(raw: Any) -> RuleSpec:
    try:
        return RuleSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise SpecError("InvalidSpec", _pydantic_field(first["loc"]), first["msg"]) from None


_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_TIME = re.compile(r"^([01][0-9]|2[0-4]):([0-5][0-9])$")


def _minutes(value: str, field: str, *, allow_24: bool) -> int:
    match = _TIME.match(value)
    if match is None:
        raise SpecError("InvalidSchedule", field, f"{value!r} is not a HH:MM time")
    minutes = int(match.group(1)) * 60 + int(match.group(2))
    if minutes > 1440 or (minutes == 1440 and not allow_24):
        raise SpecError("InvalidSchedule", field, f"{value!r} is not a time of day")
    return minutes


def _aware(value: datetime | None, field: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise SpecError("InvalidSchedule", field, "timestamps need a UTC offset (RFC 3339)")
    return value


def _schedule(spec: ScheduleSpec) -> Schedule:
    valid_from = _aware(spec.validFrom, "schedule.validFrom")
    valid_until = _aware(spec.validUntil, "schedule.validUntil")
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise SpecError("InvalidSchedule", "schedule.validUntil", "must be after validFrom")
    try:
        zone = ZoneInfo(spec.timeZone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SpecError(
            "InvalidSchedule", "schedule.timeZone", f"{spec.timeZone!r} is not an IANA time zone"
        ) from None
    windows = []
    for i, window in enumerate(spec.windows):
        field = f"schedule.windows[{i}]"
        if not window.days:
            raise SpecError("InvalidSchedule", f"{field}.days", "at least one day is required")
        days = set()
        for j, day in enumerate(window.days):
            if day not in DAYS:
                raise SpecError(
                    "InvalidSchedule", f"{field}.days[{j}]", f"{day!r} is not one of {DAYS}"
                )
            days.add(DAYS.index(day))
        start = _minutes(window.start, f"{field}.start", allow_24=False)
        end = _minutes(window.end, f"{field}.end", allow_24=True)
        if start == end or (end == 1440 and start == 0):
            # 00:00-24:00 would be "all day": say so by leaving windows out instead.
            raise SpecError("InvalidSchedule", f"{field}.end", "the window is empty or whole-day")
        windows.append(Window(frozenset(days), start, end % 1440 if end == 1440 else end))
    return Schedule(valid_from, valid_until, zone, tuple(windows))


def _money(spec: MoneySpec, field: str, currencies: dict[str, str], *, positive: bool) -> int:
    if not is_currency(spec.currency):
        raise SpecError(
            "UnknownCurrency", f"{field}.currency", f"{spec.currency!r} is not ISO 4217"
        )
    if spec.amount < 0 or (positive and spec.amount == 0):
        bound = "> 0" if positive else ">= 0"
        raise SpecError("InvalidAmount", f"{field}.amount", f"must be {bound} minor units")
    if spec.amount > 10**15:
        raise SpecError("InvalidAmount", f"{field}.amount", "is implausibly large")
    currencies[field] = spec.currency
    return spec.amount


def _plausible_factor(value: Decimal) -> bool:
    # Bounded so that no arithmetic on it can overflow the decimal context.
    return value.is_finite() and 0 < value <= 1000


def _curve(spec: DemandCurveSpec) -> DemandCurve:
    base = "action.demandCurve"
    if not spec.points:
        raise SpecError("InvalidDemandCurve", f"{base}.points", "at least one point is required")
    points: list[tuple[Decimal, Decimal]] = []
    for i, point in enumerate(spec.points):
        if not point.fill.is_finite() or point.fill < 0 or point.fill > 1000:
            raise SpecError(
                "InvalidDemandCurve", f"{base}.points[{i}].fill", "must be >= 0 and <= 1000"
            )
        if points and point.fill <= points[-1][0]:
            raise SpecError(
                "InvalidDemandCurve", f"{base}.points[{i}].fill", "fills must strictly increase"
            )
        if not _plausible_factor(point.multiplier):
            raise SpecError(
                "InvalidDemandCurve", f"{base}.points[{i}].multiplier", "must be > 0 and <= 1000"
            )
        points.append((point.fill, point.multiplier))
    for name, value in (("floor", spec.floor), ("ceiling", spec.ceiling)):
        if value is not None and not _plausible_factor(value):
            raise SpecError("InvalidDemandCurve", f"{base}.{name}", "must be > 0 and <= 1000")
    if spec.floor is not None and spec.ceiling is not None and spec.floor > spec.ceiling:
        raise SpecError("InvalidDemandCurve", f"{base}.ceiling", "must be >= floor")
    return DemandCurve(tuple(points), spec.floor, spec.ceiling)


def _action(spec: ActionSpec, currencies: dict[str, str]) -> Action:
    present = [name for name, value in spec if value is not None]
    if len(present) != 1:
        raise SpecError(
            "InvalidAction",
            "action",
            "exactly one of percentOff, amountOff, fixedPrice, multiplier, demandCurve is "
            f"required (got {', '.join(present) or 'none'})",
        )
    if spec.percentOff is not None:
        p = spec.percentOff
        if not p.is_finite() or p <= 0 or p > 100:
            raise SpecError("InvalidPercent", "action.percentOff", "must be > 0 and <= 100")
        return Action(ActionKind.PERCENT_OFF, percent=p)
    if spec.amountOff is not None:
        amount = _money(spec.amountOff, "action.amountOff", currencies, positive=True)
        return Action(ActionKind.AMOUNT_OFF, amount=amount)
    if spec.fixedPrice is not None:
        amount = _money(spec.fixedPrice, "action.fixedPrice", currencies, positive=False)
        return Action(ActionKind.FIXED_PRICE, amount=amount)
    if spec.multiplier is not None:
        m = spec.multiplier
        if not _plausible_factor(m):
            raise SpecError("InvalidMultiplier", "action.multiplier", "must be > 0 and <= 1000")
        return Action(ActionKind.MULTIPLIER, multiplier=m)
    assert spec.demandCurve is not None
    return Action(ActionKind.DEMAND_CURVE, curve=_curve(spec.demandCurve))


def _strings(values: list[str] | None, field: str) -> frozenset[str] | None:
    # An empty list means "no restriction", the same as leaving the field out (CRD defaults
    # may send []).
    if not values:
        return None
    for i, value in enumerate(values):
        if not value or len(value) > 200:
            raise SpecError("InvalidTarget", f"{field}[{i}]", "must be 1-200 characters")
    return frozenset(values)


def _range(low: int | None, high: int | None, field: str, low_name: str, high_name: str) -> None:
    for name, value in ((low_name, low), (high_name, high)):
        if value is not None and value < 0:
            raise SpecError("InvalidTarget", f"{field}.{name}", "must be >= 0")
    if low is not None and high is not None and low > high:
        raise SpecError("InvalidTarget", f"{field}.{high_name}", f"must be >= {low_name}")


def compile_rule(
    namespace: str, name: str, raw: Any, *, revision: int = 0, generation: int = 0
) -> Rule:
    """Validate a ``PricingRule`` spec (a dict) and build the engine's rule; raises SpecError."""
    spec = parse_rule_spec(raw)
    currencies: dict[str, str] = {}
    action = _action(spec.action, currencies)
    target = spec.target
    if target.currencies:
        for i, code in enumerate(target.currencies):
            if not is_currency(code):
                raise SpecError(
                    "UnknownCurrency", f"target.currencies[{i}]", f"{code!r} is not ISO 4217"
                )
    _range(target.minQuantity, target.maxQuantity, "target", "minQuantity", "maxQuantity")
    _range(target.minAmount, target.maxAmount, "target", "minAmount", "maxAmount")
    for i, cohort in enumerate(target.cohorts or ()):
        if cohort.count("/") != 1 or cohort.startswith("/") or cohort.endswith("/"):
            raise SpecError("InvalidTarget", f"target.cohorts[{i}]", "must be 'namespace/name'")
    max_discount = price_floor = None
    if spec.caps is not None:
        if spec.caps.maxDiscount is not None:
            max_discount = _money(
                spec.caps.maxDiscount, "caps.maxDiscount", currencies, positive=False
            )
        if spec.caps.priceFloor is not None:
            price_floor = _money(
                spec.caps.priceFloor, "caps.priceFloor", currencies, positive=False
            )
    promotion = None
    if spec.promotion is not None:
        p = spec.promotion
        if not _CODE.match(p.code):
            raise SpecError(
                "InvalidPromotion", "promotion.code", "1-64 letters, digits, '-' or '_'"
            )
        if p.maxRedemptions is not None and p.maxRedemptions < 0:
            raise SpecError("InvalidPromotion", "promotion.maxRedemptions", "must be >= 0")
        if p.perCustomerLimit is not None and p.perCustomerLimit < 1:
            raise SpecError("InvalidPromotion", "promotion.perCustomerLimit", "must be >= 1")
        min_amount = None
        if p.minAmount is not None:
            min_amount = _money(p.minAmount, "promotion.minAmount", currencies, positive=False)
        promotion = Promotion(
            code=p.code.lower(),
            max_redemptions=p.maxRedemptions,
            per_customer_limit=p.perCustomerLimit,
            first_purchase_only=p.firstPurchaseOnly,
            min_amount=min_amount,
        )
    distinct = sorted(set(currencies.values()))
    if len(distinct) > 1:
        field = next(f for f, c in currencies.items() if c != distinct[0])
        raise SpecError(
            "MixedCurrencies",
            f"{field}.currency",
            f"all amounts in one rule must share a currency (found {', '.join(distinct)})",
        )
    currency = distinct[0] if distinct else None
    if currency and target.currencies and currency not in target.currencies:
        raise SpecError(
            "MixedCurrencies",
            "target.currencies",
            f"the rule's amounts are in {currency}, which target.currencies excludes",
        )
    needs_match = bool(
        currency
        or target.currencies
        or target.segments
        or target.cohorts
        or (target.products and target.labels)
        or action.kind is ActionKind.DEMAND_CURVE
        or any(
            v is not None
            for v in (target.minQuantity, target.maxQuantity, target.minAmount, target.maxAmount)
        )
    )
    return Rule(
        namespace=namespace,
        name=name,
        revision=revision,
        generation=generation,
        description=spec.description,
        shadow=spec.mode == "shadow",
        priority=spec.priority,
        stacking=Stacking(spec.stacking),
        action=action,
        products=_strings(target.products, "target.products"),
        labels=_strings(target.labels, "target.labels"),
        segments=_strings(target.segments, "target.segments"),
        cohorts=_strings(target.cohorts, "target.cohorts"),
        currencies=_strings(target.currencies, "target.currencies"),
        min_quantity=target.minQuantity,
        max_quantity=target.maxQuantity,
        min_amount=target.minAmount,
        max_amount=target.maxAmount,
        schedule=_schedule(spec.schedule) if spec.schedule is not None else None,
        currency=currency,
        max_discount=max_discount,
        price_floor=price_floor,
        promotion=promotion,
        needs_match=needs_match,
    )


# --- product prices -------------------------------------------------------------------------


class TierSpec(_Spec):
    upTo: int | None = Field(default=None, ge=1, le=2**63 - 1)  # quantities are int64
    unitAmount: int = Field(ge=0, le=10**12)
    flatAmount: int = Field(default=0, ge=0, le=10**12)


class PriceSpec(_Spec):
    model: Literal["perUnit", "graduated", "volume", "package"] = "perUnit"
    unitAmount: int | None = Field(default=None, ge=0, le=10**12)
    tiers: list[TierSpec] | None = Field(default=None, max_length=100)
    packageSize: int | None = Field(default=None, ge=1, le=10**9)
    packageAmount: int | None = Field(default=None, ge=0, le=10**12)
    packageRounding: Literal["up", "down"] = "up"
    flatFee: int = Field(default=0, ge=0, le=10**12)


def compile_price(spec: PriceSpec, field: str) -> PriceModel:
    """Build a price model; raises SpecError naming ``field`` + the sub-field."""
    kind = ModelKind(spec.model)
    if kind is ModelKind.PER_UNIT:
        if spec.unitAmount is None:
            raise SpecError("InvalidPrice", f"{field}.unitAmount", "required for perUnit")
        return PriceModel(kind, unit_amount=spec.unitAmount, flat_fee=spec.flatFee)
    if kind is ModelKind.PACKAGE:
        if spec.packageSize is None or spec.packageAmount is None:
            raise SpecError(
                "InvalidPrice", f"{field}.packageSize", "packageSize and packageAmount required"
            )
        return PriceModel(
            kind,
            package_size=spec.packageSize,
            package_amount=spec.packageAmount,
            package_rounding=PackageRounding(spec.packageRounding),
            flat_fee=spec.flatFee,
        )
    tiers = tuple(Tier(t.upTo, t.unitAmount, t.flatAmount) for t in spec.tiers or ())
    problem = validate_tiers(tiers)
    if problem is not None:
        reason, sub, detail = problem
        raise SpecError(reason, f"{field}.{sub}", detail)
    return PriceModel(kind, tiers=tiers, flat_fee=spec.flatFee)


# --- pricing policies -------------------------------------------------------------------------


class PolicySpec(_Spec):
    rounding: dict[str, RoundingMode] = Field(default_factory=dict, max_length=256)


def compile_policy(raw: Any) -> dict[str, RoundingMode]:
    """Validate a ``PricingPolicy`` spec: the rounding mode per ISO 4217 currency it sets."""
    try:
        spec = PolicySpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise SpecError("InvalidSpec", _pydantic_field(first["loc"]), first["msg"]) from None
    for code in spec.rounding:
        if not is_currency(code):
            raise SpecError("UnknownCurrency", f"rounding.{code}", f"{code!r} is not ISO 4217")
    return dict(spec.rounding)
