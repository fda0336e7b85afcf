"""Settings for azora-pricing (environment variables prefixed ``PRICING_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from azora_common.settings import ServiceSettings


class PricingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PRICING_", extra="ignore", frozen=True)

    service_name: str = "azora-pricing"
    port: int = 8103
