"""Settings base class: one pydantic-settings class per service, each with its own env prefix."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from azora_common.runtime import DEFAULT_GC_THRESHOLD


def to_async_url(url: str) -> str:
    """Accept libpq-style URLs and return the SQLAlchemy asyncpg form."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("database_url must be a postgresql:// URL")


class ServiceSettings(BaseSettings):
    """Fields every service has. Subclasses set ``model_config`` with their own ``env_prefix``.

    Tokens: ``admin_token`` grants the ``admin`` scope (``/admin/*``); ``api_tokens`` maps a token
    to its scopes, e.g. ``{"t0k3n": ["ledger:read", "ledger:write"]}``; ``*`` grants every API scope
    but never ``admin``, which is granted only by name.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    service_name: str = "azora"
    environment: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/azora"
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    admin_token: SecretStr = SecretStr("")
    api_tokens: dict[str, list[str]] = Field(default_factory=dict)
    log_level: str = "INFO"
    log_json: bool = True
    idempotency_retention_hours: int = Field(default=24, ge=1)
    # Young-generation threshold of the cyclic garbage collector, applied once after start-up
    # (azora_common.runtime.tune_gc); 0 keeps CPython's defaults.
    gc_threshold: int = Field(default=DEFAULT_GC_THRESHOLD, ge=0)

    @field_validator("database_url")
    @classmethod
    def _normalise_url(cls, value: str) -> str:
        return to_async_url(value)

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> ServiceSettings:
        if self.environment == "production":
            if len(self.admin_token.get_secret_value()) < 16:
                raise ValueError("admin_token must be set (>= 16 chars) in production")
            if any(len(token) < 16 for token in self.api_tokens):
                raise ValueError("api_tokens must be >= 16 chars in production")
        return self
