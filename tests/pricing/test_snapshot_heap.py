"""A replaced snapshot is freed by reference counting alone.

The service freezes the heap after every reload (``snapshot._settle_heap``) so full garbage
collections do not rescan the snapshot on every request; frozen objects are never collected
as cycles, so that is only sound while a snapshot, warmed by evaluations, holds no reference
cycle. This test builds one through the reload code path, uses it, drops it and checks that the
cyclic collector finds nothing left of it.
"""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from azora_pricing.engine import LineInput, QuoteInput, evaluate
from azora_pricing.engine.trace import result_document
from azora_pricing.snapshot import build_snapshot

PRICES: list[dict[str, Any]] = [
    {"model": "perUnit", "unitAmount": 1000},
    {
        "model": "graduated",
        "tiers": [{"upTo": 10, "unitAmount": 1000}, {"upTo": None, "unitAmount": 800}],
    },
    {
        "model": "volume",
        "tiers": [{"upTo": 5, "unitAmount": 1500}, {"upTo": None, "unitAmount": 1200}],
    },
    {"model": "package", "packageSize": 5, "packageAmount": 4000},
]
RULES: list[dict[str, Any]] = [
    {"target": {"products": ["sku-0"]}, "action": {"percentOff": "10"}},
    {"target": {"labels": ["sale"]}, "action": {"amountOff": {"amount": 50, "currency": "EUR"}}},
    {
        "target": {"segments": ["student"]},
        "action": {"multiplier": "0.9"},
        "schedule": {
            "timeZone": "Europe/Berlin",
            "windows": [
                {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "20:00"}
            ],
        },
        "stacking": "stopAfter",
    },
    {"action": {"percentOff": "5"}, "mode": "shadow"},
    {"action": {"percentOff": "15"}, "promotion": {"code": "SPRING", "maxRedemptions": 3}},
    {
        "action": {
            "demandCurve": {
                "points": [
                    {"fill": "0.5", "multiplier": "1.0"},
                    {"fill": "0.9", "multiplier": "1.3"},
                ],
                "floor": "0.9",
                "ceiling": "1.5",
            }
        }
    },
]


def _build_and_use() -> Any:
    products = [
        SimpleNamespace(
            sku=f"sku-{i}",
            name=f"p{i}",
            labels=["sale"] if i % 2 else [],
            active=True,
            prices={"EUR": PRICES[i % len(PRICES)]},
            revision=1,
        )
        for i in range(8)
    ]
    rules = [
        SimpleNamespace(namespace="default", name=f"r{i}", spec=spec, revision=1, generation=1)
        for i, spec in enumerate(RULES)
    ]
    snapshot = build_snapshot(3, products, rules)  # type: ignore[arg-type]
    at = datetime(2026, 1, 14, 12, 0, tzinfo=UTC)
    for i in range(8):
        quote = QuoteInput(
            "EUR",
            [LineInput(f"sku-{i}", 3), LineInput(f"sku-{(i + 1) % 8}", 12)],
            segment="student",
            codes=["SPRING"],
            fill_ratio=Decimal("0.7"),
        )
        result_document(evaluate(snapshot, quote, at))
    return snapshot


def test_a_used_snapshot_holds_no_reference_cycle() -> None:
    enabled = gc.isenabled()
    gc.disable()  # no automatic collection between the two below
    try:
        snapshot = _build_and_use()
        gc.collect()  # whatever building and evaluating left behind
        del snapshot
        assert gc.collect() == 0
    finally:
        if enabled:
            gc.enable()
