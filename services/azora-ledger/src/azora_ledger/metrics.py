"""Domain metrics of azora-ledger (HTTP request latency comes from azora_common)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRANSACTIONS = Counter(
    "azora_ledger_transactions_total",
    "Ledger operations by kind (transfer, pending, post, void, expire, reversal) and outcome.",
    ["kind", "outcome"],
)
POSTINGS = Counter(
    "azora_ledger_postings_total",
    "Postings written, by currency.",
    ["currency"],
)
POSTED_VOLUME = Counter(
    "azora_ledger_posted_volume_minor_units_total",
    "Sum of posted debit amounts in minor units, by currency.",
    ["currency"],
)
LOCK_WAIT = Histogram(
    "azora_ledger_lock_wait_seconds",
    "Time spent acquiring the account row locks of one database transaction.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BATCH_SIZE = Histogram(
    "azora_ledger_batch_size",
    "Transactions applied in one database transaction, by source (coalesced or endpoint).",
    ["source"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000),
)
_TURN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
TURN_WAIT = Histogram(
    "azora_ledger_write_turn_wait_seconds",
    "Time a writer waited for its turn at the process's write gate (see gate.py).",
    buckets=_TURN_BUCKETS,
)
TURN_HELD = Histogram(
    "azora_ledger_write_turn_held_seconds",
    "Time a writer held its turn: account locks, checks, writes and commit.",
    buckets=_TURN_BUCKETS,
)
RETRIES = Counter(
    "azora_ledger_serialization_retries_total",
    "Database transactions retried after a deadlock, serialization failure or unique race.",
)
PENDING_OUTSTANDING = Gauge(
    "azora_ledger_pending_transactions",
    "Pending transactions not yet posted, voided or expired.",
)
VERIFY_OK = Gauge(
    "azora_ledger_verify_ok",
    "1 when the last verification found every invariant intact, 0 when it found a problem.",
)
VERIFY_LAST_RUN = Gauge(
    "azora_ledger_verify_last_run_timestamp_seconds",
    "Unix time of the last completed verification.",
)
VERIFY_PROBLEMS = Gauge(
    "azora_ledger_verify_problems",
    "Problems the last verification found, by check.",
    ["check"],
)
