"""Builders for engine tests: products, rules and one-call evaluation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from azora_pricing.engine import (
    CombinationMode,
    LineInput,
    PricingSnapshot,
    Product,
    QuoteInput,
    QuoteResult,
    RoundingMode,
    RuleIndex,
    compile_price,
    compile_rule,
    evaluate,
)
from azora_pricing.engine.spec import PriceSpec

AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def product(sku: str, price: dict[str, Any] | int, *, labels: tuple[str, ...] = ()) -> Product:
    spec = {"model": "perUnit", "unitAmount": price} if isinstance(price, int) else price
    return Product(
        sku,
        sku,
        frozenset(labels),
        {"EUR": compile_price(PriceSpec.model_validate(spec), "prices.EUR")},
        revision=1,
    )


def rule(name: str, spec: dict[str, Any], *, namespace: str = "default", revision: int = 1):  # type: ignore[no-untyped-def]
    return compile_rule(namespace, name, spec, revision=revision)


def snapshot(products: list[Product], rules: list[Any] = ()) -> PricingSnapshot:  # type: ignore[assignment]
    return PricingSnapshot(9, {p.sku: p for p in products}, RuleIndex(rules))


def quote(
    snap: PricingSnapshot,
    lines: list[tuple[str, int]],
    *,
    at: datetime = AT,
    mode: CombinationMode = CombinationMode.STACK,
    rounding: RoundingMode = RoundingMode.HALF_EVEN,
    **kwargs: Any,
) -> QuoteResult:
    if "fill_ratio" in kwargs and kwargs["fill_ratio"] is not None:
        kwargs["fill_ratio"] = Decimal(kwargs["fill_ratio"])
    q = QuoteInput("EUR", [LineInput(p, n) for p, n in lines], **kwargs)
    return evaluate(snap, q, at, mode=mode, rounding=rounding)


def single(base: int, *rules: Any, qty: int = 1, **kwargs: Any) -> QuoteResult:
    return quote(snapshot([product("p", base)], list(rules)), [("p", qty)], **kwargs)


def adjustments(result: QuoteResult, line: int = 0) -> list[tuple[str, int]]:
    return [(a.rule.name, a.amount) for a in result.lines[line].adjustments]
