"""Quote evaluation: base prices, rules in order, caps, allocation, rounding, and the trace.

Pure: the same snapshot, input and instant give the same result, byte for byte.

Semantics (the README spells them out with examples):

* Rules apply in ``(priority, namespace, name)`` order, each to the running exact amount of
  the line (so a later percentage applies to the already discounted price: no discount is ever
  computed on a stale base).
* ``percentOff``, ``multiplier`` and ``demandCurve`` act per line; ``fixedPrice`` is a unit
  price; ``amountOff`` is an order-level amount split across the lines the rule applies to by
  largest remainder, weighted by their running amounts.
* Stacking, per line: if any matching rule is ``exclusive``, only the first such rule applies;
  otherwise rules apply in order and a ``stopAfter`` rule is the last one.
* Best-deal mode: price-setting rules (multiplier, demand curve) apply as in stack mode; of the
  discounts (percent, amount, fixed price) only the one that saves the most applies.
* Caps per rule and line: ``maxDiscount`` bounds what this rule takes off the line,
  ``priceFloor`` (per unit) is never undercut by this rule.
* Rounding: amounts stay exact until the end of the line, which is rounded once in the
  currency's mode. Each adjustment's integer amount is the change of the *rounded* running
  total, so base + adjustments = line total exactly, and lines sum to the quote total.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from azora_pricing.engine.allocation import allocate
from azora_pricing.engine.catalog import PriceModel, Product
from azora_pricing.engine.currency import RoundingMode, format_money, is_currency, round_minor
from azora_pricing.engine.index import PricingSnapshot
from azora_pricing.engine.rules import DISCOUNT_KINDS, ActionKind, Rule, Stacking

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
# Far above any real basket, far below BIGINT: amounts beyond it are refused, not overflowed.
MAX_AMOUNT = 10**15


class CombinationMode(StrEnum):
    STACK = "stack"
    BEST_DEAL = "bestDeal"


class QuoteInputError(Exception):
    """Input the engine cannot price: names the field (``lines[2].product``) and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LineInput:
    product: str
    quantity: int


@dataclass(frozen=True, slots=True)
class QuoteInput:
    currency: str
    lines: Sequence[LineInput]
    customer_id: str | None = None
    segment: str | None = None
    codes: Sequence[str] = ()
    fill_ratio: Decimal | None = None
    cohort: str | None = None
    # Supplied by the caller from its records: has this customer no accepted purchase yet?
    first_purchase: bool = True


# Why an effect was limited (bit flags, explained lazily in ``Adjustment.why``).
CAPPED = 1
FLOORED = 2
ZEROED = 4


@dataclass(slots=True)
class Adjustment:
    """One rule's effect on one line. The explanation is built only when asked for (the trace),
    so pricing itself formats no strings."""

    rule: Rule
    exact: Decimal  # signed change of the line's exact amount
    currency: str
    share: int = 0  # amountOff: this line's share of the order-level amount
    factor: Decimal | None = None  # demandCurve: the multiplier at ``fill``
    fill: Decimal | None = None
    flags: int = 0
    best_of: int = 0  # best-deal: how many discounts competed
    amount: int = 0  # signed change of the rounded running total (filled in at rounding)
    applied: bool = True

    @property
    def kind(self) -> ActionKind:
        return self.rule.action.kind

    @property
    def why(self) -> str:
        rule, action, currency = self.rule, self.rule.action, self.currency
        kind = action.kind
        if kind is ActionKind.PERCENT_OFF:
            why = f"{action.percent}% off"
        elif kind is ActionKind.AMOUNT_OFF:
            why = f"{format_money(self.share, currency)} off"
            if self.share != action.amount:
                total = format_money(action.amount, currency)
                why += f" (this line's largest-remainder share of {total})"
        elif kind is ActionKind.FIXED_PRICE:
            why = f"fixed price {format_money(action.amount, currency)} per unit"
        elif kind is ActionKind.MULTIPLIER:
            why = f"price x {action.multiplier}"
        else:
            why = f"demand price x {self.factor} at fill ratio {self.fill}"
        if self.flags & CAPPED and rule.max_discount is not None:
            why += f", capped at a maximum discount of {format_money(rule.max_discount, currency)}"
        if self.flags & FLOORED and rule.price_floor is not None:
            why += f", held at the price floor of {format_money(rule.price_floor, currency)}/unit"
        if self.flags & ZEROED:
            why += ", limited to the line amount"
        why += f" [{rule.stacking.value}, priority {rule.priority}]"
        if self.best_of > 1:
            why += f"; best deal among {self.best_of} discounts"
        return why if self.applied else "shadow (not applied): " + why


@dataclass(slots=True)
class LineResult:
    index: int
    product: Product
    price: PriceModel
    quantity: int
    base: int
    exact: Decimal
    adjustments: list[Adjustment] = field(default_factory=list)
    shadow: list[Adjustment] = field(default_factory=list)
    total: int = 0

    @property
    def base_detail(self) -> str:
        return self.price.describe(self.quantity)

    @property
    def discount(self) -> int:
        return -sum(a.amount for a in self.adjustments if a.amount < 0)

    @property
    def surcharge(self) -> int:
        return sum(a.amount for a in self.adjustments if a.amount > 0)


@dataclass(frozen=True, slots=True)
class CodeOutcome:
    code: str
    applied: bool
    rule: str | None
    reason: str
    # False when the code cannot be used for this basket at all (schedule, minimum amount,
    # first purchase, no matching line); True when it matched but another rule won.
    eligible: bool = True


@dataclass(frozen=True, slots=True)
class QuoteResult:
    currency: str
    at: datetime
    mode: CombinationMode
    rounding: RoundingMode
    snapshot_revision: int
    lines: list[LineResult]
    codes: list[CodeOutcome]
    subtotal: int
    discount_total: int
    surcharge_total: int
    total: int

    def rules_used(self) -> dict[str, int]:
        used: dict[str, int] = {}
        for line in self.lines:
            for adj in (*line.adjustments, *line.shadow):
                used[adj.rule.key] = adj.rule.revision
        return dict(sorted(used.items()))

    def applied_codes(self) -> list[str]:
        return [c.code.lower() for c in self.codes if c.applied]


@dataclass(slots=True)
class _Line:
    result: LineResult
    current: Decimal
    applied: list[Rule]  # in order, after stacking
    discounts: list[Rule]  # best-deal candidates
    shadow: list[Rule]
    # Whether any rule on this line is an order-level amountOff (needs the rule-major walk).
    spans_lines: bool = False


def evaluate(
    snapshot: PricingSnapshot,
    quote: QuoteInput,
    at: datetime,
    *,
    mode: CombinationMode = CombinationMode.STACK,
    rounding: RoundingMode = RoundingMode.HALF_EVEN,
) -> QuoteResult:
    currency = quote.currency
    if not is_currency(currency):
        raise QuoteInputError("currency", f"{currency!r} is not an ISO 4217 currency")
    if not quote.lines:
        raise QuoteInputError("lines", "at least one line is required")
    given_codes = {c.lower(): c for c in quote.codes}
    index = snapshot.index
    for i, code in enumerate(quote.codes):
        if code.lower() not in index.by_code:
            raise QuoteInputError(f"codes[{i}]", f"unknown promotion code {code!r}")

    lines: list[_Line] = []
    subtotal = 0
    for i, line_in in enumerate(quote.lines):
        product = snapshot.products.get(line_in.product)
        if product is None or not product.active:
            raise QuoteInputError(f"lines[{i}].product", f"unknown product {line_in.product!r}")
        if line_in.quantity <= 0:
            raise QuoteInputError(f"lines[{i}].quantity", "must be a positive integer")
        price = product.prices.get(currency)
        if price is None:
            raise QuoteInputError(
                f"lines[{i}].product", f"product {product.sku!r} has no price in {currency}"
            )
        base = price.amount(line_in.quantity)
        subtotal += base
        result = LineResult(i, product, price, line_in.quantity, base, _ZERO)
        lines.append(_Line(result, Decimal(base), [], [], []))

    if subtotal > MAX_AMOUNT:
        raise QuoteInputError("lines", f"the order exceeds {MAX_AMOUNT} minor units")
    active_cache: dict[int, bool] = {}
    code_reasons: dict[str, str] = {}
    for line in lines:
        _select(
            line,
            index.candidates(line.result.product),
            quote,
            subtotal,
            at,
            mode,
            active_cache,
            given_codes,
            code_reasons,
        )

    if any(line.spans_lines for line in lines):
        _apply_in_order(lines, quote)
    else:
        for line in lines:
            _apply_line(line, quote)
    if mode is CombinationMode.BEST_DEAL:
        _apply_best_discount(lines, quote)

    discount_total = surcharge_total = total = 0
    for line in lines:
        _round_line(line, rounding)
        discount_total += line.result.discount
        surcharge_total += line.result.surcharge
        total += line.result.total

    if total > MAX_AMOUNT:
        raise QuoteInputError("lines", f"the priced order exceeds {MAX_AMOUNT} minor units")
    outcomes = (
        _code_outcomes(quote.codes, lines, index.by_code, code_reasons, mode) if quote.codes else []
    )
    return QuoteResult(
        currency=currency,
        at=at,
        mode=mode,
        rounding=rounding,
        snapshot_revision=snapshot.revision,
        lines=[ln.result for ln in lines],
        codes=outcomes,
        subtotal=subtotal,
        discount_total=discount_total,
        surcharge_total=surcharge_total,
        total=total,
    )


def _select(
    line: _Line,
    candidates: Sequence[Rule],
    quote: QuoteInput,
    subtotal: int,
    at: datetime,
    mode: CombinationMode,
    active_cache: dict[int, bool],
    given_codes: dict[str, str],
    code_reasons: dict[str, str],
) -> None:
    """Which rules match this line, and which of them apply after stacking."""
    result = line.result
    product = result.product
    matched: list[Rule] = []
    for rule in candidates:
        if rule.needs_match and not _matches(rule, product, result.quantity, result.base, quote):
            continue
        promotion = rule.promotion
        if promotion is not None:
            if promotion.code not in given_codes:
                continue
            if promotion.min_amount is not None and subtotal < promotion.min_amount:
                code_reasons[promotion.code] = (
                    f"the order is below the minimum of "
                    f"{format_money(promotion.min_amount, quote.currency)}"
                )
                continue
            if promotion.first_purchase_only and not quote.first_purchase:
                code_reasons[promotion.code] = "only valid on a customer's first purchase"
                continue
        active = active_cache.get(rule.order)
        if active is None:
            active = active_cache[rule.order] = rule.active_at(at)
        if not active:
            if promotion is not None:
                code_reasons[promotion.code] = "outside the promotion's schedule"
            continue
        if rule.action.kind is ActionKind.AMOUNT_OFF:
            line.spans_lines = True
        if rule.shadow:
            line.shadow.append(rule)
        else:
            matched.append(rule)

    if mode is CombinationMode.BEST_DEAL:
        line.discounts = [r for r in matched if r.action.kind in DISCOUNT_KINDS]
        matched = [r for r in matched if r.action.kind not in DISCOUNT_KINDS]
    exclusive = next((r for r in matched if r.stacking is Stacking.EXCLUSIVE), None)
    if exclusive is not None:
        line.applied = [exclusive]
        return
    for rule in matched:
        line.applied.append(rule)
        if rule.stacking is Stacking.STOP_AFTER:
            break


def _matches(rule: Rule, product: Product, quantity: int, base: int, quote: QuoteInput) -> bool:
    if rule.currency is not None and rule.currency != quote.currency:
        return False
    if rule.currencies is not None and quote.currency not in rule.currencies:
        return False
    if rule.products is not None and product.sku not in rule.products:
        return False
    if rule.labels is not None and rule.labels.isdisjoint(product.labels):
        return False
    if rule.segments is not None and quote.segment not in rule.segments:
        return False
    if rule.cohorts is not None and quote.cohort not in rule.cohorts:
        return False
    if rule.min_quantity is not None and quantity < rule.min_quantity:
        return False
    if rule.max_quantity is not None and quantity > rule.max_quantity:
        return False
    if rule.min_amount is not None and base < rule.min_amount:
        return False
    if rule.max_amount is not None and base > rule.max_amount:
        return False
    return not (rule.action.kind is ActionKind.DEMAND_CURVE and quote.fill_ratio is None)


def _effect(
    rule: Rule, current: Decimal, quantity: int, share: int, quote: QuoteInput
) -> Adjustment:
    """This rule's effect on a line at ``current``, with its caps (``exact`` = the change)."""
    action = rule.action
    kind = action.kind
    factor = None
    if kind is ActionKind.PERCENT_OFF:
        new = current * (_HUNDRED - action.percent) / _HUNDRED
    elif kind is ActionKind.AMOUNT_OFF:
        new = current - share
    elif kind is ActionKind.FIXED_PRICE:
        new = Decimal(action.amount * quantity)
    elif kind is ActionKind.MULTIPLIER:
        new = current * action.multiplier
    else:
        assert action.curve is not None
        assert quote.fill_ratio is not None
        factor = action.curve.multiplier(quote.fill_ratio)
        new = current * factor
    flags = 0
    if rule.max_discount is not None and current - new > rule.max_discount:
        new = current - rule.max_discount
        flags |= CAPPED
    if rule.price_floor is not None and new < current:
        floor = Decimal(rule.price_floor * quantity)
        if new < floor:
            # The floor only limits this rule's cut; it never raises a price already below it.
            new = floor if floor <= current else current
            flags |= FLOORED
    if new < 0:
        new = _ZERO
        flags |= ZEROED
    return Adjustment(
        rule,
        new - current,
        quote.currency,
        share=share,
        factor=factor,
        fill=quote.fill_ratio if factor is not None else None,
        flags=flags,
    )


def _amount_off_shares(rule: Rule, targets: list[_Line]) -> list[int]:
    if len(targets) == 1:  # nothing to split
        return [min(rule.action.amount, int(max(targets[0].current, _ZERO)))]
    weights = [max(t.current, _ZERO) for t in targets]
    available = int(sum(weights, _ZERO))  # never take off more than the lines are worth
    return allocate(min(rule.action.amount, available), weights)


def _record(line: _Line, adjustment: Adjustment, applies: bool) -> None:
    if applies:
        line.current += adjustment.exact
        line.result.adjustments.append(adjustment)
    else:
        adjustment.applied = False
        line.result.shadow.append(adjustment)


def _apply_line(line: _Line, quote: QuoteInput) -> None:
    """Line-major walk: valid when no rule on the line spans several lines (no amountOff)."""
    quantity = line.result.quantity
    if not line.shadow:
        for rule in line.applied:
            _record(line, _effect(rule, line.current, quantity, 0, quote), True)
        return
    steps = sorted(
        [(r.order, r, True) for r in line.applied] + [(r.order, r, False) for r in line.shadow],
        key=lambda step: step[0],
    )
    for _, rule, applies in steps:
        _record(line, _effect(rule, line.current, quantity, 0, quote), applies)


def _apply_in_order(lines: list[_Line], quote: QuoteInput) -> None:
    # Rule-major: an amountOff rule must see every line it targets at the same point in the
    # order, so rules are walked in order across lines rather than line by line.
    per_rule: dict[int, tuple[Rule, list[tuple[_Line, bool]]]] = {}
    for line in lines:
        for rule in line.applied:
            per_rule.setdefault(rule.order, (rule, []))[1].append((line, True))
        for rule in line.shadow:
            per_rule.setdefault(rule.order, (rule, []))[1].append((line, False))
    for order in sorted(per_rule):
        rule, targets = per_rule[order]
        shares = [0] * len(targets)
        if rule.action.kind is ActionKind.AMOUNT_OFF:
            shares = _amount_off_shares(rule, [t for t, _ in targets])
        for (line, applies), share in zip(targets, shares, strict=True):
            _record(line, _effect(rule, line.current, line.result.quantity, share, quote), applies)


def _apply_best_discount(lines: list[_Line], quote: QuoteInput) -> None:
    per_rule: dict[int, tuple[Rule, list[_Line]]] = {}
    for line in lines:
        for rule in line.discounts:
            per_rule.setdefault(rule.order, (rule, []))[1].append(line)
    offers: dict[int, list[Adjustment]] = {}
    for order in sorted(per_rule):
        rule, targets = per_rule[order]
        shares = [0] * len(targets)
        if rule.action.kind is ActionKind.AMOUNT_OFF:
            shares = _amount_off_shares(rule, targets)
        for line, share in zip(targets, shares, strict=True):
            offer = _effect(rule, line.current, line.result.quantity, share, quote)
            offers.setdefault(line.result.index, []).append(offer)
    for line in lines:
        options = offers.get(line.result.index)
        if not options:
            continue
        # The most negative change wins; on a tie the rule first in order.
        best = min(options, key=lambda o: (o.exact, o.rule.order))
        if best.exact >= 0:
            continue
        best.best_of = len(options)
        _record(line, best, True)


def _round_line(line: _Line, mode: RoundingMode) -> None:
    result = line.result
    running = Decimal(result.base)
    rounded = result.base
    for adjustment in result.adjustments:
        running += adjustment.exact
        new_rounded = round_minor(running, mode)
        adjustment.amount = new_rounded - rounded
        rounded = new_rounded
    result.exact = running
    result.total = rounded
    for shadow in result.shadow:
        # What the rule would have changed at its place in the order, rounded on its own.
        shadow.amount = round_minor(shadow.exact, mode)


def _code_outcomes(
    codes: Sequence[str],
    lines: list[_Line],
    by_code: dict[str, Rule],
    reasons: dict[str, str],
    mode: CombinationMode,
) -> list[CodeOutcome]:
    applied_keys = {a.rule.key for ln in lines for a in ln.result.adjustments}
    matched_keys = {r.key for ln in lines for r in (*ln.applied, *ln.discounts)}
    outcomes = []
    for code in codes:
        rule = by_code[code.lower()]
        if rule.key in applied_keys:
            outcomes.append(CodeOutcome(code, True, rule.key, "applied"))
        elif rule.shadow:
            outcomes.append(CodeOutcome(code, False, rule.key, "the rule is in shadow mode"))
        elif code.lower() in reasons and rule.key not in matched_keys:
            outcomes.append(CodeOutcome(code, False, rule.key, reasons[code.lower()], False))
        elif rule.key in matched_keys:
            why = "a better deal won" if mode is CombinationMode.BEST_DEAL else "no saving"
            outcomes.append(CodeOutcome(code, False, rule.key, why))
        else:
            outcomes.append(
                CodeOutcome(
                    code,
                    False,
                    rule.key,
                    "no line matches the promotion (products, currency, customer), or an "
                    "exclusive or stopAfter rule came first",
                    False,
                )
            )
    return outcomes
