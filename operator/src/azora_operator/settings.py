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

    # The resync timer of every resource: drift repair + live insight once per interval; the
    # first firing waits the initial delay so a cold start's applies go first.
    resync_interval: float = Field(default=30.0, gt=0)
    resync_initial_delay: float = Field(default=5.0, ge=0)
    # A resync writes status only when something changed, plus ``lastSyncTime`` at most this
    # often: an unconditional write every interval costs a PATCH and a watch event per
    # resource (500 resources at 30 s: ~17 writes/s doing nothing).
    status_heartbeat: float = Field(default=300.0, gt=0)
    # The operator owns the whole set of configs in its services: one that no resource
    # declares (made by hand through the admin API, or left behind by a forced delete) is
    # removed once it has been seen orphaned on two consecutive sweeps at least
    # ``prune_grace`` apart (default: two resync intervals). ``prune=false`` switches this off;
    # ``prune_exclude`` lists services (e.g. ["azora-pricing"]) or kinds configured by hand.
    prune: bool = True
    prune_exclude: list[str] = Field(default_factory=list)
    prune_grace: float | None = Field(default=None, gt=0)
    # After this long since deletionTimestamp with the service unreachable, the finalizer is
    # released anyway (with a warning Event) so a service that is gone for good cannot block
    # namespace deletion forever.
    delete_timeout: float = Field(default=600.0, gt=0)
    # Backoff for an unreachable service: base * 2**retry, capped.
    backoff_base: float = Field(default=1.0, gt=0)
    backoff_max: float = Field(default=60.0, gt=0)
    # HTTP timeout of one admin API call.
    request_timeout: float = Field(default=5.0, gt=0)
    # Admin API calls in flight per service; more wait (the timeout starts when one is sent).
    service_concurrency: int = Field(default=16, gt=0)
    # Kubernetes client: the watch's server-side timeout and the per-request timeout.
    watch_server_timeout: int = Field(default=270, gt=0)
    kube_request_timeout: float = Field(default=30.0, gt=0)
    # Connections to the API server (Kopf's and ours; each watch stream holds one). Each TLS
    # connection costs ~0.5 MB, and more in parallel does not make a loaded API server faster.
    kube_connections: int = Field(default=32, ge=8)

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

    def orphan_grace(self) -> float:
        return self.prune_grace if self.prune_grace is not None else 2 * self.resync_interval

    def prunes(self, service: str, kind: str) -> bool:
        return self.prune and not {service, kind} & set(self.prune_exclude)

    def bearer_token(self) -> str:
        return self.admin_token.get_secret_value()
