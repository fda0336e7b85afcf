"""Settings for azora-ledger (environment variables prefixed ``LEDGER_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from azora_common.settings import ServiceSettings


class LedgerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore", frozen=True)

    service_name: str = "azora-ledger"
    port: int = 8102
    # Coalescing of single-transfer requests (see coalescer.py). Off: each request runs in its
    # own request transaction.
    coalesce: bool = True
    # Each worker applies one batch at a time on its own connection. The service's CPU, not the
    # database, limits a single replica, so few workers with larger batches do best (bench:
    # 1, 2 and 4 were within the noise of a shared machine, 1-2 ahead on average); two keep
    # single transfers moving while one batch waits on a lock held elsewhere.
    coalesce_workers: int = Field(default=2, ge=1, le=64)
    coalesce_max_batch: int = Field(default=256, ge=1, le=1000)
    coalesce_linger_ms: float = Field(default=0.0, ge=0.0, le=50.0)
    # Pending transactions past expires_at are released by a background task this often.
    expiry_interval_seconds: float = Field(default=1.0, gt=0)
    # Refresh interval of the outstanding-pending gauge.
    pending_gauge_interval_seconds: float = Field(default=15.0, gt=0)
