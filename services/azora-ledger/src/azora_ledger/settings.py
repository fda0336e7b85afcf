"""Settings for azora-ledger (environment variables prefixed ``LEDGER_``)."""

from __future__ import annotations

from typing import Literal

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
    # Each worker applies one batch at a time on its own connection. One worker does best: the
    # batches of two workers collide on account locks (always on a hot account, often on
    # uniform traffic) and wait for each other anyway, while one worker's batches grow larger
    # (bench, 2026-11-27, after the GC tuning: 1 worker ~3,200 tx/s uniform and hot with mean
    # batches of 30, 2 workers ~2,100 with batches of 19, CPU per transfer lower with 1). The
    # cost: a batch blocked on a lock held by another request path (post/void/reverse) holds
    # up the single transfers queued behind it for that long; raise it if that matters more.
    coalesce_workers: int = Field(default=1, ge=1, le=64)
    coalesce_max_batch: int = Field(default=256, ge=1, le=1000)
    # How many new-transaction writers (coalesced batches, batch requests, uncoalesced single
    # requests) of this process may be between "lock the accounts" and "commit" at once. One:
    # writers of one process queue in Python instead of on the accounts' row locks. Two writers
    # whose accounts overlap cost PostgreSQL about twice the CPU per transfer (the second
    # waits, then re-checks every row the first updated), so one at a time is faster
    # (bench, 2026-11-27: 1,000-transfer batches over 1,000 accounts, 14,900 transfers/s with
    # one writer, 11,100 with two, 9,400 with four). Raise it only when writers rarely share
    # accounts. Replicas still coordinate through the row locks.
    write_concurrency: int = Field(default=1, ge=1, le=64)
    # "database": the gate also spans every process and replica on the database (an advisory
    # lock per turn, see gate.py); "process": each process queues its own writers.
    write_gate: Literal["process", "database"] = "process"
    coalesce_linger_ms: float = Field(default=0.0, ge=0.0, le=50.0)
    # Pending transactions past expires_at are released by a background task this often.
    expiry_interval_seconds: float = Field(default=1.0, gt=0)
    # Refresh interval of the outstanding-pending gauge.
    pending_gauge_interval_seconds: float = Field(default=15.0, gt=0)
    # Each replica verifies the books (verify/service.py run_verifier) this often and exports
    # azora_ledger_verify_ok; 0 disables it (then only `azora-ledger verify` and
    # POST /admin/v1/verify set the gauge).
    verify_interval_minutes: float = Field(default=60.0, ge=0, le=7 * 24 * 60)
