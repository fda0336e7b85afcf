"""Settings for azora-orchestrator (environment variables prefixed ``ORCHESTRATOR_``).

Route behaviour (weights, retries, health thresholds, limits) lives in the routes themselves;
these are the process-wide knobs that the ``AIModelRoute`` contract deliberately leaves out.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from azora_common.settings import ServiceSettings


class OrchestratorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="ignore", frozen=True)

    service_name: str = "azora-orchestrator"
    port: int = 8104

    # Largest request body accepted on /v1/* (answered 413 in the OpenAI error shape).
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Upstream connection pool: one shared keep-alive pool for every backend.
    upstream_max_connections: int = Field(default=2048, ge=1)
    upstream_keepalive_s: float = Field(default=60.0, gt=0)
    # A backend back from ejection (or from failing active checks) ramps its effective weight
    # from 10% to 100% over this window (slow start) instead of taking its full share at once.
    slow_start_s: float = Field(default=30.0, ge=0)
    # Ejections grow base * 2^(n-1) and stop growing here.
    max_ejection_s: float = Field(default=300.0, gt=0)
    # Retry budget: retries allowed in the sliding window are at most
    # max(retry_budget_min, budgetPercent% of the requests in the window).
    retry_budget_window_s: int = Field(default=10, ge=1, le=300)
    retry_budget_min: int = Field(default=3, ge=0)
    # Longest Retry-After the gateway will sleep on before retrying the same backend; a longer
    # one makes it move on (another backend, tier or fallback) or answer with the 429.
    max_retry_wait_s: float = Field(default=5.0, ge=0)
    # Latency strategy: a failure is fed into the EWMA as at least this many seconds, so a fast
    # 503 never looks like a fast backend.
    failure_penalty_s: float = Field(default=1.0, ge=0)
    latency_ewma_alpha: float = Field(default=0.3, gt=0, le=1)
    error_rate_alpha: float = Field(default=0.1, gt=0, le=1)
    # Active health checks: unhealthy after this many consecutive failed checks.
    active_unhealthy_threshold: int = Field(default=2, ge=1)
    active_check_timeout_s: float = Field(default=2.0, gt=0)
    # Probes in flight at once (health.py: one per endpoint and round; the timeout starts when
    # the probe is sent, not while it waits for one of these).
    active_check_concurrency: int = Field(default=64, ge=1)
    # Token estimate for admission when the request names no max_tokens.
    default_max_tokens_estimate: int = Field(default=256, ge=0)
    # Streams: ask every backend for the final usage event (stream_options.include_usage) so
    # that cost, budgets and tokens/min see the real usage; the event is kept from clients that
    # did not ask for it. Off only for backends that refuse the option.
    stream_usage: bool = True
    # Usage recording: each request's record waits in memory and is written (with the budget
    # settlements and the ledger outbox row) in one transaction every usage_flush_ms; a crash
    # loses at most the records of the last interval plus a flush in progress.
    usage_flush_ms: int = Field(default=500, ge=10, le=60_000)
    usage_retention_days: int = Field(default=90, ge=1)
    # Largest usage buffer kept while the database is unreachable (oldest records dropped).
    usage_buffer_max: int = Field(default=1_000_000, ge=1000)
    # Name of this replica in usage records and the published route status (pod name).
    replica_name: str = Field(default="", max_length=253)
    # Connections for the shared admission state (keys with limits or a budget).
    shared_pool_size: int = Field(default=8, ge=1, le=256)
    # Leases (quota.py): each replica admits a key's requests from a slice of its limits and
    # budget held in memory, at most lease_permille of each limit and never more than the
    # headroom / lease_safety, refilled in the background, given back after lease_ttl_s unused.
    # 0 turns leases off (every request of a limited key is one statement).
    lease_permille: int = Field(default=20, ge=0, le=100)
    lease_ttl_s: float = Field(default=1.0, ge=0.05, le=5.0)
    lease_safety: int = Field(default=4, ge=2, le=1000)
    # Each replica publishes its route status this often; the fleet status merges the views
    # published in the last three intervals.
    status_publish_s: float = Field(default=2.0, gt=0, le=60)
    # azora-ledger (spend booking, ledger.py); empty URL: spend stays in the outbox.
    ledger_url: str = ""
    ledger_token: SecretStr = SecretStr("")
    ledger_interval_s: float = Field(default=2.0, gt=0, le=600)
    # Teams that get their own label value on the per-team metrics (dashboards); every other
    # team is counted as "other", static tokens as "none". Keeps the label set bounded.
    metric_teams: list[str] = Field(default_factory=list, max_length=200)
    # Route limits (rateLimits, including perClient) are enforced by each process on its
    # share: limit / route_limit_replicas. Set it to the Deployment's replica count so that the
    # replicas together admit at most the limit (exactly the limit when the load balancer
    # spreads the clients evenly; less when one replica gets more than its share). 1: every
    # process enforces the whole limit (the behaviour before issue 15).
    route_limit_replicas: int = Field(default=1, ge=1, le=1000)
