"""The immutable snapshot the engine evaluates against: products and rules indexed by target.

Rules are indexed by the most selective target they name (product sku, else product label,
else "wildcard"), so a line only looks at the rules that could possibly match it; the cost of a
quote grows with the rules that target its products, not with the size of the rule set.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from azora_pricing.engine.catalog import Product
from azora_pricing.engine.currency import RoundingMode
from azora_pricing.engine.rules import Rule


class RuleIndex:
    __slots__ = ("_memo", "by_code", "by_key", "by_label", "by_sku", "rules", "wildcard")

    def __init__(self, rules: Iterable[Rule]) -> None:
        ordered = sorted(rules, key=Rule.sort_key)
        # ``order`` makes "priority, then namespace/name" a single int comparison at quote time.
        self.rules: tuple[Rule, ...] = tuple(replace(r, order=i) for i, r in enumerate(ordered))
        by_sku: dict[str, list[Rule]] = defaultdict(list)
        by_label: dict[str, list[Rule]] = defaultdict(list)
        wildcard: list[Rule] = []
        for rule in self.rules:
            if rule.products:
                for sku in rule.products:
                    by_sku[sku].append(rule)
            elif rule.labels:
                for label in rule.labels:
                    by_label[label].append(rule)
            else:
                wildcard.append(rule)
        self.by_sku = {k: tuple(v) for k, v in by_sku.items()}
        self.by_label = {k: tuple(v) for k, v in by_label.items()}
        self.wildcard = tuple(wildcard)
        self.by_key = {r.key: r for r in self.rules}
        self.by_code = {r.promotion.code: r for r in self.rules if r.promotion is not None}
        # Candidates per (sku, labels): a pure function of this immutable index, so memoising it
        # is safe; it turns the per-line lookup into one dict hit after the first quote.
        self._memo: dict[tuple[str, frozenset[str]], tuple[Rule, ...]] = {}

    def __len__(self) -> int:
        return len(self.rules)

    def candidates(self, product: Product) -> tuple[Rule, ...]:
        memo_key = (product.sku, product.labels)
        found = self._memo.get(memo_key)
        if found is None:
            merged: dict[int, Rule] = {r.order: r for r in self.by_sku.get(product.sku, ())}
            for label in product.labels:
                for rule in self.by_label.get(label, ()):
                    merged[rule.order] = rule
            for rule in self.wildcard:
                merged[rule.order] = rule
            found = tuple(merged[k] for k in sorted(merged))
            self._memo[memo_key] = found
        return found


@dataclass(frozen=True, slots=True)
class PricingSnapshot:
    """Everything a quote needs, at one service revision. Replaced, never mutated."""

    revision: int
    products: Mapping[str, Product]
    index: RuleIndex = field(default_factory=lambda: RuleIndex(()))
    # Rounding per currency from PricingPolicies; over the deployment's own settings.
    rounding: Mapping[str, RoundingMode] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> PricingSnapshot:
        return cls(0, {}, RuleIndex(()))
