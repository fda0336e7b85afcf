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
    # Each worker applies one batch at a time on its own connection; batches of several workers
    # never share an account, a reference or a key (coalescer.py), and with coalesce_overlap
    # "commit" one is written while the previous commits. Before that selection existed, two
    # workers collided on account locks and did worse (bench, 2026-11-27: 1 worker ~3,200
    # tx/s, 2 workers ~2,100 with batches of 19). More workers than write turns
    # (write_concurrency) only wait at the gate. Default 2 with 2 write turns and overlap
    # "commit" (a two-stage pipeline): quiet interleaved bench, durable, 2026-12-03, against
    # 1 worker / 1 turn in the same rounds: single transfers uniform +24 % at c=16 and +11 %
    # at c=64, hot account and the batch endpoint unchanged (within the rounds' spread).
    coalesce_workers: int = Field(default=2, ge=1, le=64)
    coalesce_max_batch: int = Field(default=256, ge=1, le=1000)
    # How many new-transaction writers (coalesced batches, batch requests, uncoalesced single
    # requests) of this process may be between "lock the accounts" and "commit" at once; only
    # writers whose accounts (and references) are disjoint hold turns together (gate.py), so
    # writers of one process queue in Python instead of on the accounts' row locks. (Two
    # writers whose accounts overlap cost PostgreSQL about twice the CPU per transfer, the
    # second waits, then re-checks every row the first updated: bench, 2026-11-27,
    # 1,000-transfer batches over 1,000 accounts, 14,900 transfers/s with one writer, 11,100
    # with two, 9,400 with four, before turns became account-aware.) Replicas still coordinate
    # through the row locks.
    write_concurrency: int = Field(default=2, ge=1, le=64)
    # "database": the gate also spans every process and replica on the database (an advisory
    # lock per turn, see gate.py); "process": each process queues its own writers.
    write_gate: Literal["process", "database"] = "process"
    # With several workers: "commit", a worker starts a batch only while the others' batches
    # are committing (a two-stage pipeline: batches stay large); "any", whenever it is free.
    coalesce_overlap: Literal["commit", "any"] = "commit"
    coalesce_linger_ms: float = Field(default=0.0, ge=0.0, le=50.0)
    # Pending transactions past expires_at are released by a background task this often.
    expiry_interval_seconds: float = Field(default=1.0, gt=0)
    # Refresh interval of the outstanding-pending gauge.
    pending_gauge_interval_seconds: float = Field(default=15.0, gt=0)
    # Each replica verifies the books (verify/service.py run_verifier) this often and exports
    # azora_ledger_verify_ok; 0 disables it (then only `azora-ledger verify` and
    # POST /admin/v1/verify set the gauge).
    verify_interval_minutes: float = Field(default=60.0, ge=0, le=7 * 24 * 60)
