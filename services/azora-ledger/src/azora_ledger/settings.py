"""Settings for azora-ledger (environment variables prefixed ``LEDGER_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from azora_common.settings import ServiceSettings


class LedgerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore", frozen=True)

    service_name: str = "azora-ledger"
    port: int = 8102
