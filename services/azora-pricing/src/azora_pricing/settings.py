"""Settings for azora-pricing (environment variables prefixed ``PRICING_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from azora_common.settings import ServiceSettings
from azora_pricing.engine.currency import RoundingMode, RoundingPolicy


class PricingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PRICING_", extra="ignore", frozen=True)

    service_name: str = "azora-pricing"
    port: int = 8103
    # How long a quote's price is held for acceptance.
    quote_ttl_seconds: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    # Engine-wide default; a quote request may override it with ``combination_mode``.
    combination_mode: Literal["stack", "bestDeal"] = "stack"
    rounding_default: RoundingMode = RoundingMode.HALF_EVEN
    # Per-currency overrides, e.g. PRICING_ROUNDING_MODES='{"CHF": "half-up"}'.
    rounding_modes: dict[str, RoundingMode] = Field(default_factory=dict)
    notify_channel: str = "pricing_config"
    # The hot path's quotes are stored by one writer, many per INSERT (quote_writer.py); off:
    # one INSERT per request on its own pooled connection.
    coalesce_quote_writes: bool = True
    quote_write_max_batch: int = Field(default=256, ge=1, le=5000)

    def rounding_policy(self) -> RoundingPolicy:
        return RoundingPolicy(self.rounding_modes, self.rounding_default)
