"""Prometheus metrics: OpenTelemetry GenAI client/server metrics and routing decisions.

Labels are bounded: route (namespace/name), backend (name in the route), model (the route's
public model), outcome, token type, reason, scope. Never a client key or a request id.
Backend gauges (health, in-flight, effective weight) are read from the live route table at
scrape time by a collector, so the hot path never touches them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from azora_orchestrator.routing import RouteTable

# Bucket boundaries recommended by the OpenTelemetry GenAI semantic conventions.
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
OVERHEAD_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip

OPERATION_DURATION = Histogram(
    "azora_gen_ai_client_operation_duration_seconds",
    "GenAI operation duration seen by the gateway (gen_ai.client.operation.duration).",
    ["route", "backend", "model", "outcome"],
    buckets=DURATION_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "azora_gen_ai_server_time_to_first_token_seconds",
    "Time to the first streamed chunk (gen_ai.server.time_to_first_token).",
    ["route", "backend", "model"],
    buckets=TTFT_BUCKETS,
)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "azora_gen_ai_server_time_per_output_token_seconds",
    "Time per output token after the first (gen_ai.server.time_per_output_token).",
    ["route", "backend", "model"],
    buckets=TPOT_BUCKETS,
)
TOKEN_USAGE = Histogram(
    "azora_gen_ai_client_token_usage",
    "Tokens per request by type input/output (gen_ai.client.token.usage).",
    ["route", "backend", "model", "token_type"],
    buckets=TOKEN_BUCKETS,
)
REQUESTS = Counter(
    "azora_orchestrator_requests_total",
    "Proxied requests by route, final backend and outcome.",
    ["route", "backend", "outcome"],
)
RETRIES = Counter(
    "azora_orchestrator_retries_total",
    "Retries by route and the reason of the failed try.",
    ["route", "reason"],
)
FALLBACKS = Counter(
    "azora_orchestrator_fallbacks_total",
    "Requests handed to a fallback route (another model).",
    ["route", "fallback"],
)
EJECTIONS = Counter(
    "azora_orchestrator_ejections_total",
    "Passive-health ejections of a backend.",
    ["route", "backend"],
)
RATE_LIMITED = Counter(
    "azora_orchestrator_rate_limited_total",
    "Requests refused by a limit; scope is route, client (route perClient), key (a virtual "
    "key's limits) or budget.",
    ["route", "scope"],
)
OVERHEAD = Histogram(
    "azora_orchestrator_overhead_seconds",
    "Time the gateway itself added to a request (total minus time waiting on backends).",
    ["route"],
    buckets=OVERHEAD_BUCKETS,
)


class BackendGauges(Collector):
    """Health, in-flight and effective weight of every backend, read at scrape time."""

    def __init__(self, table: Callable[[], RouteTable | None]) -> None:
        self._table = table

    def collect(self) -> Iterator[GaugeMetricFamily]:
        healthy = GaugeMetricFamily(
            "azora_orchestrator_backend_healthy",
            "1 when the backend may receive traffic (not ejected, active checks passing).",
            labels=["route", "backend"],
        )
        in_flight = GaugeMetricFamily(
            "azora_orchestrator_backend_in_flight",
            "Requests in flight to the backend.",
            labels=["route", "backend"],
        )
        weight = GaugeMetricFamily(
            "azora_orchestrator_backend_effective_weight",
            "Configured weight scaled by the slow-start ramp.",
            labels=["route", "backend"],
        )
        table = self._table()
        if table is not None:
            now = time.monotonic()
            for route in table.by_key.values():
                for b in route.backends:
                    labels = [route.key, b.cfg.name]
                    healthy.add_metric(labels, 1.0 if route.healthy(b, now) else 0.0)
                    in_flight.add_metric(labels, float(b.state.in_flight))
                    weight.add_metric(labels, route.effective_weight(b, now))
        yield healthy
        yield in_flight
        yield weight

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


class _TableRef:
    def __init__(self) -> None:
        self.get: Callable[[], RouteTable | None] = lambda: None


# One collector per process; the running gateway points it at its table.
GAUGE_SOURCE = _TableRef()
REGISTRY.register(BackendGauges(lambda: GAUGE_SOURCE.get()))

USAGE_WRITTEN = Counter(
    "azora_orchestrator_usage_records_written_total",
    "Usage records written to PostgreSQL by the batch writer.",
)
USAGE_DROPPED = Counter(
    "azora_orchestrator_usage_records_dropped_total",
    "Usage records dropped because the buffer was full while the database was unreachable.",
)
LEDGER_BATCHES = Counter(
    "azora_orchestrator_ledger_batches_total",
    "Spend batches sent to azora-ledger, by result (booked, error).",
    ["result"],
)

# Per team, for the dashboards' trend panels (the books are the usage API and the ledger). The
# team label is bounded by configuration (metric_teams): other teams are "other", static
# tokens "none"; key ids are never labels.
SPEND = Counter(
    "azora_orchestrator_spend_minor",
    "Cost of answered requests in the currency's minor units, by team (bounded) and currency.",
    ["team", "currency"],
)
TEAM_TOKENS = Counter(
    "azora_orchestrator_team_tokens",
    "Tokens reported by backends, by team (bounded) and token_type (input, output).",
    ["team", "token_type"],
)
TEAM_REQUESTS = Counter(
    "azora_orchestrator_team_requests",
    "Finished requests by team (bounded) and status class (2xx, 4xx, 5xx).",
    ["team", "status_class"],
)
