"""Prometheus metrics. Labels are bounded: the instance name, the endpoint, the model id."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# OpenTelemetry GenAI recommended boundaries (seconds), as the orchestrator uses.
_DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
_TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)


class BackendMetrics:
    def __init__(self, instance_name: str) -> None:
        self.registry = CollectorRegistry()
        self.instance_name = instance_name
        self.info = Gauge(
            "azora_model_backend_info",
            "Constant 1; labels name the instance and the models it serves",
            ["instance_name", "chat_model", "embedding_model"],
            registry=self.registry,
        )
        self.requests = Counter(
            "azora_model_backend_requests_total",
            "Requests answered, by endpoint and HTTP status",
            ["instance_name", "endpoint", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "azora_model_backend_request_duration_seconds",
            "Time to answer a model request (to the last byte for streams)",
            ["instance_name", "endpoint"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "azora_model_backend_time_to_first_token_seconds",
            "Time from the request to the first generated token",
            ["instance_name", "model"],
            buckets=_TTFT_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "azora_model_backend_tokens_total",
            "Tokens processed, by model and type (input or output)",
            ["instance_name", "model", "type"],
            registry=self.registry,
        )

    def observe_request(self, endpoint: str, status: int, seconds: float | None) -> None:
        self.requests.labels(self.instance_name, endpoint, str(status)).inc()
        if seconds is not None:
            self.duration.labels(self.instance_name, endpoint).observe(seconds)

    def count_tokens(self, model: str, input_tokens: int, output_tokens: int = 0) -> None:
        self.tokens.labels(self.instance_name, model, "input").inc(input_tokens)
        if output_tokens:
            self.tokens.labels(self.instance_name, model, "output").inc(output_tokens)
