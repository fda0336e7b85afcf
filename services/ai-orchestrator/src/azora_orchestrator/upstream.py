"""Upstream attempts: pick a backend, try it, retry or fall back, relay the answer, record it.

For one admitted request (:class:`~azora_orchestrator.admission.Ticket`) the loop walks the
route, then its fallback routes; inside a route its priority tiers in order; inside a tier up to
``attempts`` tries, each on the backend the route's strategy picks (one not tried yet first).
Retries are bounded by the route's retry budget; a short ``Retry-After`` from the only backend
left is waited out. A non-streaming answer is read whole and sent with one ``respond``; a stream
is relayed chunk by chunk once its first chunk has arrived (until then a failure may still go
to another backend). Every try feeds the backend's health and latency state (routing.py) and
the metrics (metrics.py); reported token usage goes back to the limits through
:meth:`Ticket.settle`.

Everything between two awaits runs on the event loop thread without yielding, so the picks and
the state updates are atomic with respect to other requests (see routing.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from azora_common.logs import current_request_id
from azora_orchestrator import asgi, metrics
from azora_orchestrator.admission import Ticket
from azora_orchestrator.errors import ERROR_TYPES, openai_error_body
from azora_orchestrator.limits import RetryBudget
from azora_orchestrator.routing import Backend, Route, Tier
from azora_orchestrator.settings import OrchestratorSettings

log = logging.getLogger("azora.orchestrator")


@dataclass(slots=True)
class Failure:
    """One failed try. ``final`` failures are answered as they are (a backend 4xx)."""

    reason: str
    backend: Backend
    status: int | None = None
    body: bytes = b""
    content_type: bytes = asgi.JSON
    retry_after: float | None = None
    final: bool = False


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


_USAGE_KEY = b'"usage"'


def _carries_usage(data: bytes) -> bool:
    """Whether ``data`` has a ``"usage"`` key whose value is an object. Once usage is asked for,
    OpenAI-style streams send ``"usage": null`` in every chunk and the object only in the last
    one: only that one is worth parsing (a null never yields usage)."""
    i = data.find(_USAGE_KEY)
    while i >= 0:
        i += len(_USAGE_KEY)
        rest = data[i : i + 16].lstrip()
        if rest[:1] == b":" and rest[1:].lstrip()[:1] == b"{":
            return True
        i = data.find(_USAGE_KEY, i)
    return False


def _usage_of(body: bytes) -> dict[str, Any] | None:
    if not _carries_usage(body):
        return None
    try:
        usage = orjson.loads(body).get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None


def _without_usage_event(chunk: bytes) -> bytes:
    """The chunk without its usage-only event (``"choices": []``, a usage object)."""
    kept: list[bytes] = []
    for event in chunk.split(b"\n\n"):
        if event.startswith(b"data: {") and _carries_usage(event):
            try:
                data = orjson.loads(event[6:])
            except orjson.JSONDecodeError:
                data = None
            if isinstance(data, dict) and isinstance(data.get("usage"), dict):
                if not data.get("choices"):
                    continue
                data["usage"] = None
                event = b"data: " + orjson.dumps(data)
        kept.append(event)
    return b"\n\n".join(kept)


def _stream_usage(chunk: bytes) -> dict[str, Any] | None:
    # Only the chunk that carries usage (stream_options.include_usage) is parsed.
    for line in chunk.split(b"\n"):
        if line.startswith(b"data: {") and _carries_usage(line):
            try:
                usage = orjson.loads(line[6:]).get("usage")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if isinstance(usage, dict):
                return usage
    return None


class Relay(Response):
    """What a data-plane handler returns for an admitted request: the upstream attempts, run
    when ServiceApp sends the response. An unexpected error is logged and, if nothing has been
    sent yet, answered with an OpenAI-shaped 500."""

    background = None

    def __init__(self, upstream: Upstream, ticket: Ticket) -> None:
        self.upstream = upstream
        self.ticket = ticket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.upstream.relay(self.ticket, receive, send)
        except Exception:
            log.exception("unhandled error on %s", scope["path"])
            if not self.ticket.status:
                self.ticket.status, self.ticket.outcome = 500, "internal_error"
            if not self.ticket.committed:
                await asgi.send_error(send, 500, "internal error in the gateway", "internal_error")
        finally:
            done = self.upstream.on_done
            if done is not None:
                if not self.ticket.status:  # cancelled: the client went away
                    self.ticket.status, self.ticket.outcome = 499, "client_closed"
                done(self.ticket)


class Upstream:
    """The shared upstream connection pool and the per-route retry budgets of one process."""

    def __init__(self, settings: OrchestratorSettings) -> None:
        self.settings = settings
        self.session: aiohttp.ClientSession | None = None
        self._budgets: dict[str, RetryBudget] = {}
        # Called once per admitted request when it is over (usage.py's Recorder.add).
        self.on_done: Callable[[Ticket], None] | None = None

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

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    # -- the routing loop ----------------------------------------------------------------------

    async def relay(self, ticket: Ticket, receive: Receive, send: Send) -> None:
        route = ticket.route
        now = time.monotonic()
        budget = self._budgets.get(route.key)
        if budget is None:
            budget = self._budgets[route.key] = RetryBudget(self.settings.retry_budget_window_s)
        budget.record_request(now)
        # The overall deadline only bounds waiting for Retry-After and starting new tries.
        deadline = now + route.per_try_s * route.attempts
        chain = [route]
        for name in route.fallbacks:
            fallback = ticket.table.by_model.get(name)
            if fallback is not None and fallback not in chain:
                chain.append(fallback)
        watch: asyncio.Future[Message] | None = None
        if ticket.stream:
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
                            ticket.upstream_s += wait
                            continue
                        if tried_any:
                            assert last is not None
                            if not budget.try_retry(
                                now, route.budget_percent, self.settings.retry_budget_min
                            ):
                                await self._finish_failure(route, last, ticket, send, budget=True)
                                return
                            metrics.RETRIES.labels(route.key, last.reason).inc()
                        tried_any = True
                        attempts -= 1
                        upstream = backend.cfg.upstream_model
                        if upstream == route.model:
                            data = ticket.body
                        else:
                            # The only change to the body: the backend's own model name.
                            # Re-serialising keeps every other field, known or not.
                            data = rewritten.get(upstream) or b""
                            if not data:
                                ticket.payload["model"] = upstream
                                data = rewritten[upstream] = orjson.dumps(ticket.payload)
                        backend.state.in_flight += 1
                        try:
                            if watch is not None:
                                result = await self._try_stream(
                                    current, backend, data, ticket, send, watch
                                )
                            else:
                                result = await self._try_plain(current, backend, data, ticket, send)
                        except Exception:
                            # Answered 500 by Relay: still a failed try of this backend, so a
                            # backend that breaks every request is ejected like any other.
                            if current.record_failure(backend, time.monotonic()):
                                metrics.EJECTIONS.labels(current.key, backend.cfg.name).inc()
                            raise
                        finally:
                            backend.state.in_flight -= 1
                        if result is None:
                            return
                        last = result
                        tried.add(backend)
                        if result.final:
                            await self._finish_failure(current, result, ticket, send)
                            return
            if last is None:
                metrics.REQUESTS.labels(route.key, "none", "no_backend").inc()
                ticket.status, ticket.outcome = 503, "no_backend"
                ticket.committed = True
                await asgi.send_error(
                    send,
                    503,
                    f"no healthy backend is available for model '{route.model}'",
                    "no_backend_available",
                )
                return
            await self._finish_failure(route, last, ticket, send)
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
        if not last.backend.state.active_ok or last.backend.state.ejected_until > now:
            return None
        return wait + 0.001

    async def _finish_failure(
        self, route: Route, failure: Failure, ticket: Ticket, send: Send, budget: bool = False
    ) -> None:
        backend = failure.backend
        outcome = failure.reason if not failure.final else "client_error"
        _count(backend, outcome)
        ticket.backend, ticket.outcome = backend, outcome
        ticket.status = failure.status or (504 if failure.reason == "timeout" else 502)
        overhead = ticket.overhead(time.perf_counter())
        metrics.OVERHEAD.labels(route.key).observe(overhead)
        extra: list[tuple[bytes, bytes]] = [
            (b"x-azora-backend", backend.cfg.name.encode()),
            (b"x-azora-overhead-ms", f"{overhead * 1000:.3f}".encode()),
        ]
        ticket.committed = True
        if failure.status is not None:
            if failure.retry_after is not None:
                seconds = max(1, int(failure.retry_after + 0.999))
                extra.append((b"retry-after", str(seconds).encode()))
            body = failure.body or openai_error_body(
                f"backend answered {failure.status}", ERROR_TYPES.get(failure.status, "api_error")
            )
            await asgi.respond(send, failure.status, body, failure.content_type, extra)
            return
        if failure.reason == "timeout":
            status, message = 504, "the backend did not answer in time"
        else:
            status, message = 502, "the backend could not be reached"
        if budget:
            message += " and the retry budget is exhausted"
        await asgi.send_error(send, status, message, failure.reason, headers=extra)

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
        self, route: Route, backend: Backend, data: bytes, ticket: Ticket, send: Send
    ) -> Failure | None:
        session = self.session
        assert session is not None
        cfg = backend.cfg
        started = time.perf_counter()
        try:
            async with session.post(
                cfg.endpoints[ticket.op],
                data=data,
                headers=self._headers(backend),
                timeout=cfg.plain_timeout,
            ) as resp:
                content = await resp.read()
                status = resp.status
                headers = resp.headers
        except Exception as exc:  # connect, invalid URL, TLS, protocol, timeout: all failures
            ticket.upstream_s += time.perf_counter() - started
            return self._transport_failure(route, backend, exc, time.monotonic())
        finished = time.perf_counter()
        elapsed = finished - started
        ticket.upstream_s += elapsed
        if status >= 300:
            return self._classify(route, backend, status, content, headers, time.monotonic())
        usage = _usage_of(content)
        out_tokens = 0
        if usage is not None:
            out_tokens = self._account_usage(route, backend, usage, ticket)
        route.record_success(backend, elapsed / max(1, out_tokens))
        overhead = ticket.overhead(time.perf_counter())
        ticket.committed = True
        ticket.backend, ticket.status, ticket.outcome = backend, status, "success"
        await asgi.respond(
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
        route: Route,
        backend: Backend,
        data: bytes,
        ticket: Ticket,
        send: Send,
        watch: asyncio.Future[Message],
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
                    cfg.endpoints[ticket.op],
                    data=data,
                    headers=self._headers(backend),
                    timeout=cfg.stream_timeout,
                )
                if resp.status >= 300:
                    content = await resp.read()
                    resp.release()
                    ticket.upstream_s += time.perf_counter() - started
                    return self._classify(
                        route, backend, resp.status, content, resp.headers, time.monotonic()
                    )
                first = await resp.content.readany()
        except Exception as exc:  # connect, invalid URL, TLS, protocol, timeout: all failures
            if resp is not None:
                resp.close()
            ticket.upstream_s += time.perf_counter() - started
            return self._transport_failure(route, backend, exc, time.monotonic())
        if not first:
            # The backend closed before sending anything: still safe to try another.
            resp.close()
            ticket.upstream_s += time.perf_counter() - started
            if route.record_failure(backend, time.monotonic()):
                metrics.EJECTIONS.labels(route.key, backend.cfg.name).inc()
            return Failure("empty_stream", backend)
        ttft = time.perf_counter() - started
        ticket.upstream_s += ttft
        overhead = ticket.overhead(time.perf_counter())
        outcome = "success"
        usage: dict[str, Any] | None = None
        events = 0
        ticket.committed = True
        try:
            await send(
                asgi.stream_start(
                    resp.status,
                    resp.headers.get("Content-Type", "").encode(),
                    (
                        (b"x-azora-backend", cfg.name.encode()),
                        (b"x-azora-overhead-ms", f"{overhead * 1000:.3f}".encode()),
                    ),
                )
            )
            chunk = first
            # From here on the response is committed: a failure ends the stream with an
            # error event (clients see a clear error, not a hang), never a retry.
            while chunk:
                events += chunk.count(b"data:")
                if _carries_usage(chunk):
                    usage = _stream_usage(chunk) or usage
                    if ticket.strip_usage:
                        chunk = _without_usage_event(chunk)
                if chunk:
                    await send(asgi.stream_chunk(chunk))
                if watch.done():
                    outcome = "client_closed"
                    break
                chunk = await resp.content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome = "stream_error"
            if route.record_failure(backend, time.monotonic()):
                metrics.EJECTIONS.labels(route.key, backend.cfg.name).inc()
            reason = "stream idle timeout" if isinstance(exc, TimeoutError) else "stream broken"
            with contextlib.suppress(Exception):
                await send(asgi.stream_error(f"the backend stream failed: {reason}"))
        finally:
            resp.close()
        with contextlib.suppress(Exception):
            await send(asgi.stream_end())
        duration = time.perf_counter() - started
        ticket.backend, ticket.status, ticket.outcome = backend, resp.status, outcome
        ticket.ttft_s = ttft
        out_tokens = 0
        if usage is not None:
            out_tokens = self._account_usage(route, backend, usage, ticket)
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

    # -- recording -----------------------------------------------------------------------------

    def _account_usage(
        self, route: Route, backend: Backend, usage: dict[str, Any], ticket: Ticket
    ) -> int:
        """Token metrics and the limits' reconciliation; returns the completion tokens."""
        prompt, completion = ticket.settle(usage)
        children = _children(backend, route)
        children["tok_in"].observe(prompt)
        if completion:
            children["tok_out"].observe(completion)
        return completion

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
