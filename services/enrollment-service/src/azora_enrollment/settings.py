"""Settings for azora-enrollment (environment variables prefixed ``ENROLLMENT_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from azora_common.settings import ServiceSettings


class EnrollmentSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ENROLLMENT_", extra="ignore", frozen=True)

    service_name: str = "azora-enrollment"
    port: int = 8101
