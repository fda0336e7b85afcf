"""The data plane: raw ASGI endpoints for ``/v1/*`` and the gateway that routes them.

Why raw ASGI: FastAPI's dependency injection and validation cost more than the whole proxying
work; here the body is read once, parsed once with orjson only to read ``model`` and
``stream``, and forwarded (re-serialised only when the backend has its own model name) with one
shared aiohttp session. Responses are relayed without buffering for streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from starlette.routing import Route as StarletteRoute
from starlette.types import Message, Receive, Scope, Send

from azora_common.logs import SANE_REQUEST_ID, current_request_id, request_id_var
from azora_orchestrator import metrics
from azora_orchestrator.errors import ERROR_TYPES, openai_error_body
from azora_orchestrator.limits import Bucket, RetryBudget
from azora_orchestrator.routing import (
    Backend,
    BackendState,
    Route,
    RouteTable,
    StateKey,
    Tier,
    build_route,
)
from azora_orchestrator.settings import OrchestratorSettings

log = logging.getLogger("azora.orchestrator")

INVOKE_SCOPE = "ai:invoke"
_JSON = b"application/json"
_SSE = b"text/event-stream"
_DONE = b"data: [DONE]"


class _ClientGone(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Caller:
    client_id: str  # a hash of the token: safe as a map key, never a metric label
    allowed: bool


@dataclass(slots=True)
class Failure:
    """One failed try. ``final`` failures are answered as they are (a backend 4xx)."""

    reason: str
    backend: Backend
    status: int | None = None
    body: bytes = b""
    content_type: bytes = _JSON
    retry_after: float | None = None
    final: bool = False


@dataclass(slots=True)
class Timing:
    t0: float
    upstream_s: float = 0.0  # time spent waiting on backends (excluded from overhead)

    def overhead(self, now: float) -> float:
        return max(0.0, now - self.t0 - self.upstream_s)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _usage_of(body: bytes) -> dict[str, Any] | None:
    if b'"usage"' not in body:
        return None
    try:
        usage = orjson.loads(body).get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None


def _stream_usage(chunk: bytes) -> dict[str, Any] | None:
    # Only the chunk that carries usage (stream_options.include_usage) is parsed.
    for line in chunk.split(b"\n"):
        if line.startswith(b"data: {") and b'"usage"' in line:
            try:
                usage = orjson.loads(line[6:]).get("usage")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if isinstance(usage, dict):
                return usage
    return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Gateway:
    """Holds the route table, the upstream session and all runtime state of one process."""

    def __init__(self, settings: OrchestratorSettings) -> None:
        self.settings = settings
        self.table = RouteTable({}, {}, 0, b'{"object":"list","data":[]}')
        self._states: dict[StateKey, BackendState] = {}
        self._budgets: dict[str, RetryBudget] = {}
        self._buckets: dict[tuple[str, str, str], Bucket] = {}
        self.session: aiohttp.ClientSession | None = None
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

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.settings.upstream_max_connections,
            limit_per_host=0,
            keepalive_timeout=self.settings.upstream_keepalive_s,
            ttl_dns_cache=300,
        )
        # Bodies are relayed as they are: no transparent decompression, no Accept-Encoding
        # added on the client's behalf.
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
        )
        metrics.GAUGE_SOURCE.get = lambda: self.table

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    def install(self, rows: list[Any]) -> None:
        """Build a new table from stored rows and swap it in with one assignment."""
        new_states: dict[StateKey, BackendState] = {}
        by_model: dict[str, Route] = {}
        by_key: dict[str, Route] = {}
        revision = 0
        for row in rows:
            try:
                route = build_route(row, self.settings, self._states, new_states)
            except Exception:  # a row stored by an older version that no longer parses
                log.exception("route %s/%s cannot be loaded; skipped", row.namespace, row.name)
                continue
            by_model[route.model] = route
            by_key[route.key] = route
            revision = max(revision, route.revision)
        models = {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "azora"}
                for m in sorted(by_model)
            ],
        }
        self._states = new_states
        self.table = RouteTable(by_model, by_key, revision, orjson.dumps(models))

    # -- ASGI endpoints ------------------------------------------------------------------------

    def routes(self) -> list[StarletteRoute]:
        out = []
        for path, op in (
            ("/v1/chat/completions", "chat"),
            ("/v1/completions", "completions"),
            ("/v1/embeddings", "embeddings"),
        ):
            endpoint = _Endpoint(self, op)
            route = StarletteRoute(path, endpoint=endpoint, methods=["POST"])
            endpoint.route = route
            out.append(route)
        models = _Endpoint(self, "models")
        route = StarletteRoute("/v1/models", endpoint=models, methods=["GET"])
        models.route = route
        out.append(route)
        return out

    # -- request handling ----------------------------------------------------------------------

    async def handle(self, op: str, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        token: bytes | None = None
        length = -1
        for name, value in scope["headers"]:
            if name == b"authorization":
                if value[:7].lower() == b"bearer ":
                    token = value[7:].strip()
            elif name == b"content-length" and value.isdigit():
                length = int(value)
        caller = self.callers.get(token) if token else None
        if caller is None:
            await _error(send, 401, "a valid bearer API token is required", "invalid_api_key")
            return
        if not caller.allowed:
            await _error(send, 403, f"this token lacks the '{INVOKE_SCOPE}' scope", "forbidden")
            return
        if op == "models":
            await _respond(send, 200, self.table.models_body, _JSON, ())
            return
        limit = self.settings.max_request_bytes
        if length > limit:
            await _too_large(send, limit)
            return
        try:
            body = await _read_body(receive, limit)
        except _ClientGone:
            return
        if body is None:
            await _too_large(send, limit)
            return
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            await _error(send, 400, f"the body is not valid JSON: {exc}", "invalid_json")
            return
        if not isinstance(payload, dict):
            await _error(send, 400, "the body must be a JSON object", "invalid_json")
            return
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            await _error(
                send, 400, "'model' is required and must be a string", "missing_model", "model"
            )
            return
        route = self.table.by_model.get(model)
        if route is None:
            await _error(
                send, 404, f"The model '{model}' does not exist", "model_not_found", "model"
            )
            return
        stream = op != "embeddings" and payload.get("stream") is True
        now = time.monotonic()
        estimate = 0
        charged: list[Bucket] = []
        if route.rpm or route.tpm or route.client_rpm or route.client_tpm:
            if route.tpm or route.client_tpm:
                estimate = self._estimate(payload, body, op)
            refused = self._admit(route, caller.client_id, estimate, now, charged)
            if refused is not None:
                wait, which = refused
                metrics.RATE_LIMITED.labels(route.key, which).inc()
                seconds = max(1, int(wait + 0.999))
                await _error(
                    send,
                    429,
                    f"rate limit of route {route.key} exceeded ({which}); retry in {seconds}s",
                    "rate_limit_exceeded",
                    headers=((b"retry-after", str(seconds).encode()),),
                )
                return
        await self._dispatch(
            op, route, payload, body, stream, Timing(t0), receive, send, charged, estimate
        )

    def _estimate(self, payload: dict[str, Any], body: bytes, op: str) -> int:
        # Before admission the only honest numbers are the output cap and the prompt size;
        # the body length over 4 bounds the prompt tokens from above (roughly, for English).
        prompt = len(body) // 4
        if op == "embeddings":
            return prompt
        cap = payload.get("max_completion_tokens") or payload.get("max_tokens")
        out = _int(cap) or self.settings.default_max_tokens_estimate
        return prompt + out

    def _bucket(self, route: str, client: str, kind: str, per_minute: int, now: float) -> Bucket:
        key = (route, client, kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(per_minute, now)
        elif bucket.capacity != per_minute:
            bucket.resize(per_minute)
        return bucket

    def _admit(
        self, route: Route, client: str, estimate: int, now: float, charged: list[Bucket]
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
        charged.extend(tokens)
        return None

    # -- routing loop --------------------------------------------------------------------------

    async def _dispatch(
        self,
        op: str,
        route: Route,
        payload: dict[str, Any],
        body: bytes,
        stream: bool,
        timing: Timing,
        receive: Receive,
        send: Send,
        charged: list[Bucket],
        estimate: int,
    ) -> None:
        now = time.monotonic()
        budget = self._budgets.get(route.key)
        if budget is None:
            budget = self._budgets[route.key] = RetryBudget(self.settings.retry_budget_window_s)
        budget.record_request(now)
        # The overall deadline only bounds waiting for Retry-After and starting new tries.
        deadline = now + route.per_try_s * route.attempts
        chain = [route]
        for name in route.fallbacks:
            fallback = self.table.by_model.get(name)
            if fallback is not None and fallback not in chain:
                chain.append(fallback)
        watch: asyncio.Future[Message] | None = None
        if stream:
            # The body has been read, so the next receive() only returns on disconnect.
            watch = asyncio.ensure_future(receive())
        last: Failure | None = None
        tried_any = False
        rewritten: dict[str, bytes] = {}
        try:
            for index, current in enumerate(chain):
                if index:
                    metrics.FALLBACKS.labels(route.key, current.key).inc()
                for tier in current.tiers:
                    tried: set[Backend] = set()
                    attempts = current.attempts
                    while attempts > 0:
                        now = time.monotonic()
                        backend = current.pick(tier, now, tried)
                        if backend is None and tried:
                            # Every available backend of the tier has had a try: attempts
                            # left go to them again (a transient 5xx often passes), unless
                            # they were ejected or asked to be left alone (Retry-After).
                            backend = current.pick(tier, now, None)
                        if backend is None:
                            wait = self._retry_wait(tier, last, now, deadline)
                            if wait is None:
                                break
                            assert last is not None
                            tried.discard(last.backend)
                            await asyncio.sleep(wait)
                            timing.upstream_s += wait
                            continue
                        if tried_any:
                            assert last is not None
                            if not budget.try_retry(
                                now, route.budget_percent, self.settings.retry_budget_min
                            ):
                                await self._finish_failure(route, last, timing, send, budget=True)
                                return
                            metrics.RETRIES.labels(route.key, last.reason).inc()
                        tried_any = True
                        attempts -= 1
                        upstream = backend.cfg.upstream_model
                        if upstream == route.model:
                            data = body
                        else:
                            # The only change to the body: the backend's own model name.
                            # Re-serialising keeps every other field, known or not.
                            data = rewritten.get(upstream) or b""
                            if not data:
                                payload["model"] = upstream
                                data = rewritten[upstream] = orjson.dumps(payload)
                        backend.state.in_flight += 1
                        try:
                            if stream:
                                assert watch is not None
                                result = await self._try_stream(
                                    op,
                                    current,
                                    backend,
                                    data,
                                    timing,
                                    send,
                                    watch,
                                    charged,
                                    estimate,
                                )
                            else:
                                result = await self._try_plain(
                                    op, current, backend, data, timing, send, charged, estimate
                                )
                        finally:
                            backend.state.in_flight -= 1
                        if result is None:
                            return
                        last = result
                        tried.add(backend)
                        if result.final:
                            await self._finish_failure(current, result, timing, send)
                            return
            if last is None:
                metrics.REQUESTS.labels(route.key, "none", "no_backend").inc()
                await _error(
                    send,
                    503,
                    f"no healthy backend is available for model '{route.model}'",
                    "no_backend_available",
                )
                return
            await self._finish_failure(route, last, timing, send)
        finally:
            if watch is not None:
                watch.cancel()

    def _retry_wait(
        self, tier: Tier, last: Failure | None, now: float, deadline: float
    ) -> float | None:
        """Sleep before retrying a backend of this tier that asked for a short Retry-After.

        Only when nothing else in the tier is available; a Retry-After longer than our own
        limit or the request's deadline means: move on now (next tier, fallback, or the 429).
        """
        if last is None or last.retry_after is None or last.backend not in tier.backends:
            return None
        wait = max(0.0, last.backend.state.cooldown_until - now)
        if wait > self.settings.max_retry_wait_s or now + wait > deadline:
            return None
        if not last.backend.state.active_ok or last.backend.state.ejected:
            return None
        return wait + 0.001

    async def _finish_failure(
        self, route: Route, failure: Failure, timing: Timing, send: Send, budget: bool = False
    ) -> None:
        backend = failure.backend
        outcome = failure.reason if not failure.final else "client_error"
        _count(backend, outcome)
        overhead = timing.overhead(time.perf_counter())
        metrics.OVERHEAD.labels(route.key).observe(overhead)
        extra: list[tuple[bytes, bytes]] = [
            (b"x-azora-backend", backend.cfg.name.encode()),
            (b"x-azora-overhead-ms", f"{overhead * 1000:.3f}".encode()),
        ]
        if failure.status is not None:
            if failure.retry_after is not None:
                seconds = max(1, int(failure.retry_after + 0.999))
                extra.append((b"retry-after", str(seconds).encode()))
            body = failure.body or openai_error_body(
                f"backend answered {failure.status}", ERROR_TYPES.get(failure.status, "api_error")
            )
            await _respond(send, failure.status, body, failure.content_type, extra)
            return
        if failure.reason == "timeout":
            status, message = 504, "the backend did not answer in time"
        else:
            status, message = 502, "the backend could not be reached"
        if budget:
            message += " and the retry budget is exhausted"
        await _error(send, status, message, failure.reason, headers=tuple(extra))

    # -- one try -------------------------------------------------------------------------------

    def _classify(
        self, route: Route, backend: Backend, status: int, body: bytes, headers: Any, now: float
    ) -> Failure:
        ctype = headers.get("Content-Type", "application/json").encode()
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if status == 429:
            route.record_throttle(backend, now, retry_after)
            return Failure("status_429", backend, status, body, ctype, retry_after)
        if status >= 500:
            if retry_after is not None:
                route.record_throttle(backend, now, retry_after)
            if route.record_failure(backend, now):
                metrics.EJECTIONS.labels(route.key, backend.cfg.name).inc()
            return Failure("status_5xx", backend, status, body, ctype, retry_after)
        # Any other non-2xx is the client's problem (bad request, unknown upstream model):
        # the backend is healthy and another backend would answer the same.
        route.record_success(backend, None)
        return Failure("client_error", backend, status, body, ctype, None, final=True)

    def _transport_failure(
        self, route: Route, backend: Backend, exc: BaseException, now: float
    ) -> Failure:
        if route.record_failure(backend, now):
            metrics.EJECTIONS.labels(route.key, backend.cfg.name).inc()
        reason = "timeout" if isinstance(exc, TimeoutError) else "connect_error"
        return Failure(reason, backend)

    def _headers(self, backend: Backend) -> dict[str, str]:
        rid = current_request_id()
        if rid is None:
            return backend.cfg.headers
        return {**backend.cfg.headers, "X-Request-ID": rid}

    async def _try_plain(
        self,
        op: str,
        route: Route,
        backend: Backend,
        data: bytes,
        timing: Timing,
        send: Send,
        charged: list[Bucket],
        estimate: int,
    ) -> Failure | None:
        session = self.session
        assert session is not None
        cfg = backend.cfg
        started = time.perf_counter()
        try:
            async with session.post(
                cfg.endpoints[op],
                data=data,
                headers=self._headers(backend),
                timeout=cfg.plain_timeout,
            ) as resp:
                content = await resp.read()
                status = resp.status
                headers = resp.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            timing.upstream_s += time.perf_counter() - started
            return self._transport_failure(route, backend, exc, time.monotonic())
        finished = time.perf_counter()
        elapsed = finished - started
        timing.upstream_s += elapsed
        if status >= 300:
            return self._classify(route, backend, status, content, headers, time.monotonic())
        usage = _usage_of(content)
        out_tokens = 0
        if usage is not None:
            out_tokens = _int(usage.get("completion_tokens"))
            self._account_usage(route, backend, usage, charged, estimate)
        route.record_success(backend, elapsed / max(1, out_tokens))
        overhead = timing.overhead(time.perf_counter())
        await _respond(
            send,
            status,
            content,
            headers.get("Content-Type", "application/json").encode(),
            (
                (b"x-azora-backend", cfg.name.encode()),
                (b"x-azora-overhead-ms", f"{overhead * 1000:.3f}".encode()),
            ),
        )
        self._observe(route, backend, "success", elapsed, overhead)
        return None

    async def _try_stream(
        self,
        op: str,
        route: Route,
        backend: Backend,
        data: bytes,
        timing: Timing,
        send: Send,
        watch: asyncio.Future[Message],
        charged: list[Bucket],
        estimate: int,
    ) -> Failure | None:
        session = self.session
        assert session is not None
        cfg = backend.cfg
        started = time.perf_counter()
        resp: aiohttp.ClientResponse | None = None
        try:
            # Until the first byte reaches the client a failure may still go elsewhere; the
            # first-byte deadline bounds that phase (connect, headers and the first chunk).
            async with asyncio.timeout(cfg.first_byte_s):
                resp = await session.post(
                    cfg.endpoints[op],
                    data=data,
                    headers=self._headers(backend),
                    timeout=cfg.stream_timeout,
                )
                if resp.status >= 300:
                    content = await resp.read()
                    resp.release()
                    timing.upstream_s += time.perf_counter() - started
                    return self._classify(
                        route, backend, resp.status, content, resp.headers, time.monotonic()
                    )
                first = await resp.content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            if resp is not None:
                resp.close()
            timing.upstream_s += time.perf_counter() - started
            return self._transport_failure(route, backend, exc, time.monotonic())
        if not first:
            # The backend closed before sending anything: still safe to try another.
            resp.close()
            timing.upstream_s += time.perf_counter() - started
            if route.record_failure(backend, time.monotonic()):
                metrics.EJECTIONS.labels(route.key, backend.cfg.name).inc()
            return Failure("empty_stream", backend)
        ttft = time.perf_counter() - started
        timing.upstream_s += ttft
        overhead = timing.overhead(time.perf_counter())
        outcome = "success"
        usage: dict[str, Any] | None = None
        events = 0
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": resp.status,
                    "headers": [
                        (b"content-type", resp.headers.get("Content-Type", "").encode() or _SSE),
                        (b"cache-control", b"no-cache"),
                        (b"x-azora-backend", cfg.name.encode()),
                        (b"x-azora-overhead-ms", f"{overhead * 1000:.3f}".encode()),
                    ],
                }
            )
            chunk = first
            # From here on the response is committed: a failure ends the stream with an
            # error event (clients see a clear error, not a hang), never a retry.
            while chunk:
                events += chunk.count(b"data:")
                if b'"usage"' in chunk:
                    usage = _stream_usage(chunk) or usage
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if watch.done():
                    outcome = "client_closed"
                    break
                chunk = await resp.content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome = "stream_error"
            if route.record_failure(backend, time.monotonic()):
                metrics.EJECTIONS.labels(route.key, backend.cfg.name).inc()
            reason = "stream idle timeout" if isinstance(exc, TimeoutError) else "stream broken"
            event = openai_error_body(
                f"the backend stream failed: {reason}", "api_error", "upstream_stream_error"
            )
            with contextlib.suppress(Exception):
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"data: " + event + b"\n\n",
                        "more_body": True,
                    }
                )
        finally:
            resp.close()
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        duration = time.perf_counter() - started
        out_tokens = 0
        if usage is not None:
            out_tokens = _int(usage.get("completion_tokens"))
            self._account_usage(route, backend, usage, charged, estimate)
        else:
            # Without reported usage, each content event is about one token.
            out_tokens = max(0, events - 1)
        if outcome != "stream_error":
            route.record_success(backend, ttft / max(1, out_tokens))
        children = _children(backend, route)
        children["ttft"].observe(ttft)
        if out_tokens > 1:
            children["tpot"].observe((duration - ttft) / (out_tokens - 1))
        self._observe(route, backend, outcome, duration, overhead)
        return None

    # -- accounting ----------------------------------------------------------------------------

    def _account_usage(
        self,
        route: Route,
        backend: Backend,
        usage: dict[str, Any],
        charged: list[Bucket],
        estimate: int,
    ) -> None:
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
        total = _int(usage.get("total_tokens")) or prompt + completion
        children = _children(backend, route)
        children["tok_in"].observe(prompt)
        if completion:
            children["tok_out"].observe(completion)
        # Reconcile: the buckets were charged the estimate; charge the difference now.
        for bucket in charged:
            bucket.adjust(total - estimate)

    def _observe(
        self, route: Route, backend: Backend, outcome: str, duration: float, overhead: float
    ) -> None:
        children = _children(backend, route)
        _count(backend, outcome)
        key = "dur:" + outcome
        hist = children.get(key)
        if hist is None:
            hist = children[key] = metrics.OPERATION_DURATION.labels(
                route.key, backend.cfg.name, route.model, outcome
            )
        hist.observe(duration)
        children["overhead"].observe(overhead)


def _children(backend: Backend, route: Route) -> dict[str, Any]:
    children = backend.metric_children
    if not children:
        labels = (route.key, backend.cfg.name, route.model)
        children["ttft"] = metrics.TIME_TO_FIRST_TOKEN.labels(*labels)
        children["tpot"] = metrics.TIME_PER_OUTPUT_TOKEN.labels(*labels)
        children["tok_in"] = metrics.TOKEN_USAGE.labels(*labels, "input")
        children["tok_out"] = metrics.TOKEN_USAGE.labels(*labels, "output")
        children["overhead"] = metrics.OVERHEAD.labels(route.key)
    return children


def _count(backend: Backend, outcome: str) -> None:
    key = "req:" + outcome
    counter = backend.metric_children.get(key)
    if counter is None:
        counter = backend.metric_children[key] = metrics.REQUESTS.labels(
            backend.route_label, backend.cfg.name, outcome
        )
    counter.inc()


class _Endpoint:
    """A raw ASGI app for one data-plane path."""

    def __init__(self, gateway: Gateway, op: str) -> None:
        self.gateway = gateway
        self.op = op
        self.route: StarletteRoute | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Reached through the router only if HotPath is not installed (or the method did not
        # match). Lets the shared HTTP metrics label the request without rescanning routes.
        scope["route"] = self.route
        await self.gateway.handle(self.op, scope, receive, send)

    async def direct(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Entry from :class:`HotPath`: does the shared middleware's duties that matter here
        (request id in and out, no 500 without a body) at a fraction of the cost."""
        rid: str | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if SANE_REQUEST_ID.match(candidate):
                    rid = candidate
                break
        if rid is None:
            rid = uuid.uuid4().hex
        token = request_id_var.set(rid)
        encoded = rid.encode()
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message["headers"], (b"x-request-id", encoded)]
            await send(message)

        try:
            await self.gateway.handle(self.op, scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error on %s", scope["path"])
            if not started:
                await _error(send_with_id, 500, "internal error in the gateway", "internal_error")
        finally:
            request_id_var.reset(token)


class HotPath:
    """The outermost ASGI layer: data-plane requests go straight to the gateway.

    The generic stack (request id, HTTP metrics, body limit, FastAPI's exception and exit-stack
    middleware, the router) costs more CPU than the proxying itself. The gateway has its own
    equivalents: request id (above), its own metrics (azora_orchestrator_*, azora_gen_ai_*),
    its own body limit and OpenAI-shaped errors. Everything else (admin, health, metrics,
    lifespan, wrong methods) goes through the normal stack.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], gateway: Gateway):
        self.app = app
        self.hot: dict[str, tuple[str, _Endpoint]] = {}
        for route in gateway.routes():
            endpoint = route.endpoint
            assert isinstance(endpoint, _Endpoint)
            method = "GET" if endpoint.op == "models" else "POST"
            self.hot[route.path] = (method, endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hit = self.hot.get(scope["path"])
            if hit is not None and scope["method"] == hit[0]:
                await hit[1].direct(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: tuple[tuple[bytes, bytes], ...] | list[tuple[bytes, bytes]],
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _error(
    send: Send,
    status: int,
    message: str,
    code: str,
    param: str | None = None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    body = openai_error_body(message, ERROR_TYPES.get(status, "api_error"), code, param)
    await _respond(send, status, body, _JSON, headers)


async def _too_large(send: Send, limit: int) -> None:
    await _error(send, 413, f"the request body exceeds {limit} bytes", "request_too_large", None)


Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
