"""Domain errors of azora-pricing; each carries its HTTP meaning (rendered by azora_common)."""

from __future__ import annotations

from typing import Any

from azora_common.errors import Conflict, ProblemError


class InvalidSpec(ProblemError):
    """A rule or product spec the engine cannot accept (the operator copies ``reason``)."""

    status = 422
    type_slug = "invalid-spec"
    title = "Invalid spec"

    def __init__(self, reason: str, field: str, detail: str, **extra: Any) -> None:
        super().__init__(
            f"{field}: {detail}",
            reason=reason,
            field=field,
            errors=[{"field": field, "reason": detail}],
            **extra,
        )


class InvalidQuote(ProblemError):
    """The quote request names something the engine cannot price."""

    status = 422
    type_slug = "validation-error"
    title = "Request validation failed"

    def __init__(self, field: str, reason: str, **extra: Any) -> None:
        super().__init__(f"{field}: {reason}", errors=[{"field": field, "reason": reason}], **extra)


class PromotionCodeRejected(InvalidQuote):
    type_slug = "promotion-code-rejected"
    title = "Promotion code rejected"


class QuoteExpired(Conflict):
    type_slug = "quote-expired"
    title = "Quote expired"


class PromotionExhausted(Conflict):
    type_slug = "promotion-exhausted"
    title = "Promotion has no redemptions left"


class PromotionCustomerLimit(Conflict):
    type_slug = "promotion-customer-limit"
    title = "Promotion limit for this customer reached"


class PromotionFirstPurchaseOnly(Conflict):
    type_slug = "promotion-first-purchase-only"
    title = "Promotion is only valid on a first purchase"
