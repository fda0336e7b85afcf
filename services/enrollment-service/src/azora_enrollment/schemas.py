"""Pydantic models of the HTTP API (inputs forbid unknown fields)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from azora_common.admin_store import ConfigPut
from azora_enrollment.models import ALL_STATES
from azora_enrollment.spec import COHORT_KEY_PATTERN

State = Literal[
    "pending_payment",
    "enrolled",
    "waitlisted",
    "offered",
    "offer_expired",
    "declined",
    "dropped",
    "completed",
    "rejected",
]
assert set(State.__args__) == set(ALL_STATES)  # type: ignore[attr-defined]

_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$"
# PostgreSQL text and JSONB cannot hold NUL; JSON numbers beyond 2^53 are not portable.
NO_NUL = r"^[^\x00]*$"
AttributeValue = (
    Annotated[str, Field(max_length=500, pattern=NO_NUL)]
    | Annotated[int, Field(ge=-(2**53), le=2**53)]
    | bool
    | None
)
AttributeKey = Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CohortPut(ConfigPut):
    """The shared admin PUT body; a cohort always comes with its resource's uid."""

    uid: str = Field(min_length=1, max_length=200, pattern=NO_NUL)


class StudentIn(_In):
    id: str = Field(pattern=_ID, description="The education platform's student id.")
    segment: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="Omitted: keep the stored one.",
    )
    attributes: dict[AttributeKey, AttributeValue] | None = Field(default=None, max_length=50)


class EnrollmentIn(_In):
    cohort: str = Field(pattern=COHORT_KEY_PATTERN, description="namespace/name")
    student: StudentIn


class BulkItem(_In):
    student: StudentIn


class BulkIn(_In):
    items: list[BulkItem] = Field(min_length=1, max_length=1000)


class TransitionIn(_In):
    to: State
    reason: str | None = Field(default=None, max_length=500, pattern=NO_NUL)


class StudentOut(BaseModel):
    id: str
    segment: str | None


class PaymentOut(BaseModel):
    quote_id: str | None
    amount: int | None
    currency: str | None
    transaction_id: str | None
    charged_at: str | None
    refund_transaction_id: str | None
    error: str | None


class EnrollmentOut(BaseModel):
    id: str
    cohort: str
    student: StudentOut
    state: State
    waitlist_position: int | None
    offer_expires_at: str | None
    created_at: str
    updated_at: str
    seated_at: str | None
    payment: PaymentOut | None


class HistoryEntry(BaseModel):
    from_state: State | None
    to_state: State
    actor: str
    reason: str
    at: str


class BulkResult(BaseModel):
    index: int
    status: int
    enrollment: EnrollmentOut | None = None
    problem: dict[str, Any] | None = None


class BulkOut(BaseModel):
    cohort: str
    summary: dict[str, int]
    results: list[BulkResult]


class PricingStatus(BaseModel):
    """Whether azora-pricing can price the cohort (``priceability``)."""

    verified: bool = Field(description="Pricing has the product with a price in the currency.")
    state: Literal["verified", "unverified", "refused"] = Field(
        description="refused: enrollments are refused (409 cohort-not-priceable); "
        "unverified: pricing could not be asked yet, enrollments are taken."
    )
    reason: str | None = Field(
        description="UnknownProduct, UnpricedCurrency, PricingUnavailable or NotCheckedYet."
    )
    detail: str | None
    product: str
    currency: str
    checked_at: str | None


class CohortStatus(BaseModel):
    revision: int
    generation: int
    enrolled: int
    capacity: int | None
    pending_payment: int
    waitlisted: int
    offered: int
    open: bool = Field(description="Enrollment is open now: window, capacity, pricing.")
    pricing: PricingStatus | None = Field(description="null for a free cohort.")


class PutResult(BaseModel):
    revision: int
    generation: int
