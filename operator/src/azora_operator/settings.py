"""Settings for azora-operator (environment variables prefixed ``AZORA_OPERATOR_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    """Everything the operator needs to know, built once at start-up.

    The admin token comes from ``ADMIN_TOKEN`` or, in a cluster, from ``ADMIN_TOKEN_FILE`` (a
    mounted Secret); the file wins so a rotated Secret needs only a restart, not a new env.
    """

    model_config = SettingsConfigDict(env_prefix="AZORA_OPERATOR_", extra="ignore", frozen=True)

    enrollment_url: str = "http://127.0.0.1:8101"
    pricing_url: str = "http://127.0.0.1:8103"
    orchestrator_url: str = "http://127.0.0.1:8104"
    admin_token: SecretStr = SecretStr("")
    admin_token_file: Path | None = None

    # Namespaces to watch; empty means cluster-wide.
    namespaces: list[str] = Field(default_factory=list)

    # Timer: drift repair + live insight. The initial delay spreads the first burst after a
    # cold start over the interval instead of firing every timer at once.
    resync_interval: float = Field(default=30.0, gt=0)
    resync_initial_delay: float = Field(default=5.0, ge=0)
    # After this long since deletionTimestamp with the service unreachable, the finalizer is
    # released anyway (with a warning Event) so a service that is gone for good cannot block
    # namespace deletion forever.
    delete_timeout: float = Field(default=600.0, gt=0)
    # Backoff for an unreachable service: base * 2**retry, capped.
    backoff_base: float = Field(default=1.0, gt=0)
    backoff_max: float = Field(default=60.0, gt=0)
    # HTTP timeout of one admin API call.
    request_timeout: float = Field(default=5.0, gt=0)
    # Kubernetes client: the watch's server-side timeout and the per-request timeout.
    watch_server_timeout: int = Field(default=270, gt=0)
    kube_request_timeout: float = Field(default=30.0, gt=0)

    host: str = "127.0.0.1"
    port: int = Field(default=8105, ge=0, le=65535)
    log_level: str = "INFO"
    log_json: bool = True

    @model_validator(mode="after")
    def _read_token_file(self) -> OperatorSettings:
        if self.admin_token_file is not None:
            token = self.admin_token_file.read_text().strip()
            # frozen model: bypass the setter once, during validation.
            object.__setattr__(self, "admin_token", SecretStr(token))
        return self

    def bearer_token(self) -> str:
        return self.admin_token.get_secret_value()
