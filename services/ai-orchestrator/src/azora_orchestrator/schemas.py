"""API models: the admin envelope and the ``AIModelRoute`` spec (camelCase, as in the CRD)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_NO_NUL_TEXT = r"^[^\x00]*$"
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
# Headers the gateway sets itself; a route may not override them.
RESERVED_HEADERS = frozenset({"content-length", "host", "transfer-encoding", "connection"})


def parse_duration(value: str) -> float:
    """Go-style duration (``"90s"``, ``"1h30m"``, ``"250ms"``) to seconds."""
    text = value.strip()
    if not text:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"'{value}' is not a duration like '30s', '1m30s' or '250ms'")
    return total


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


Duration = str


class Timeouts(_Spec):
    connect: Duration = "2s"
    first_byte: Duration = Field(default="30s", alias="firstByte")
    total: Duration = "300s"
    stream_idle: Duration = Field(default="30s", alias="streamIdle")

    @field_validator("connect", "first_byte", "total", "stream_idle")
    @classmethod
    def _positive(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be greater than zero")
        return value


class SecretRef(_Spec):
    name: str = Field(min_length=1, max_length=253)
    key: str = Field(min_length=1, max_length=253)


class Price(_Spec):
    """Integer minor units of ``currency`` per million input / output tokens."""

    currency: str = Field(pattern=r"^[A-Z]{3}$")
    input_per_million: int = Field(alias="inputPerMillion", ge=0, le=10**12)
    output_per_million: int = Field(alias="outputPerMillion", ge=0, le=10**12)


class BackendSpec(_Spec):
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-zA-Z0-9]([a-zA-Z0-9._-]*)$")
    url: str = Field(min_length=1, max_length=2048)
    model: str | None = Field(default=None, min_length=1, max_length=256)
    weight: int = Field(default=1, ge=0, le=1000)
    priority: int = Field(default=0, ge=0, le=100)
    max_concurrency: int | None = Field(default=None, alias="maxConcurrency", ge=1, le=1_000_000)
    price: Price | None = None
    timeouts: Timeouts = Field(default_factory=Timeouts)
    headers: dict[str, str] = Field(default_factory=dict)
    api_key_secret_ref: SecretRef | None = Field(default=None, alias="apiKeySecretRef")
    api_key: str | None = Field(default=None, alias="apiKey", max_length=4096)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", value):
            raise ValueError("must be an http(s)://host[:port][/path] URL without query")
        return value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not _HEADER_NAME.match(name) or name.lower() in RESERVED_HEADERS:
                raise ValueError(f"'{name}' is not an allowed header name")
            if "\r" in header_value or "\n" in header_value:
                raise ValueError(f"the value of '{name}' contains a line break")
        return value


class RetrySpec(_Spec):
    attempts: int = Field(default=3, ge=1, le=10)
    budget_percent: int = Field(default=20, alias="budgetPercent", ge=0, le=100)
    per_try_timeout: Duration = Field(default="30s", alias="perTryTimeout")

    @field_validator("per_try_timeout")
    @classmethod
    def _positive(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be greater than zero")
        return value


class ActiveCheck(_Spec):
    path: str = Field(default="/models", pattern=r"^/[^\s?#]*$", max_length=512)
    interval: Duration = "10s"

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: str) -> str:
        if parse_duration(value) < 0.05:
            raise ValueError("must be at least 50ms")
        return value


class HealthSpec(_Spec):
    consecutive_failures: int = Field(default=5, alias="consecutiveFailures", ge=1, le=1000)
    base_ejection: Duration = Field(default="30s", alias="baseEjection")
    max_ejection_percent: int = Field(default=50, alias="maxEjectionPercent", ge=0, le=100)
    active_check: ActiveCheck | None = Field(default=None, alias="activeCheck")

    @field_validator("base_ejection")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class ClientLimits(_Spec):
    requests_per_minute: int | None = Field(default=None, alias="requestsPerMinute", ge=1)
    tokens_per_minute: int | None = Field(default=None, alias="tokensPerMinute", ge=1)


class RateLimits(_Spec):
    requests_per_minute: int | None = Field(default=None, alias="requestsPerMinute", ge=1)
    tokens_per_minute: int | None = Field(default=None, alias="tokensPerMinute", ge=1)
    per_client: ClientLimits | None = Field(default=None, alias="perClient")


Strategy = Literal["weighted-round-robin", "least-request", "latency"]


class RouteSpec(_Spec):
    model: str = Field(min_length=1, max_length=256)
    strategy: Strategy = "weighted-round-robin"
    backends: list[BackendSpec] = Field(min_length=1, max_length=256)
    fallbacks: list[str] = Field(default_factory=list, max_length=16)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    health: HealthSpec = Field(default_factory=HealthSpec)
    rate_limits: RateLimits | None = Field(default=None, alias="rateLimits")


class StoredRoute(BaseModel):
    namespace: str
    name: str
    generation: int
    uid: str
    revision: int
    spec: dict[str, Any]


class RouteList(BaseModel):
    items: list[StoredRoute]


Health = Literal["healthy", "unknown", "ejected", "unhealthy"]


class BackendStatus(BaseModel):
    name: str
    healthy: bool = Field(description="health == 'healthy'")
    health: Health = Field(
        description="ejected: passive ejection in force (until ejected_until); unhealthy: "
        "active checks failing; unknown: has not answered yet (no passing check, no "
        "successful request; still gets traffic); healthy: answered and neither of those."
    )
    ejected_until: str | None
    in_flight: int
    effective_weight: float = Field(
        description="The weight the router gives the backend now: 0 while it gets no traffic, "
        "scaled by the slow-start ramp that starts when an ejection ends."
    )
    consecutive_failures: int = Field(description="Failed tries since the last success.")
    latency_ms_ewma: float | None
    error_rate: float


class RouteStatus(BaseModel):
    revision: int
    generation: int
    strategy: str
    backends: list[BackendStatus]
    healthy: int
    unknown: int
    ejected: int
    unhealthy: int
    total: int
    ready: bool = Field(description="At least one backend is healthy (has answered).")


# -- virtual keys ------------------------------------------------------------------------------

_TEAM = r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$"
_CURRENCY = r"^[A-Z]{3}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class KeyBudget(_Body):
    """A spending cap per window: an amount in a currency's minor units, or tokens."""

    # strict: a JSON true is not the integer 1 (pydantic's lax mode would store it as 1).
    amount: int = Field(ge=1, le=10**15, strict=True, description="Minor units (cents) or tokens.")
    unit: str = Field(
        pattern=r"^([A-Z]{3}|tokens)$", description="ISO 4217 currency code, or 'tokens'."
    )
    period: Duration = Field(
        default="720h",
        description="Window length (Go duration); windows start at multiples of it since the "
        "Unix epoch, UTC ('24h' resets at midnight UTC).",
    )

    @field_validator("period")
    @classmethod
    def _period(cls, value: str) -> str:
        seconds = parse_duration(value)
        if seconds < 1 or seconds != int(seconds) or seconds > 366 * 86400:
            raise ValueError("must be whole seconds between 1s and 8784h")
        return value


class KeyCreate(_Body):
    team: str = Field(pattern=_TEAM, max_length=63)
    owner: str = Field(min_length=1, max_length=200, pattern=_NO_NUL_TEXT)
    models: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="Public model names the key may call; empty means every model.",
    )
    requests_per_minute: int | None = Field(
        default=None, alias="requestsPerMinute", ge=1, le=10_000_000, strict=True
    )
    tokens_per_minute: int | None = Field(
        default=None, alias="tokensPerMinute", ge=1, le=2_000_000_000, strict=True
    )
    budget: KeyBudget | None = None
    expires_at: datetime | None = Field(default=None, alias="expiresAt")
    metadata: dict[str, str] = Field(default_factory=dict, max_length=64)

    @field_validator("models")
    @classmethod
    def _models(cls, value: list[str]) -> list[str]:
        for model in value:
            if not model or len(model) > 256 or "\x00" in model:
                raise ValueError("model names are 1 to 256 characters")
        return sorted(set(value))

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a time zone (UTC: a trailing 'Z')")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        for k, v in value.items():
            if not k or len(k) > 128 or len(v) > 1024 or "\x00" in k + v:
                raise ValueError("keys are 1-128 characters, values at most 1024")
        return value


class KeyView(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    id: str
    prefix: str = Field(description="The first characters of the secret, to recognise it.")
    team: str
    owner: str
    models: list[str]
    requests_per_minute: int | None = Field(alias="requestsPerMinute")
    tokens_per_minute: int | None = Field(alias="tokensPerMinute")
    budget: KeyBudget | None
    expires_at: datetime | None = Field(alias="expiresAt")
    metadata: dict[str, str]
    created_at: datetime = Field(alias="createdAt")
    rotated_at: datetime | None = Field(alias="rotatedAt")
    revoked_at: datetime | None = Field(alias="revokedAt")
    state: Literal["active", "expired", "revoked"]


class KeyCreated(KeyView):
    key: str = Field(description="The secret: shown once, stored only as its SHA-256 hash.")


class KeyList(BaseModel):
    items: list[KeyView]


class KeySpend(BaseModel):
    """The enforcement counters of a key (shared by every replica)."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    id: str
    unit: str | None
    budget: int | None
    window_start: datetime | None = Field(alias="windowStart")
    resets_at: datetime | None = Field(alias="resetsAt")
    spent: int = Field(description="Settled in the current window.")
    reserved: int = Field(description="Reserved by requests in flight (or lost in a crash).")
    remaining: int | None
    total_spent: int = Field(alias="totalSpent", description="Everything ever settled.")


class UsageItem(BaseModel):
    bucket_start: str
    group: str | None
    currency: str | None
    requests: int
    errors: int
    error_rate: float
    prompt_tokens: int
    completion_tokens: int
    cost: int = Field(description="Minor units of currency (null currency: unpriced).")
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    latency_ms_p99: float | None
    ttft_ms_p50: float | None
    ttft_ms_p95: float | None
    ttft_ms_p99: float | None


class UsageReport(BaseModel):
    group_by: str
    items: list[UsageItem]
