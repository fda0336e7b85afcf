"""The pricing engine: pure functions and immutable data, no I/O.

``spec`` turns rule and price specs into compiled objects, ``index`` holds the immutable
snapshot a quote is evaluated against, ``evaluate`` produces the result with its trace.
"""

from azora_pricing.engine.allocation import allocate
from azora_pricing.engine.catalog import PriceModel, Product, Tier
from azora_pricing.engine.currency import RoundingMode, RoundingPolicy, round_minor
from azora_pricing.engine.evaluate import (
    CombinationMode,
    LineInput,
    QuoteInput,
    QuoteInputError,
    QuoteResult,
    evaluate,
)
from azora_pricing.engine.index import PricingSnapshot, RuleIndex
from azora_pricing.engine.rules import Rule
from azora_pricing.engine.spec import PriceSpec, RuleSpec, SpecError, compile_price, compile_rule

__all__ = [
    "CombinationMode",
    "LineInput",
    "PriceModel",
    "PriceSpec",
    "PricingSnapshot",
    "Product",
    "QuoteInput",
    "QuoteInputError",
    "QuoteResult",
    "RoundingMode",
    "RoundingPolicy",
    "Rule",
    "RuleIndex",
    "RuleSpec",
    "SpecError",
    "Tier",
    "allocate",
    "compile_price",
    "compile_rule",
    "evaluate",
    "round_minor",
]
