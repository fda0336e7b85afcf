"""Pydantic API models of azora-pricing (inputs forbid unknown fields)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from azora_pricing.engine.spec import PriceSpec

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
# Kubernetes object names: DNS labels for namespaces, DNS subdomains for names.
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"

Text = Annotated[str, Field(min_length=1, max_length=200)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProductIn(_Input):
    name: str = Field(min_length=1, max_length=500)
    labels: list[Text] = Field(default_factory=list, max_length=50)
    active: bool = True
    prices: dict[Annotated[str, Field(pattern=CURRENCY_PATTERN)], PriceSpec] = Field(
        min_length=1,
        max_length=50,
        description="Price model per ISO 4217 currency.",
        # patternProperties alone lets other keys through; the server refuses them.
        json_schema_extra={"propertyNames": {"pattern": CURRENCY_PATTERN}},
    )


class CustomerIn(_Input):
    id: Text | None = None
    segment: Text | None = None


class LineIn(_Input):
    product: str = Field(min_length=1, max_length=128)
    quantity: int = Field(ge=1, le=1_000_000)


class ContextIn(_Input):
    fillRatio: Decimal | None = Field(default=None, ge=0, le=1000)
    cohort: Text | None = None


class QuoteIn(_Input):
    currency: str = Field(pattern=CURRENCY_PATTERN)
    customer: CustomerIn = Field(default_factory=CustomerIn)
    lines: list[LineIn] = Field(min_length=1, max_length=200)
    codes: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=10
    )
    context: ContextIn = Field(default_factory=ContextIn)
    combination_mode: Literal["stack", "bestDeal"] | None = Field(
        default=None, description="Overrides PRICING_COMBINATION_MODE for this quote."
    )


class CandidateRule(_Input):
    namespace: str = Field(pattern=NAMESPACE_PATTERN)
    name: str = Field(pattern=NAME_PATTERN)
    spec: dict[str, Any]


class SimulateIn(_Input):
    rules: list[CandidateRule] = Field(default_factory=list, max_length=1000)
    replace: bool = Field(
        default=False,
        description="true: evaluate the candidates alone; false: candidates replace or extend "
        "the live rules with the same namespace/name.",
    )
    baskets: list[QuoteIn] = Field(min_length=1, max_length=100)
    at: AwareDatetime | None = Field(
        default=None, description="RFC 3339 instant to evaluate at (default now)."
    )


# ---- response shapes (documentation in the OpenAPI schema) ----


class ProductOut(BaseModel):
    sku: str
    name: str
    labels: list[str]
    active: bool
    prices: dict[str, dict[str, Any]] = Field(description="The stored price spec per currency")
    revision: int = Field(description="The pricing revision that last wrote this product")
    created_at: str
    updated_at: str


class ProductList(BaseModel):
    items: list[ProductOut]
    next_after: str | None = Field(description="Pass as `after` for the next page; null at the end")
