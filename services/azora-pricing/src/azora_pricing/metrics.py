"""Domain metrics of azora-pricing (labels bounded: outcomes, kinds and configured rules)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

QUOTES = Counter(
    "azora_pricing_quotes_total",
    "Quote requests by outcome (created, rejected).",
    ["outcome"],
)
ACCEPTS = Counter(
    "azora_pricing_quote_accepts_total",
    "Quote accepts by outcome (accepted, replayed, expired, exhausted, customer_limit, "
    "first_purchase).",
    ["outcome"],
)
# The hot path counts every quote and every adjustment: children are looked up once, not per
# increment (``labels()`` takes a lock and builds a key each time).
QUOTES_CREATED = QUOTES.labels("created")
QUOTES_REJECTED = QUOTES.labels("rejected")
RULE_APPLICATIONS = Counter(
    "azora_pricing_rule_applications_total",
    "Adjustments applied to quote lines, by rule (namespace/name) and action kind.",
    ["rule", "kind"],
)
SHADOW_HITS = Counter(
    "azora_pricing_shadow_hits_total",
    "Quote lines a shadow rule would have changed, by rule (namespace/name).",
    ["rule"],
)
REDEMPTIONS = Counter(
    "azora_pricing_redemptions_total",
    "Promotion redemptions consumed by accepted quotes.",
)
EVALUATION_SECONDS = Histogram(
    "azora_pricing_evaluation_duration_seconds",
    "Time to evaluate a quote in the engine (no I/O).",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)
SNAPSHOT_RELOADS = Counter(
    "azora_pricing_snapshot_reloads_total",
    "Rebuilds of the in-memory rule and product snapshot, by trigger (listener, request).",
    ["trigger"],
)
QUOTE_WRITE_BATCH_SIZE = Histogram(
    "azora_pricing_quote_write_batch_size",
    "Quotes stored by one INSERT of the hot path's writer (grows with concurrent load).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)

_rule_applications: dict[tuple[str, str], Counter] = {}
_shadow_hits: dict[str, Counter] = {}


def rule_applied(rule: str, kind: str) -> Counter:
    child = _rule_applications.get((rule, kind))
    if child is None:
        child = _rule_applications[rule, kind] = RULE_APPLICATIONS.labels(rule, kind)
    return child


def shadow_hit(rule: str) -> Counter:
    child = _shadow_hits.get(rule)
    if child is None:
        child = _shadow_hits[rule] = SHADOW_HITS.labels(rule)
    return child
