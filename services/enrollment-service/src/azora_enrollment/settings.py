"""Settings for azora-enrollment (environment variables prefixed ``ENROLLMENT_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from azora_common.settings import ServiceSettings


class EnrollmentSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ENROLLMENT_", extra="ignore", frozen=True)

    service_name: str = "azora-enrollment"
    port: int = 8101

    # Other services, reached only through the outbox (never on the enrollment hot path).
    pricing_url: str = "http://127.0.0.1:8103"
    ledger_url: str = "http://127.0.0.1:8102"
    # One token with pricing:read pricing:write ledger:read ledger:write.
    service_token: SecretStr = SecretStr("")
    http_timeout_s: float = Field(default=5.0, gt=0)
    # Asking pricing whether it can price a cohort happens while an admin PUT waits (the
    # operator's own timeout is 5 s): shorter, and a timeout only means "not verified yet".
    pricing_check_timeout_s: float = Field(default=2.0, gt=0)
    # Priced cohorts not known to be priceable are asked about again this often.
    pricing_recheck_interval_s: float = Field(default=30.0, gt=0)

    # Background work (each replica runs it; SKIP LOCKED keeps replicas from colliding).
    background_tasks: bool = True
    outbox_poll_interval_s: float = Field(default=0.5, gt=0)
    outbox_batch_size: int = Field(default=20, ge=1, le=500)
    # A claimed job is invisible to other workers for this long (covers a crashed worker).
    outbox_lease_s: float = Field(default=60.0, gt=0)
    outbox_backoff_base_s: float = Field(default=0.5, gt=0)
    outbox_backoff_max_s: float = Field(default=60.0, gt=0)
    # A request the other service refuses (4xx) is retried this many times, then the
    # enrollment is rejected and its seat released; outages (5xx, network) retry forever.
    outbox_max_refusals: int = Field(default=5, ge=1)
    offer_sweep_interval_s: float = Field(default=1.0, gt=0)
    gauges_interval_s: float = Field(default=5.0, gt=0)

    # Ledger accounts: one shared receivable per currency, one revenue account per cohort.
    receivable_account_prefix: str = "assets:receivables:enrollment"
    revenue_account_prefix: str = "revenue:enrollment"
