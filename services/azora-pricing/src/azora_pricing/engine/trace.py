"""The "why this price" trace: a quote result as JSON-able data."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from azora_pricing.engine.evaluate import Adjustment, LineResult, QuoteResult


def decimal_text(value: Decimal) -> str:
    """Plain positional notation (never ``1E+2``), trailing zeros dropped."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _adjustment(adj: Adjustment) -> dict[str, Any]:
    return {
        "rule": adj.rule.key,
        "revision": adj.rule.revision,
        "kind": adj.rule.action.kind_name,
        "amount": adj.amount,
        "exact": decimal_text(adj.exact),
        "why": adj.why,
    }


def _line(line: LineResult, rounding: str) -> dict[str, Any]:
    return {
        "line": line.index,
        "product": line.product.sku,
        "quantity": line.quantity,
        "base": {"amount": line.base, "detail": line.base_detail},
        "adjustments": [_adjustment(a) for a in line.adjustments],
        "shadow": [_adjustment(a) for a in line.shadow],
        "rounding": {"mode": rounding, "exact": decimal_text(line.exact), "total": line.total},
        "discount": line.discount,
        "surcharge": line.surcharge,
        "total": line.total,
    }


def result_document(result: QuoteResult) -> dict[str, Any]:
    rounding = result.rounding.value
    return {
        "currency": result.currency,
        "subtotal": result.subtotal,
        "discount_total": result.discount_total,
        "surcharge_total": result.surcharge_total,
        "total": result.total,
        "combination_mode": result.mode.value,
        "evaluated_at": result.at.isoformat().replace("+00:00", "Z"),
        "lines": [_line(line, rounding) for line in result.lines],
        "codes": [
            {"code": c.code, "applied": c.applied, "rule": c.rule, "reason": c.reason}
            for c in result.codes
        ],
        "revisions": {
            "snapshot": result.snapshot_revision,
            "rules": result.rules_used(),
            "products": {line.product.sku: line.product.revision for line in result.lines},
        },
    }
