"""Admission: who may call, which model they ask for, and whether the route's limits allow it.

A request is admitted in this order (each refusal an OpenAI-shaped answer, nothing charged):
the bearer token and its scope (401/403) before the body is read; the body's size (413),
JSON (400) and ``model`` (400, then 404 when no route serves it); then the route's and the
client's token buckets (429 with ``Retry-After``). What passes becomes a :class:`Ticket`, the
one object the upstream attempts work from; :meth:`Ticket.settle` is where the usage a backend
reports comes back to the limits that were charged an estimate.

Single event-loop thread and no await between checking the buckets and taking from them, so
check-then-take is atomic.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from azora_orchestrator import asgi, metrics
from azora_orchestrator.keys import TOKENS, KeyInfo, hash_secret
from azora_orchestrator.limits import Bucket
from azora_orchestrator.quota import SharedState, estimate_cost
from azora_orchestrator.routing import Route, RouteTable
from azora_orchestrator.settings import OrchestratorSettings

if TYPE_CHECKING:
    from azora_orchestrator.routing import Backend

log = logging.getLogger("azora.orchestrator")

INVOKE_SCOPE = "ai:invoke"
MAX_TOKENS_ESTIMATE = 1_000_000_000
MAX_REPORTED_TOKENS = 1_000_000_000_000


@dataclass(frozen=True, slots=True)
class Caller:
    client_id: str  # a hash of the token (or the key id): a map key, never a metric label
    allowed: bool
    key: KeyInfo | None = None  # a virtual key; None for the static tokens


def int_or_zero(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(slots=True)
class Ticket:
    """An admitted request: what the upstream attempts need, and what it was charged."""

    op: str
    table: RouteTable  # the snapshot the route was found in (fallbacks come from it too)
    route: Route
    payload: dict[str, Any]
    body: bytes
    stream: bool
    t0: float
    charged: list[Bucket]
    estimate: int
    key: KeyInfo | None = None
    # The gateway asked for stream usage the client did not: the usage event is not relayed.
    strip_usage: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_known: bool = False
    # The shared reservation of a key with limits or a budget (settled by usage.py).
    shared: bool = False
    reserved: int = 0  # budget units: minor units or tokens
    key_tokens: int = 0  # charged to the key's tokens/min
    window: datetime | None = None
    # How it ended (usage.py records it): the backend that answered, status and outcome.
    backend: Backend | None = None
    status: int = 0
    outcome: str = ""
    ttft_s: float | None = None
    upstream_s: float = 0.0  # time spent waiting on backends (not the gateway's overhead)
    committed: bool = False  # a response has started: an error can no longer be answered

    def overhead(self, now: float) -> float:
        return max(0.0, now - self.t0 - self.upstream_s)

    def settle(self, usage: dict[str, Any]) -> tuple[int, int]:
        """Reconcile the token buckets with the usage the backend reported; returns the
        (prompt, completion) tokens."""
        prompt = int_or_zero(usage.get("prompt_tokens"))
        completion = int_or_zero(usage.get("completion_tokens"))
        total = int_or_zero(usage.get("total_tokens")) or prompt + completion
        # Recorded and priced: bounded so that a backend's nonsense cannot overflow a bigint
        # and poison the usage batch it is written in.
        self.prompt_tokens = min(max(prompt, 0), MAX_REPORTED_TOKENS)
        self.completion_tokens = min(max(completion, 0), MAX_REPORTED_TOKENS)
        self.usage_known = True
        # The buckets were charged the estimate; charge the difference now.
        for bucket in self.charged:
            bucket.adjust(total - self.estimate)
        return prompt, completion


def _models_body(table: RouteTable, allowed: frozenset[str]) -> bytes:
    data = [
        {"id": m, "object": "model", "created": 0, "owned_by": "azora"}
        for m in sorted(table.by_model)
        if m in allowed
    ]
    return orjson.dumps({"object": "list", "data": data})


class Admission:
    """The API tokens, the virtual keys' snapshot and the token buckets of one process."""

    def __init__(self, settings: OrchestratorSettings, shared: SharedState | None = None) -> None:
        self.settings = settings
        self.shared = shared
        # SHA-256 of a virtual key's secret -> the key; replaced as a whole on every reload.
        self.keys: dict[bytes, KeyInfo] = {}
        self._buckets: dict[tuple[str, str, str], Bucket] = {}
        self.callers: dict[bytes, Caller] = {}
        for token, scopes in settings.api_tokens.items():
            if token:
                self.callers[token.encode()] = Caller(
                    client_id=hashlib.sha256(token.encode()).hexdigest()[:16],
                    allowed="*" in scopes or INVOKE_SCOPE in scopes,
                )
        admin = settings.admin_token.get_secret_value()
        if admin and admin.encode() not in self.callers:
            self.callers[admin.encode()] = Caller("admin", allowed=False)

    async def admit(self, request: Request, op: str, table: RouteTable) -> Ticket | Response:
        t0 = time.perf_counter()
        token: bytes | None = None
        length = -1
        for name, value in request.scope["headers"]:
            if name == b"authorization":
                if value[:7].lower() == b"bearer ":
                    token = value[7:].strip()
            elif name == b"content-length" and value.isdigit():
                length = int(value)
        caller = self.callers.get(token) if token else None
        key: KeyInfo | None = None
        if caller is None:
            if token:
                key = self.keys.get(hash_secret(token))
            if key is None:
                return asgi.error(401, "a valid bearer API token is required", "invalid_api_key")
            if key.expires <= time.time():
                return asgi.error(401, "this API key has expired", "invalid_api_key")
            caller = Caller(key.id, True, key)
        elif not caller.allowed:
            return asgi.error(403, f"this token lacks the '{INVOKE_SCOPE}' scope", "forbidden")
        if op == "models":
            if key is not None and key.models is not None:
                return asgi.Answer(200, _models_body(table, key.models))
            return asgi.Answer(200, table.models_body)
        limit = self.settings.max_request_bytes
        if length > limit:
            return asgi.too_large(limit)
        try:
            body = await asgi.read_body(request.receive, limit)
        except asgi.ClientGone:
            return asgi.NoAnswer()
        if body is None:
            return asgi.too_large(limit)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return asgi.error(400, f"the body is not valid JSON: {exc}", "invalid_json")
        if not isinstance(payload, dict):
            return asgi.error(400, "the body must be a JSON object", "invalid_json")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            return asgi.error(
                400, "'model' is required and must be a string", "missing_model", "model"
            )
        route = table.by_model.get(model)
        if route is None:
            return asgi.error(
                404, f"The model '{model}' does not exist", "model_not_found", "model"
            )
        if key is not None and key.models is not None and model not in key.models:
            return asgi.error(
                403, f"this API key may not use the model '{model}'", "model_not_allowed", "model"
            )
        stream = op != "embeddings" and payload.get("stream") is True
        strip_usage = False
        if stream and self.settings.stream_usage:
            # Cost and limits need the usage of every stream: ask for the final usage event
            # (stream_options.include_usage) and keep it from a client that did not ask.
            options = payload.get("stream_options")
            if not isinstance(options, dict) or options.get("include_usage") is not True:
                payload["stream_options"] = {
                    **(options if isinstance(options, dict) else {}),
                    "include_usage": True,
                }
                body = orjson.dumps(payload)
                strip_usage = True
        estimate = 0
        charged: list[Bucket] = []
        taken: list[tuple[Bucket, int]] = []
        if route.rpm or route.tpm or route.client_rpm or route.client_tpm:
            if route.tpm or route.client_tpm:
                estimate = sum(self._estimate(payload, body, op))
            refused = self._take(
                route, caller.client_id, estimate, time.monotonic(), charged, taken
            )
            if refused is not None:
                wait, which = refused
                metrics.RATE_LIMITED.labels(route.key, which).inc()
                seconds = max(1, int(wait + 0.999))
                return asgi.error(
                    429,
                    f"rate limit of route {route.key} exceeded ({which}); retry in {seconds}s",
                    "rate_limit_exceeded",
                    headers=((b"retry-after", str(seconds).encode()),),
                )
        ticket = Ticket(
            op, table, route, payload, body, stream, t0, charged, estimate, key, strip_usage
        )
        if key is not None and key.shared:
            refusal = await self._admit_shared(ticket, key, route, taken)
            if refusal is not None:
                return refusal
        return ticket

    async def _admit_shared(
        self, ticket: Ticket, key: KeyInfo, route: Route, taken: list[tuple[Bucket, int]]
    ) -> Response | None:
        """The key's limits and budget, shared by every replica (quota.py): from this
        replica's lease of the key (no round trip), else one statement."""
        prompt, out = self._estimate(ticket.payload, ticket.body, ticket.op)
        cost = estimate_cost(key, route, prompt, out) if key.budget else 0
        try:
            assert self.shared is not None
            verdict = await self.shared.admit(key, prompt + out, cost)
        except Exception:
            log.warning("shared admission failed for key %s", key.id, exc_info=True)
            self._refund(taken)
            return asgi.error(
                503, "the gateway cannot check this key's limits right now", "limits_unavailable"
            )
        if verdict.ok:
            ticket.shared = True
            ticket.reserved = cost if key.budget else 0
            ticket.key_tokens = prompt + out if key.tpm else 0
            ticket.window = verdict.window_start
            return None
        self._refund(taken)
        if verdict.reason == "budget":
            metrics.RATE_LIMITED.labels(route.key, "budget").inc()
            remaining = max(0, key.budget - verdict.spent - verdict.reserved)
            unit = "tokens" if key.unit == TOKENS else f"{key.unit} minor units"
            headers = [
                (b"x-azora-budget-remaining", str(remaining).encode()),
                (b"x-azora-budget-unit", (key.unit or "").encode()),
            ]
            reset = ""
            if key.period_s:
                resets = verdict.window_start + timedelta(seconds=key.period_s)
                stamp = resets.astimezone(UTC).isoformat().replace("+00:00", "Z")
                reset = f"; the budget resets at {stamp}"
                headers.append((b"x-azora-budget-reset", stamp.encode()))
            return asgi.error(
                402,
                f"the budget of API key {key.id} is used up: {remaining} {unit} remaining "
                f"of {key.budget}{reset}",
                "insufficient_quota",
                headers=headers,
            )
        metrics.RATE_LIMITED.labels(route.key, "key").inc()
        seconds = max(1, int(verdict.wait_s + 0.999))
        what = "requests" if verdict.reason == "requests" else "tokens"
        return asgi.error(
            429,
            f"rate limit of API key {key.id} exceeded ({what} per minute); retry in {seconds}s",
            "rate_limit_exceeded",
            headers=((b"retry-after", str(seconds).encode()),),
        )

    @staticmethod
    def _refund(taken: list[tuple[Bucket, int]]) -> None:
        for bucket, amount in taken:
            bucket.adjust(-amount)

    def _estimate(self, payload: dict[str, Any], body: bytes, op: str) -> tuple[int, int]:
        """(prompt, completion) tokens expected before admission."""
        # Before admission the only honest numbers are the output cap and the prompt size;
        # the body length over 4 bounds the prompt tokens from above (roughly, for English).
        prompt = len(body) // 4
        if op == "embeddings":
            return prompt, 0
        cap = payload.get("max_completion_tokens") or payload.get("max_tokens")
        out = int_or_zero(cap) or self.settings.default_max_tokens_estimate
        # A negative or absurd cap must not make a reservation negative or overflow a bigint
        # (the backend answers such a request 400; the reservation is released then).
        return prompt, min(max(out, 0), MAX_TOKENS_ESTIMATE)

    def _bucket(self, route: str, client: str, kind: str, per_minute: int, now: float) -> Bucket:
        key = (route, client, kind)
        bucket = self._buckets.get(key)
        # A route's limits are split evenly over the replicas (route_limit_replicas): each
        # process enforces its share, so together they never admit more than the limit.
        share = per_minute / self.settings.route_limit_replicas
        if bucket is None:
            bucket = self._buckets[key] = Bucket(share, now)
        elif bucket.capacity != share:
            bucket.resize(share)
        return bucket

    def _take(
        self,
        route: Route,
        client: str,
        estimate: int,
        now: float,
        charged: list[Bucket],
        taken: list[tuple[Bucket, int]],
    ) -> tuple[float, str] | None:
        checks: list[tuple[Bucket, int, str]] = []
        if route.rpm:
            checks.append((self._bucket(route.key, "", "r", route.rpm, now), 1, "route"))
        if route.client_rpm:
            checks.append(
                (self._bucket(route.key, client, "r", route.client_rpm, now), 1, "client")
            )
        tokens: list[Bucket] = []
        if route.tpm:
            tokens.append(self._bucket(route.key, "", "t", route.tpm, now))
            checks.append((tokens[-1], estimate, "route"))
        if route.client_tpm:
            tokens.append(self._bucket(route.key, client, "t", route.client_tpm, now))
            checks.append((tokens[-1], estimate, "client"))
        # Check every bucket before taking from any, so a refusal charges nothing.
        for bucket, amount, which in checks:
            bucket.refill(now)
            wait = bucket.wait_for(amount)
            if wait > 0:
                return wait, which
        for bucket, amount, _ in checks:
            bucket.take(amount)
            taken.append((bucket, amount))
        charged.extend(tokens)
        return None
