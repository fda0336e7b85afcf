"""Settings for azora-orchestrator (environment variables prefixed ``ORCHESTRATOR_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from azora_common.settings import ServiceSettings


class OrchestratorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="ignore", frozen=True)

    service_name: str = "azora-orchestrator"
    port: int = 8104
